"""The OpenAPI document against the running server: generated requests, every answer checked against it.

Bounded and seeded (the same cases on every run), against a real API with real ids (finished analyses and
their jobs, a drawn waveform), once with the admin key and once without. Checks: no unexpected 5xx, every
status code, content type and body as the document says.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from core.db import migrate
from core.settings import load_settings
from tests.conftest import ADMIN_KEY, LOOPBACK_ALLOWED, SIGNING_SECRET
from tests.support.audio import wav_bytes
from tests.support.processes import ApiServer, wait_for, wait_until_ended

# One test process runs the module: its deployment (module-scoped) is then built once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("openapi")]
EXAMPLES_PER_OPERATION = 12
SEED = 20261128
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
PATH_IDS = ("job_id", "analysis_id")


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, redis_server: Any) -> Iterator[tuple[ApiServer, list[str]]]:
    """An API (jobs in-process) with two finished analyses and a drawn waveform; their ids."""
    root = tmp_path_factory.mktemp("openapi")
    config = load_settings(
        env_file="",
        redis_url=redis_server.url,
        database_url=f"sqlite:///{root / 'audiokit.db'}",
        storage_dir=root / "uploads",
        admin_api_key=ADMIN_KEY,
        callback_signing_secret=SIGNING_SECRET,
        callback_allowed_networks=LOOPBACK_ALLOWED,
        use_rq_queue=False,
    )
    migrate(config.database_url)
    api = ApiServer(config, root / "api.log")
    try:
        ids = []
        with api.client() as client:
            for seconds in (0.5, 1.0):
                analysis_id = client.post("/audio", files={"file": ("a.wav", wav_bytes(seconds))}).json()["id"]
                assert wait_until_ended(client, analysis_id)["status"] == "finished"
                ids.append(analysis_id)
            drawn = wait_for(
                lambda: (answer := client.get(f"/audio/{ids[0]}/waveform.png")).status_code == 200 and answer,
                60,
                "the waveform",
            )
            assert drawn
            jobs = client.get("/jobs", headers={"X-API-Key": ADMIN_KEY}).json()["items"]
            ids += [job["id"] for job in jobs if job["id"] not in ids]
        yield api, ids
    finally:
        api.stop()


def _run_schema(api: ApiServer, ids: list[str], headers: dict[str, str]) -> dict[str, set[int]]:
    """Runs every operation's generated cases; the statuses each one answered."""
    document = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    schema = schemathesis.openapi.from_dict(document)
    operations = [result.ok() for result in schema.get_all_operations()]  # type: ignore[union-attr]
    assert len(operations) >= 10, [operation.label for operation in operations]
    seen: dict[str, set[int]] = {operation.label: set() for operation in operations}
    for operation in operations:

        @settings(
            max_examples=EXAMPLES_PER_OPERATION,
            derandomize=True,
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy(), real=st.sampled_from([None, *ids]))
        def check(case: Any, real: str | None) -> None:
            for name in PATH_IDS:
                if real is not None and case.path_parameters and name in case.path_parameters:
                    case.path_parameters[name] = real
            response = case.call(base_url=api.url, headers=headers, timeout=30)
            seen[case.operation.label].add(response.status_code)
            case.validate_response(response, checks=CHECKS)

        check()
    return seen


def test_every_answer_matches_the_document_with_the_admin_key(served: tuple[ApiServer, list[str]]) -> None:
    api, ids = served
    seen = _run_schema(api, ids, {"X-API-Key": ADMIN_KEY})
    assert all(seen.values()), seen  # every operation was called
    # Real ids reached the routes behind them: found, and refused where the job's state says so.
    assert 200 in seen["GET /jobs/{job_id}"], seen
    assert 409 in seen["DELETE /jobs/{job_id}/cancel"], seen
    assert 200 in seen["GET /jobs"], seen


def test_every_answer_matches_the_document_without_a_key(served: tuple[ApiServer, list[str]]) -> None:
    api, ids = served
    seen = _run_schema(api, ids, {})
    assert seen["GET /jobs"] <= {401, 422}, seen
    assert 401 in seen["DELETE /jobs/{job_id}/cancel"], seen


def test_the_document_declares_the_admin_schemes_and_the_upload_limits(served: tuple[ApiServer, list[str]]) -> None:
    api, _ = served
    document = httpx.get(f"{api.url}/openapi.json", timeout=10).json()
    schemes = document["components"]["securitySchemes"]
    assert {scheme["type"] for scheme in schemes.values()} == {"http", "apiKey"}
    assert {scheme.get("scheme") for scheme in schemes.values()} >= {"bearer", "basic"}
    for path, method in [
        ("/jobs/{job_id}/cancel", "delete"),
        ("/jobs/{job_id}/retry", "post"),
        ("/jobs", "get"),
        ("/queue/status", "get"),
        ("/metrics", "get"),
    ]:
        operation = document["paths"][path][method]
        assert {next(iter(item)) for item in operation["security"]} == set(schemes), path
        assert {"401", "503"} <= set(operation["responses"]), path
    upload = document["paths"]["/audio"]["post"]
    key = next(parameter for parameter in upload["parameters"] if parameter["name"] == "idempotency-key")
    text = next(option for option in key["schema"]["anyOf"] if option.get("type") == "string")
    assert (text["minLength"], text["maxLength"]) == (1, 255)
    body = upload["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["file"]["x-max-bytes"] == 50 * 1024 * 1024
    assert body["maxProperties"] == 8
    assert body["properties"]["callback_url"]["maxLength"] == 2048


def test_the_schema_run_does_find_an_undocumented_status(tmp_path: Path) -> None:
    """The checks are live: a server answering a status its document does not list fails them."""
    document = {
        "openapi": "3.1.0",
        "info": {"title": "t", "version": "1"},
        "paths": {"/x": {"get": {"responses": {"200": {"description": "ok"}}}}},
    }
    schema = schemathesis.openapi.from_dict(document)
    operation = next(iter(schema.get_all_operations())).ok()  # type: ignore[union-attr]
    case = operation.Case()
    response = httpx.Response(418, request=httpx.Request("GET", "http://t/x"), json={"detail": "teapot"})
    response.elapsed = timedelta(0)  # what a transport sets once the answer has been read
    with pytest.raises(FailureGroup, match="Undocumented status code"):
        case.validate_response(response, checks=CHECKS)
