"""A job's log, appended to by the very UPDATE that changes its row: one statement per change.

The new value of `jobs.logs` is an SQL expression of the row's current one: the lines (one JSON
parameter, however many) are added with the next `seq` numbers (the last line's `seq` + 1, ...), and
the log keeps its last `LOG_LINES_KEPT` lines, in order. SQLite builds it with its JSON functions,
PostgreSQL with its `json` ones. No read of the log before the write, and one statement shape
whatever the number of lines (a worker compiles it once, before it forks).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import TextClause, text

from core.callback_records import clip
from core.models import LOG_LINES_KEPT, utcnow

# The kept lines of the row's log, then the new ones, re-aggregated in that order.
_SQLITE = text(
    """(SELECT json_group_array(json(entry)) FROM (
  SELECT 0 AS part, key AS position, value AS entry FROM json_each(coalesce(jobs.logs, json_array()))
   WHERE key >= json_array_length(coalesce(jobs.logs, json_array())) + json_array_length(:log_lines) - :log_kept
  UNION ALL
  SELECT 1, key, json_object('seq', coalesce(json_extract(jobs.logs, '$[#-1].seq'), 0) + key + 1,
                             'at', :log_at, 'message', value)
   FROM json_each(:log_lines) WHERE key >= json_array_length(:log_lines) - :log_kept
  ORDER BY part, position))"""
)
_POSTGRESQL = text(
    """(SELECT coalesce(json_agg(entry ORDER BY part, position), CAST('[]' AS json)) FROM (
  SELECT 0 AS part, position, entry
   FROM json_array_elements(coalesce(jobs.logs, CAST('[]' AS json))) WITH ORDINALITY AS kept(entry, position)
   WHERE position > json_array_length(coalesce(jobs.logs, CAST('[]' AS json)))
                    + json_array_length(CAST(:log_lines AS json)) - :log_kept
  UNION ALL
  SELECT 1, position, json_build_object('seq', coalesce(CAST(jobs.logs -> -1 ->> 'seq' AS bigint), 0) + position,
                                        'at', CAST(:log_at AS text), 'message', message)
   FROM json_array_elements_text(CAST(:log_lines AS json)) WITH ORDINALITY AS added(message, position)
   WHERE position > json_array_length(CAST(:log_lines AS json)) - :log_kept
) AS lines)"""
)
_BY_DIALECT = {"sqlite": _SQLITE, "postgresql": _POSTGRESQL}


def entries(logs: Sequence[dict[str, Any]], messages: Sequence[str]) -> list[dict[str, Any]]:
    """The log lines of `messages` appended to `logs` (a row not written yet), in Python."""
    seq = logs[-1]["seq"] + 1 if logs else 1
    at = utcnow().isoformat()
    return [*logs, *({"seq": seq + n, "at": at, "message": clip(text)} for n, text in enumerate(messages))][
        -LOG_LINES_KEPT:
    ]


def appended(dialect: str, messages: str | Sequence[str]) -> tuple[TextClause, dict[str, Any]]:
    """The value of `jobs.logs` with `messages` appended, for an UPDATE of the row on `dialect`, and the
    parameters to execute that UPDATE with (the lines and their time)."""
    lines = [messages] if isinstance(messages, str) else list(messages)
    if not lines:
        raise ValueError("no log line to append")
    expression = _BY_DIALECT.get(dialect)
    if expression is None:
        raise NotImplementedError(f"no log append for the {dialect!r} database")
    return expression, {
        "log_lines": json.dumps([clip(line) for line in lines]),
        "log_at": utcnow().isoformat(),
        "log_kept": LOG_LINES_KEPT,
    }
