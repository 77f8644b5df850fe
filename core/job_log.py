"""A job's log, appended to by the very UPDATE that changes its row: one statement per change.

The new value of `jobs.logs` is an SQL expression of the row's current one: the lines are added
with the next `seq` numbers (the last line's `seq` + 1, ...), and the log keeps its last
`LOG_LINES_KEPT` lines, in order. SQLite builds it with its JSON functions, PostgreSQL with
`jsonb` (the column is `json` there: cast both ways). No read of the log before the write.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

from sqlalchemy import JSON, Integer, String, Text, bindparam, case, cast, func, literal_column
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.sql.elements import ColumnElement

from core.callback_records import clip
from core.models import LOG_LINES_KEPT, utcnow

_AT = "log_at"
_SQLITE_LINES_PER_CALL = 50  # json_insert takes at most 127 arguments (SQLITE_MAX_FUNCTION_ARG): nested calls
_EMPTY = {"sqlite": "json_array()", "postgresql": "'[]'::jsonb"}


def entries(logs: Sequence[dict[str, Any]], messages: Sequence[str]) -> list[dict[str, Any]]:
    """The log lines of `messages` appended to `logs` (a row not written yet), in Python."""
    seq = logs[-1]["seq"] + 1 if logs else 1
    at = utcnow().isoformat()
    return [*logs, *({"seq": seq + n, "at": at, "message": clip(text)} for n, text in enumerate(messages))][
        -LOG_LINES_KEPT:
    ]


def appended(dialect: str, messages: str | Sequence[str]) -> tuple[ColumnElement[Any], dict[str, Any]]:
    """The value of `jobs.logs` with `messages` appended, for an UPDATE of the row on `dialect`, and the
    parameters to execute that UPDATE with (the lines and their time)."""
    lines = [messages] if isinstance(messages, str) else list(messages)
    if not lines:
        raise ValueError("no log line to append")
    skipped = max(0, len(lines) - LOG_LINES_KEPT)  # more lines than are kept: only the last ones, numbered on
    lines = lines[skipped:]
    params: dict[str, Any] = {_AT: utcnow().isoformat()}
    params.update((_line(n), clip(text)) for n, text in enumerate(lines))
    return _expression(dialect, len(lines), skipped), params


def _line(n: int) -> str:
    return f"log_line_{n}"


@functools.cache
def _expression(dialect: str, count: int, skipped: int) -> ColumnElement[Any]:
    """Built once per shape (a statement's construction costs more than its execution)."""
    if dialect == "postgresql":
        return _postgresql(count, skipped)
    if dialect == "sqlite":
        return _sqlite(count, skipped)
    raise NotImplementedError(f"no log append for the {dialect!r} database")


def _sqlite(count: int, skipped: int) -> ColumnElement[Any]:
    logs: ColumnElement[Any] = literal_column(f"coalesce(jobs.logs, {_EMPTY['sqlite']})")
    length = func.json_array_length(logs)
    last = func.coalesce(func.json_extract(logs, "$[#-1].seq"), 0)
    # json_each lists an array's elements in order (`key` = index): the kept ones, re-aggregated.
    kept: ColumnElement[Any] = literal_column(
        f"(SELECT json_group_array(json(value)) FROM json_each({logs}) "  # noqa: S608 (constants and a count)
        f"WHERE key >= json_array_length({logs}) + {count} - {LOG_LINES_KEPT})"
    )
    base = case((length + count > LOG_LINES_KEPT, kept), else_=logs)
    value: ColumnElement[Any] = base
    pairs: list[Any] = []
    for n in range(count):
        entry = func.json_object(
            literal_column("'seq'"),
            last + (skipped + n + 1),
            literal_column("'at'"),
            bindparam(_AT, type_=String),
            literal_column("'message'"),
            bindparam(_line(n), type_=Text),
        )
        pairs += [literal_column("'$[#]'"), entry]
        if len(pairs) == 2 * _SQLITE_LINES_PER_CALL or n == count - 1:
            value, pairs = func.json_insert(value, *pairs, type_=JSON), []
    return value


def _postgresql(count: int, skipped: int) -> ColumnElement[Any]:
    logs: ColumnElement[Any] = literal_column(f"coalesce(jobs.logs::jsonb, {_EMPTY['postgresql']})")
    length = func.jsonb_array_length(logs)
    last = func.coalesce(cast(literal_column(f"({logs} -> -1 ->> 'seq')"), Integer), 0)
    kept: ColumnElement[Any] = literal_column(
        f"(SELECT coalesce(jsonb_agg(element ORDER BY position), {_EMPTY['postgresql']}) "  # noqa: S608 (constants and a count)
        f"FROM jsonb_array_elements({logs}) WITH ORDINALITY AS kept(element, position) "
        f"WHERE position > jsonb_array_length({logs}) + {count} - {LOG_LINES_KEPT})"
    )
    base = case((length + count > LOG_LINES_KEPT, kept), else_=logs)
    new = func.jsonb_build_array(
        *(
            func.jsonb_build_object(
                literal_column("'seq'"),
                last + (skipped + n + 1),
                literal_column("'at'"),
                cast(bindparam(_AT, type_=String), Text),
                literal_column("'message'"),
                cast(bindparam(_line(n), type_=Text), Text),
            )
            for n in range(count)
        )
    )
    return cast(base.op("||", return_type=JSONB)(new), JSON)
