"""Ports for private servers: none handed out twice, none outside its share, and a private Redis or a test's
API never mistakes another server on its port for itself."""

from __future__ import annotations

import itertools
import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import Settings
from devserver.ports import PortRange, ephemeral_start, free_port, share_of, whole_range
from devserver.redis import PortTakenError, RedisServer
from tests.support import processes
from tests.support.processes import ApiServer, ManagedProcess, wait_for


def test_a_range_hands_out_each_port_once_before_going_round_and_skips_ports_in_use() -> None:
    start = free_port()  # ports of this process's own share: no other test process uses them
    ports = PortRange(start, start + 9)
    first = ports.take()
    following = first + 1 if first < start + 9 else start
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", following))
        listener.listen()
        taken = [first] + [ports.take() for _ in range(8)]
    assert following not in taken
    assert len(set(taken)) == 9
    assert ports.take() == first  # round again, from the start
    assert ports.take() == following  # free again, now that nothing listens there


def test_shares_do_not_overlap_and_stay_below_the_ephemeral_range() -> None:
    bounds = whole_range()
    assert bounds is not None
    assert bounds[1] < ephemeral_start()
    shares = [share_of(index, 4) for index in range(4)]
    assert all(share is not None and bounds[0] <= share[0] < share[1] <= bounds[1] for share in shares)
    ends = sorted(share for share in shares if share is not None)
    assert all(earlier[1] < later[0] for earlier, later in itertools.pairwise(ends))
    assert share_of(4, 4) is None


@pytest.fixture
def running(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "first")
    server.start()
    yield server
    server.stop()


def test_a_redis_that_must_keep_its_port_refuses_another_server_answering_there(
    running: RedisServer, tmp_path: Path
) -> None:
    second = RedisServer(tmp_path / "second", port=running.port)  # its clients were told this port
    with pytest.raises(PortTakenError):
        second.start()
    assert not second.running
    assert running.process is not None
    with running.client() as client:  # the server that was there is untouched
        assert int(client.info("server")["process_id"]) == running.process.pid


def test_a_redis_that_chose_its_port_chooses_again_when_another_server_took_it(
    running: RedisServer, tmp_path: Path
) -> None:
    second = RedisServer(tmp_path / "second")
    second.port = running.port  # another test process chose the same port a moment before
    second.start()
    try:
        assert second.port != running.port
        assert second.process is not None
        with second.client() as client:
            assert int(client.info("server")["process_id"]) == second.process.pid
    finally:
        second.stop()


@pytest.mark.one_database
def test_an_api_whose_port_another_server_answers_on_is_not_taken_for_started(
    tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "health").write_text("ok")  # answers GET /health with 200, as an API would
    port = free_port()
    log = tmp_path / "other.log"
    argv = [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"]
    other = ManagedProcess(argv, dict(os.environ), log, cwd=tmp_path / "site")
    try:
        wait_for(lambda: other.listens_on(port), 30, "the other server")
        monkeypatch.setattr(processes, "free_port", lambda: port)  # it chose the same port a moment before
        with pytest.raises(AssertionError, match="the API exited"):
            ApiServer(settings, tmp_path / "api.log")
    finally:
        other.stop()
