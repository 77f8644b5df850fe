"""The migrated example shop under test: its API under uvicorn, its workers, its orders, and a tally.

Each order is two requests (`POST /orders`, then `POST /orders/{id}/shipment`), each acknowledging two
jobs; each job's effect is one line naming the order in one journal (`examples/shop/outside.py`). A
job is lost when it has no row, never ended, or finished without its effect; an effect is duplicated
when its line appears twice (or a job's final write was made twice), as `tests/faults/cluster.py` counts.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from core.db import get_database, migrate
from core.models import Job
from core.settings import PROJECT_ROOT, Settings, load_settings
from devserver.ports import free_port
from examples.shop import outside
from tests.faults.cluster import TERMINAL, Tally
from tests.support.processes import ManagedProcess, settings_env, start_workers, stop_together, wait_for

APP = "examples.shop.after.app:app"
TASK_MODULES = "examples.shop.after.tasks"
QUEUE = "shop"
_PREFIX = "examples.shop.after.tasks."
JOURNAL_OF = {
    f"{_PREFIX}write_receipt": outside.RECEIPTS,
    f"{_PREFIX}send_confirmation": outside.OUTBOX,
    f"{_PREFIX}pack_parcel": outside.PARCELS,
    f"{_PREFIX}book_courier": outside.PICKUPS,
}
PLACE_TASKS = (f"{_PREFIX}write_receipt", f"{_PREFIX}send_confirmation")
SHIP_TASKS = (f"{_PREFIX}pack_parcel", f"{_PREFIX}book_courier")
GRACEFUL_SHUTDOWN_S = 3
_ORDER = re.compile(r"^order=(\d+)\b")


def shop_env(shop_dir: Path, work_s: float) -> dict[str, str]:
    """The example's own variables: where its effects go, how long each task's work takes."""
    return {"SHOP_DIR": str(shop_dir), "SHOP_WORK_S": str(work_s)}


class ShopApi(ManagedProcess):
    """`uvicorn examples.shop.after.app:app` on a free loopback port, reading `settings` and `env`."""

    def __init__(self, settings: Settings, log_path: Path, env: dict[str, str]) -> None:
        self.port = free_port()
        argv = [sys.executable, "-m", "uvicorn", APP, "--host", "127.0.0.1", "--port", str(self.port)]
        # As `python -m app` does: in-process jobs still running on SIGTERM get this long, the rest are
        # left to the reconciler (uvicorn's default waits for every one of them).
        argv += ["--timeout-graceful-shutdown", str(GRACEFUL_SHUTDOWN_S)]
        super().__init__(argv, settings_env(settings) | env, log_path)
        self.url = f"http://127.0.0.1:{self.port}"
        try:
            wait_for(self._ready, 60, f"the shop on port {self.port}")
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if not self.alive:
            raise AssertionError(f"the shop exited:\n{self.output()[-3000:]}")
        try:
            answered = httpx.get(f"{self.url}/openapi.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False
        return answered and self.listens_on(self.port)

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


def place_orders(client: httpx.Client, order_ids: Iterable[int]) -> set[tuple[str, int]]:
    """Places and ships each order; returns the (task, order) of every job a 202 acknowledged."""
    acknowledged: set[tuple[str, int]] = set()
    for order_id in order_ids:
        order = {"id": order_id, "email": f"customer{order_id}@example.com", "total_cents": 100 * order_id}
        if client.post("/orders", json=order).status_code == 202:
            acknowledged.update((task, order_id) for task in PLACE_TASKS)
        shipment = {"items": ["mug", f"sku-{order_id}"], "gift_wrap": order_id % 2 == 0}
        if client.post(f"/orders/{order_id}/shipment", json=shipment).status_code == 202:
            acknowledged.update((task, order_id) for task in SHIP_TASKS)
    return acknowledged


def jobs_by_order(database_url: str) -> dict[tuple[str, int], list[Job]]:
    """Every job row of the shop, by (task, order id: its first argument)."""
    found: dict[tuple[str, int], list[Job]] = {}
    with get_database(database_url).session() as session:
        for job in session.scalars(select(Job).where(Job.task.in_(JOURNAL_OF))):
            found.setdefault((job.task, int(job.args[0])), []).append(job)
    return found


def effects(shop_dir: Path) -> Counter[tuple[str, int]]:
    """How many times each (task, order) left its effect."""
    counts: Counter[tuple[str, int]] = Counter()
    for task, journal in JOURNAL_OF.items():
        path = shop_dir / journal
        for line in path.read_text().splitlines() if path.exists() else []:
            match = _ORDER.match(line)
            assert match, f"unexpected line in {journal}: {line!r}"
            counts[task, int(match.group(1))] += 1
    return counts


def all_ended(database_url: str, expected: Iterable[tuple[str, int]]) -> bool:
    jobs = jobs_by_order(database_url)
    return all(key in jobs and all(job.status.value in TERMINAL for job in jobs[key]) for key in expected)


def tally(
    scenario: str, attempted: int, acknowledged: set[tuple[str, int]], database_url: str, shop_dir: Path
) -> Tally:
    """Counts the acknowledged jobs' outcomes in the fault suite's terms (there are no callbacks here)."""
    jobs = jobs_by_order(database_url)
    done = effects(shop_dir)
    lost = finished = failed = duplicates = 0
    for key in acknowledged:
        rows = jobs.get(key, [])
        duplicates += max(0, len(rows) - 1)  # one request accepted as two jobs
        duplicates += sum(
            max(0, sum(1 for line in row.logs if line["message"].startswith("finished")) - 1) for row in rows
        )
        statuses = {row.status.value for row in rows}
        if not rows or not statuses <= set(TERMINAL):
            lost += 1
        elif "finished" in statuses:
            finished += 1
            lost += done[key] == 0  # finished without doing its work
        elif "failed" in statuses:
            failed += 1
    duplicates += sum(max(0, count - 1) for count in done.values())
    return Tally(
        scenario=scenario,
        attempted=attempted,
        acknowledged=len(acknowledged),
        finished=finished,
        failed=failed,
        lost=lost,
        duplicate_effects=duplicates,
        undelivered_callbacks=0,
    )


class ShopDeployment:
    """The shop's processes sharing one database, Redis and `SHOP_DIR`, for fault scenarios."""

    def __init__(self, tmp_path: Path, base: dict[str, Any], work_s: float) -> None:
        self.tmp_path = tmp_path
        self.shop_dir = tmp_path / "shop"
        self.base = base | {"task_modules": TASK_MODULES}
        self.env = shop_env(self.shop_dir, work_s)
        self.settings = self.settings_for()
        migrate(self.settings.database_url)
        self.processes: list[ManagedProcess] = []
        self.api: ShopApi | None = None

    def settings_for(self, **overrides: Any) -> Settings:
        return load_settings(env_file="", **(self.base | overrides))

    def _log(self, name: str) -> Path:
        return self.tmp_path / f"{name}-{len(self.processes)}.log"

    def start_api(self, **overrides: Any) -> ShopApi:
        self.api = ShopApi(self.settings_for(**overrides), self._log("shop-api"), self.env)
        self.processes.append(self.api)
        return self.api

    def start_workers(self, **overrides: Any) -> ManagedProcess:
        # The scheduler enqueues the reconciler on high_priority: some worker must serve it.
        queues = f"{QUEUE},high_priority"
        process = start_workers(self.settings_for(**overrides), self._log("shop-worker"), "-q", queues, **self.env)
        self.processes.append(process)
        return process

    def start_scheduler(self) -> ManagedProcess:
        python = str(PROJECT_ROOT / ".venv" / "bin" / "python")
        env = settings_env(self.settings_for()) | self.env
        process = ManagedProcess([python, "-m", "workers.scheduler"], env, self._log("scheduler"))
        self.processes.append(process)
        return process

    def place(self, order_ids: Iterable[int]) -> tuple[int, set[tuple[str, int]]]:
        """Places and ships the orders; returns (jobs attempted, jobs acknowledged)."""
        assert self.api is not None
        ids = list(order_ids)
        with self.api.client() as client:
            acknowledged = place_orders(client, ids)
        return len(ids) * len(JOURNAL_OF), acknowledged

    def jobs(self) -> list[Job]:
        return [row for rows in jobs_by_order(self.settings.database_url).values() for row in rows]

    def job(self, job_id: str) -> Job | None:
        with get_database(self.settings.database_url).session() as session:
            return session.get(Job, job_id)

    def started(self) -> list[Job]:
        """Jobs running now whose effect is not written yet (a fault now catches them mid-work)."""
        done = effects(self.shop_dir)
        return [
            row
            for key, rows in jobs_by_order(self.settings.database_url).items()
            for row in rows
            if row.status.value == "started" and done[key] == 0
        ]

    def drain(self, acknowledged: set[tuple[str, int]], timeout_s: float = 120) -> None:
        """Waits until every acknowledged job ended, or the deadline (the tally then counts the rest lost)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and not all_ended(self.settings.database_url, acknowledged):
            time.sleep(0.2)

    def tally(self, scenario: str, attempted: int, acknowledged: set[tuple[str, int]]) -> Tally:
        return tally(scenario, attempted, acknowledged, self.settings.database_url, self.shop_dir)

    def stop_all(self) -> None:
        stop_together(self.processes, timeout_s=10)
