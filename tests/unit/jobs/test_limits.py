"""The pieces of the limits: the declaration, the ordering key's check, the in-process gate, the key's
chain in Redis (fakeredis)."""

from __future__ import annotations

from typing import Any

import fakeredis
import pytest

from core.errors import MalformedUpload
from core.models import Job, utcnow
from jobs.limits import LocalGate, check_ordering_key, previous_of_key, rate_limit_for
from jobs.registry import task
from redis_client import KitJob


@task(name="tests.unit.limits.single", concurrency=1)
def single() -> None: ...


@task(name="tests.unit.limits.free")
def free() -> None: ...


def _plain() -> None: ...


def _clash(ordering_key: str) -> None: ...


@pytest.mark.parametrize("bad", [0, -1, 1001, True, 1.5, "2"])
def test_a_concurrency_that_is_not_a_whole_number_from_1_to_1000_is_refused(bad: Any) -> None:
    with pytest.raises(ValueError, match="concurrency must be a whole number from 1 to 1000"):
        task(name="tests.unit.limits.bad", concurrency=bad)(_plain)


def test_a_task_parameter_named_ordering_key_is_refused() -> None:
    with pytest.raises(TypeError, match="ordering_key has the name of an add_task option"):
        task(name="tests.unit.limits.clash")(_clash)


def test_only_a_task_with_a_concurrency_gets_an_rq_rate_limit() -> None:
    limit = rate_limit_for("tests.unit.limits.single")
    assert limit is not None
    assert (limit.key, limit.concurrency) == ("task:tests.unit.limits.single", 1)
    assert rate_limit_for("tests.unit.limits.free") is None
    assert rate_limit_for("not.registered") is None


def test_an_ordering_key_is_checked() -> None:
    assert check_ordering_key(None) is None
    assert check_ordering_key("customer-42") == "customer-42"
    for bad in ("", "x" * 201, "tab\there"):
        with pytest.raises(MalformedUpload, match="ordering_key must be 1-200 printable characters"):
            check_ordering_key(bad)
    with pytest.raises(ValueError, match="cannot be combined with at"):
        check_ordering_key("customer-42", utcnow())


def test_the_gate_lets_one_job_of_a_key_start_at_a_time_in_submission_order() -> None:
    gate = LocalGate.empty()
    for job_id in ("a1", "a2"):
        gate.join(job_id, "a")
    gate.join("b1", "b")
    assert [gate.may_start(j, "tests.unit.limits.free", k) for j, k in [("a2", "a"), ("a1", "a"), ("b1", "b")]] == [
        False,
        True,
        True,
    ]
    assert gate.why_waiting("a2", "tests.unit.limits.free", "a") == "waiting for job a1 (same ordering key)"
    gate.leave("a1", "a")
    assert gate.may_start("a2", "tests.unit.limits.free", "a")
    gate.leave("a2", "a")
    assert gate.lines == {"b": gate.lines["b"]}


def test_the_gate_counts_running_jobs_of_a_limited_task() -> None:
    gate = LocalGate.empty()
    assert gate.may_start("j1", "tests.unit.limits.single", None)
    gate.started("tests.unit.limits.single")
    assert gate.why_waiting("j2", "tests.unit.limits.single", None) == (
        "waiting for a slot: at most 1 job(s) of this task run at once"
    )
    gate.started("tests.unit.limits.free")
    gate.started("tests.unit.limits.free")
    assert gate.may_start("j3", "tests.unit.limits.free", None)
    gate.ended("tests.unit.limits.single")
    assert gate.may_start("j2", "tests.unit.limits.single", None)
    assert dict(gate.running) == {"tests.unit.limits.free": 2}


def _row(job_id: str, key: str | None) -> Job:
    return Job(id=job_id, ordering_key=key)


def test_each_keyed_job_depends_on_the_previous_one_of_its_key_while_that_one_has_not_ended() -> None:
    connection = fakeredis.FakeRedis()
    assert previous_of_key(connection, _row("j0", None)) is None
    assert previous_of_key(connection, _row("j1", "a")) is None  # first of its key
    connection.hset(KitJob.key_for("j1"), "status", "queued")
    dependency = previous_of_key(connection, _row("j2", "a"))
    assert dependency is not None
    assert (list(dependency.dependencies), dependency.allow_failure) == (["j1"], True)
    assert previous_of_key(connection, _row("j9", "b")) is None  # another key: another line
    connection.hset(KitJob.key_for("j2"), "status", "canceled")
    assert previous_of_key(connection, _row("j3", "a")) is None  # the previous one ended: nothing to wait for
    assert previous_of_key(connection, _row("j4", "a")) is None  # j3 has no RQ job (yet): not waited for
