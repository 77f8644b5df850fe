"""Waiting for Redis at start-up: until it answers, or until nobody supervises the waiting process."""

from __future__ import annotations

import itertools
import os
import time

import fakeredis
import pytest
import redis

from workers import wait


class _Down(fakeredis.FakeRedis):
    """A Redis that answers after `failures` refused pings."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    def ping(self, **kwargs: object) -> bool:
        if self.failures:
            self.failures -= 1
            raise redis.exceptions.ConnectionError("connection refused")
        return True


def test_waits_until_redis_answers(monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(time, "sleep", sleeps.append)
    down = _Down(failures=3)

    wait.wait_for_redis(down)

    assert down.failures == 0
    assert sleeps == [0.5, 1.0, 2.0]


def test_a_waiting_process_whose_parent_ended_exits(monkeypatch: pytest.MonkeyPatch) -> None:
    parents = itertools.chain([4242, 4242], itertools.repeat(1))  # the pool dies after the first try
    monkeypatch.setattr(os, "getppid", lambda: next(parents))
    monkeypatch.setattr(time, "sleep", lambda seconds: None)

    with pytest.raises(wait.ParentGone) as raised:
        wait.wait_for_redis(_Down(failures=1000))

    assert raised.value.code == 1
