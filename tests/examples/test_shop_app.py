"""The migrated example shop against a real API, Redis and workers, in both modes of `USE_RQ_QUEUE`."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from core.models import DispatchMode
from tests.conftest import ADMIN_KEY, ProcessFactory, SettingsFactory
from tests.examples.shop import (
    JOURNAL_OF,
    QUEUE,
    TASK_MODULES,
    ShopApi,
    all_ended,
    effects,
    jobs_by_order,
    place_orders,
    shop_env,
)
from tests.support.processes import wait_for

pytestmark = pytest.mark.slow

ShopApiFactory = Callable[..., ShopApi]
COURIER = "examples.shop.after.tasks.book_courier"
RECEIPT = "examples.shop.after.tasks.write_receipt"


@pytest.mark.parametrize("use_rq", [True, False], ids=["rq", "in-process"])
@pytest.mark.pairwise("use_rq", offset=1)
def test_every_task_of_the_migrated_shop_finishes_once_and_the_busy_courier_is_retried(
    use_rq: bool, make_settings: SettingsFactory, workers: ProcessFactory, shop_api: ShopApiFactory, tmp_path: Path
) -> None:
    shop_dir = tmp_path / "shop"
    shop_dir.mkdir()
    (shop_dir / "courier-busy").write_text("1")  # the first booking fails, its retry succeeds
    env = shop_env(shop_dir, work_s=0.05)
    settings = make_settings(use_rq_queue=use_rq, task_modules=TASK_MODULES)
    if use_rq:
        workers(settings, "-q", QUEUE, **env)
    api = shop_api(settings, env)

    with api.client() as client:
        acknowledged = place_orders(client, [1, 2])
        assert len(acknowledged) == 2 * len(JOURNAL_OF)
        wait_for(lambda: all_ended(settings.database_url, acknowledged), 90, "the shop's jobs to end")

        jobs = jobs_by_order(settings.database_url)
        assert set(jobs) == acknowledged
        mode = DispatchMode.RQ if use_rq else DispatchMode.BACKGROUND
        for (task, _), [row] in jobs.items():
            body = client.get(f"/jobs/{row.id}").json()
            assert (body["task"], body["status"], body["mode"], body["queue"]) == (task, "finished", mode, QUEUE)

        courier = sorted((rows[0] for (task, _), rows in jobs.items() if task == COURIER), key=lambda r: r.attempts)
        assert [row.attempts for row in courier] == [1, 2]
        assert any("busy" in line["message"] for line in courier[1].logs), courier[1].logs
        assert client.get(f"/jobs/{courier[1].id}/result").json()["result"] == f"pickup-{courier[1].args[0]}"
        receipt = jobs[RECEIPT, 2][0]
        assert client.get(f"/jobs/{receipt.id}/result").json()["result"] == "receipt of order 2"

        listed = client.get("/jobs", params={"task": COURIER}, headers={"X-API-Key": ADMIN_KEY}).json()
        assert sorted(item["id"] for item in listed["items"]) == sorted(row.id for row in courier)

    assert effects(shop_dir) == dict.fromkeys(acknowledged, 1)
    assert (shop_dir / "parcels.txt").read_text().splitlines() == [
        "order=1 items=mug,sku-1 gift_wrap=no",
        "order=2 items=mug,sku-2 gift_wrap=yes",
    ]
