"""A small process supervisor for `make run`: the `Procfile`'s processes, each restarted when it dies.

Each process runs under `sh -c` in its own session (a terminal's Ctrl-C reaches only the
supervisor, which then stops everything in order), with its output prefixed by its name. A
process that exits is restarted after a backoff that doubles with each recent crash; one that
crashes more than `max_restarts` times within `window_s` makes the supervisor give up: it stops
the others and returns 1. SIGINT/SIGTERM stop every process group with SIGTERM (workers finish
their job), SIGKILL after `stop_timeout_s` or on a second Ctrl-C; the return value is then 0.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import IO

TICK_S = 0.1  # how often processes are checked; also the longest a Ctrl-C waits to be acted on
KILL_WAIT_S = 5.0  # for SIGKILLed processes to be gone before `make run` stops Redis
EXIT_GAVE_UP = 1
OWN_NAME = "make run"  # the name on the supervisor's own lines


@dataclass(frozen=True)
class RestartPolicy:
    """When a dead process is started again."""

    first_delay_s: float = 1.0  # after its first crash in the window; doubles with each further one
    max_delay_s: float = 30.0
    max_restarts: int = 5  # within window_s; the next crash stops everything
    window_s: float = 60.0

    def delay_s(self, recent_crashes: int) -> float:
        """The wait before the restart that follows the `recent_crashes`-th crash in the window."""
        return float(min(self.first_delay_s * 2 ** max(recent_crashes - 1, 0), self.max_delay_s))


@dataclass
class _Child:
    name: str
    command: str
    process: subprocess.Popen[bytes] | None = None
    crashes: deque[float] = field(default_factory=deque)
    restart_at: float | None = None


class Supervisor:
    """Runs named shell commands until SIGINT/SIGTERM, restarting each one that exits."""

    def __init__(
        self,
        commands: Mapping[str, str],
        *,
        cwd: Path,
        env: Mapping[str, str] | None = None,
        policy: RestartPolicy = RestartPolicy(),
        stop_timeout_s: float = 30.0,
        out: IO[str] = sys.stdout,
    ) -> None:
        self.children = [_Child(name, command) for name, command in commands.items()]
        self.cwd = cwd
        self.env = dict(os.environ if env is None else env)
        self.policy = policy
        self.stop_timeout_s = stop_timeout_s
        self.out = out
        self._width = max(len(name) for name in [OWN_NAME, *commands])
        self._print_lock = threading.Lock()
        self._groups: set[int] = set()  # process groups started and maybe not empty yet
        self._signals = 0
        self._signal_name = ""
        self._relays: list[threading.Thread] = []

    def run(self) -> int:
        """Starts every process and supervises them; returns 0 when stopped by a signal, 1 on giving up."""
        previous = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
        try:
            try:
                for child in self.children:
                    self._start(child)
                gave_up = self._supervise()
            finally:
                self._stop_all()  # also when starting one failed: none is left running
            return EXIT_GAVE_UP if gave_up else 0
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def log(self, message: str, name: str = OWN_NAME) -> None:
        with self._print_lock:
            self.out.write(f"{datetime.now():%H:%M:%S} {name:<{self._width}} | {message}\n")
            self.out.flush()

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        # Only counted here: logging from a signal handler could deadlock on the output lock.
        self._signals += 1
        self._signal_name = signal.Signals(signum).name

    def _supervise(self) -> bool:
        """Returns when a signal arrived (False) or a process crashed too often (True)."""
        while not self._signals:
            now = time.monotonic()
            for child in self.children:
                if child.process is not None and child.process.poll() is not None:
                    if not self._restart_later(child, child.process.returncode, now):
                        return True
                elif child.restart_at is not None and now >= child.restart_at:
                    self._start(child)
            time.sleep(TICK_S)
        self.log(f"{self._signal_name} received: stopping everything (a second Ctrl-C kills at once)")
        return False

    def _restart_later(self, child: _Child, returncode: int, now: float) -> bool:
        """Schedules the restart of an exited process; False when it crashed too often to restart."""
        assert child.process is not None
        self._signal_group(child.process.pid, signal.SIGTERM)  # what it left behind (e.g. a pool's workers)
        child.process = None
        reason = _describe(returncode)
        child.crashes.append(now)
        while child.crashes and child.crashes[0] < now - self.policy.window_s:
            child.crashes.popleft()
        recent = len(child.crashes)
        if recent > self.policy.max_restarts:
            self.log(
                f"exited ({reason}), {recent} times within {self.policy.window_s:g}s: giving up, stopping everything",
                child.name,
            )
            return False
        delay_s = self.policy.delay_s(recent)
        child.restart_at = now + delay_s
        self.log(
            f"exited ({reason}); restarting in {delay_s:g}s "
            f"(restart {recent} of at most {self.policy.max_restarts} within {self.policy.window_s:g}s)",
            child.name,
        )
        return True

    def _start(self, child: _Child) -> None:
        child.restart_at = None
        process = subprocess.Popen(
            ["/bin/sh", "-c", child.command],
            cwd=self.cwd,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: stopped as a whole, untouched by Ctrl-C
        )
        child.process = process
        self._groups.add(process.pid)
        self.log(f"started (pid {process.pid}): {child.command}", child.name)
        relay = threading.Thread(target=self._relay, args=(child.name, process), daemon=True)
        relay.start()
        self._relays = [thread for thread in self._relays if thread.is_alive()] + [relay]

    def _relay(self, name: str, process: subprocess.Popen[bytes]) -> None:
        assert process.stdout is not None
        with process.stdout:
            for line in process.stdout:
                self.log(line.decode(errors="replace").rstrip("\n"), name)

    def _stop_all(self) -> None:
        """SIGTERM to every process group, SIGKILL to those left after the timeout (or a second signal)."""
        for child in self.children:
            child.restart_at = None
        # Counted before the SIGTERMs go out: a process may answer one with a signal of its own (a user's
        # second Ctrl-C) before the next line runs, and that one must count as the second.
        signals_before = max(self._signals, 1)  # a Ctrl-C after giving up counts as the first
        self._signal_all(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_timeout_s
        while self._live_groups():
            forced = self._signals > signals_before
            if forced or time.monotonic() > deadline:
                self.log(f"{'signal received again' if forced else 'not stopped in time'}: sending SIGKILL")
                self._signal_all(signal.SIGKILL)
                kill_deadline = time.monotonic() + KILL_WAIT_S
                while self._live_groups() and time.monotonic() < kill_deadline:
                    time.sleep(TICK_S)
                break
            time.sleep(TICK_S)
        for child in self.children:
            if child.process is not None:
                child.process.wait()
                self.log(f"stopped ({_describe(child.process.returncode)})", child.name)
                child.process = None
        for relay in self._relays:  # their last lines (a leftover holding the pipe open is not waited for)
            relay.join(KILL_WAIT_S)

    def _signal_all(self, sig: int) -> None:
        for group in list(self._groups):
            self._signal_group(group, sig)

    def _live_groups(self) -> set[int]:
        """Process groups with a live member; reaps exited children so they stop counting."""
        for child in self.children:
            if child.process is not None:
                child.process.poll()
        for group in list(self._groups):
            self._signal_group(group, 0)
        return self._groups

    def _signal_group(self, group: int, sig: int) -> None:
        """Sends `sig` to a process group; an empty one is forgotten (its id may be reused later)."""
        try:
            os.killpg(group, sig)
        except ProcessLookupError:
            self._groups.discard(group)
        except PermissionError:
            pass  # a member changed its user id: still there, out of our reach


def _describe(returncode: int) -> str:
    """`exit status 1`, `killed by SIGKILL` (a shell reports its command's death by signal N as 128 + N)."""
    if returncode < 0:
        return f"killed by {signal.Signals(-returncode).name}"
    if returncode - 128 in set(signal.Signals):
        return f"exit status {returncode}, killed by {signal.Signals(returncode - 128).name}"
    return f"exit status {returncode}"
