"""The in-process waiting line on its own: which job a free thread takes, what it notes, where a moved job goes."""

from __future__ import annotations

from dataclasses import dataclass

from core.models import Priority
from jobs.limits import LocalGate
from jobs.registry import task
from jobs.waiting_line import WaitingLine

SINGLE = "tests.unit.waiting_line.single"
FREE = "tests.unit.waiting_line.free"  # not registered: no limit of its own


@task(name=SINGLE, concurrency=1)
def single() -> None: ...


@dataclass
class _Held:
    task: str
    key: str | None = None
    noted: str | None = None


def test_a_free_thread_takes_the_first_job_its_limits_let_start_and_each_new_reason_is_noted_once() -> None:
    gate = LocalGate.empty()
    gate.started(SINGLE)  # the task's one slot is taken
    gate.join("k1", "k")  # k1 (not in line: running or backing off) comes before k2
    gate.join("k2", "k")
    jobs = {"s": _Held(SINGLE), "k2": _Held(FREE, "k"), "f": _Held(FREE)}
    line = WaitingLine()
    for job_id, level in [("f", Priority.LOW), ("k2", Priority.NORMAL), ("s", Priority.HIGH)]:
        line.join(job_id, level.rank)

    slot = "waiting for a slot: at most 1 job(s) of this task run at once"
    turn = "waiting for job k1 (same ordering key)"
    assert line.take_first(jobs, gate) == ("f", [("s", slot), ("k2", turn)])
    assert line.take_first(jobs, gate) == (None, [])  # held back for the same reasons: nothing new to note
    assert (len(line), line.place("s"), line.place("k2")) == (2, 0, 1)

    gate.leave("k1", "k")
    assert line.take_first(jobs, gate) == ("k2", [])
    gate.ended(SINGLE)
    assert line.take_first(jobs, gate) == ("s", [])
    assert len(line) == 0


def test_a_moved_job_goes_behind_those_waiting_at_its_level_and_one_not_in_line_stays_out() -> None:
    line = WaitingLine()
    for job_id, level in [("a", Priority.NORMAL), ("b", Priority.NORMAL), ("c", Priority.LOW)]:
        line.join(job_id, level.rank)

    line.move("a", Priority.NORMAL.rank)  # the same level: to its tail, as on RQ
    line.move("x", Priority.CRITICAL.rank)  # scheduled or backing off: it joins at its level when due
    assert [line.place(job_id) for job_id in ("b", "a", "c", "x")] == [0, 1, 2, None]
    assert not line.leave("x")
