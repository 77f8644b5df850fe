"""The supervisor behind `make run`, with tiny shell commands as its processes."""

from __future__ import annotations

import io
import signal
from pathlib import Path

from devserver.supervisor import EXIT_GAVE_UP, RestartPolicy, Supervisor

FAST = RestartPolicy(first_delay_s=0.01, max_delay_s=0.05, max_restarts=2, window_s=600)


def _supervise(tmp_path: Path, commands: dict[str, str]) -> tuple[int, list[str]]:
    """Runs the supervisor to its end; returns its status and its lines as `name | message`."""
    out = io.StringIO()
    status = Supervisor(commands, cwd=tmp_path, policy=FAST, stop_timeout_s=60, out=out).run()
    return status, [" ".join(line.split()[1:]) for line in out.getvalue().splitlines()]  # no time, no padding


def test_restart_delay_doubles_with_each_recent_crash_up_to_its_cap() -> None:
    policy = RestartPolicy(first_delay_s=1, max_delay_s=30)
    assert [policy.delay_s(crashes) for crashes in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]


def test_a_crashing_process_is_restarted_until_the_cap_then_everything_stops(tmp_path: Path) -> None:
    status, output = _supervise(tmp_path, {"flaky": "echo up; exit 3", "steady": "exec sleep 60"})

    assert status == EXIT_GAVE_UP
    assert output.count("flaky | up") == 3  # the first start and two restarts
    assert "flaky | exited (exit status 3); restarting in 0.01s (restart 1 of at most 2 within 600s)" in output
    assert "flaky | exited (exit status 3); restarting in 0.02s (restart 2 of at most 2 within 600s)" in output
    assert "flaky | exited (exit status 3), 3 times within 600s: giving up, stopping everything" in output
    assert "steady | stopped (killed by SIGTERM)" in output
    assert len([line for line in output if line.startswith("steady | started")]) == 1


def test_sigint_stops_every_process_and_returns_zero(tmp_path: Path) -> None:
    # The process plays the terminal: it sends Ctrl-C's SIGINT to the supervisor (its parent).
    status, output = _supervise(tmp_path, {"api": "kill -INT $PPID; exec sleep 60", "worker": "exec sleep 60"})

    assert status == 0
    assert "make run | SIGINT received: stopping everything (a second Ctrl-C kills at once)" in output
    assert "api | stopped (killed by SIGTERM)" in output
    assert "worker | stopped (killed by SIGTERM)" in output
    assert not [line for line in output if "restarting" in line]


def test_a_second_signal_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    # Ignores SIGTERM but answers it with a second SIGINT to the supervisor, like an impatient user.
    stubborn = "trap 'kill -INT $PPID' TERM; kill -INT $PPID; while :; do sleep 1; done"
    status, output = _supervise(tmp_path, {"stubborn": stubborn})

    assert status == 0
    assert "make run | signal received again: sending SIGKILL" in output
    assert "stubborn | stopped (killed by SIGKILL)" in output


def test_a_second_signal_that_comes_while_the_sigterms_go_out_counts_as_the_second(tmp_path: Path) -> None:
    # The second SIGINT arrives while SIGTERM is being sent: as when a process answers its SIGTERM at once.
    class AnsweredAtOnce(Supervisor):
        def _signal_all(self, sig: int) -> None:
            super()._signal_all(sig)
            if sig == signal.SIGTERM:
                self._on_signal(signal.SIGINT, None)

    out = io.StringIO()
    commands = {"stubborn": "trap '' TERM; kill -INT $PPID; while :; do sleep 1; done"}
    status = AnsweredAtOnce(commands, cwd=tmp_path, policy=FAST, stop_timeout_s=60, out=out).run()

    assert status == 0
    assert "signal received again: sending SIGKILL" in out.getvalue()
