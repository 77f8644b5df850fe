"""Reading a server-sent event stream the way a browser's EventSource does."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Event:
    event: str
    data: Any


def parse(lines: Iterator[str]) -> Iterator[Event]:
    """Events from SSE lines; comments (pings) are skipped, `data` is decoded as JSON."""
    name, data = "message", list[str]()
    for line in lines:
        if line == "":
            if data:
                yield Event(name, json.loads("\n".join(data)))
            name, data = "message", list[str]()
        elif line.startswith(":"):
            continue
        else:
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


def read_events(client: httpx.Client, url: str, timeout_s: float = 60) -> list[Event]:
    """All events of a stream, until the server closes it."""
    with client.stream("GET", url, timeout=timeout_s) as response:
        response.raise_for_status()
        assert response.headers["content-type"].startswith("text/event-stream")
        return list(parse(response.iter_lines()))
