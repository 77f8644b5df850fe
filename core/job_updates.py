"""Compare-and-set UPDATEs of a job's row, built once per shape and reused.

Building an ORM UPDATE (its expressions, their coercions and its cache key) costs more CPU than running
it on a warm connection, and a worker runs several per job. A change may name its shape ("begin",
"finish", ...): the first change of that shape builds the statement, with a bind parameter for each
plain value, and later ones run it again with their own values. So every change of one shape must
build the same statement but for its plain values: the same columns, the same SQL expressions (module
constants, or bind parameters of their own), the same conditions, whether it appends to the log.
A change without a shape builds its statement each time.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from sqlalchemy import Table, bindparam, inspect, select, update
from sqlalchemy.sql import ClauseElement
from sqlalchemy.sql.selectable import ExecutableReturnsRows

from core.models import Job

JOB_ID = "job_id"
_COLUMNS = inspect(Job).columns  # by attribute name
# Built statements by (shape, dialect, columns). Threads that build the same one at once each store an
# equal statement; either serves.
_built: dict[tuple[str, str, frozenset[str]], ExecutableReturnsRows] = {}


def _value_param(column: str) -> str:
    """The name of the bind parameter of a plain value for `column`."""
    return f"set_{column}"


def typed_param(column: str) -> Any:
    """The bind parameter of `column`'s plain value, with its type: a shape's SQL expression may use the
    value of another column of the same change (e.g. `coalesce(started_at, <attempt_started_at>)`)."""
    return bindparam(_value_param(column), type_=_COLUMNS[column].type)


def _split(values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The SET clause (a bind parameter for each plain value), and the plain values by parameter."""
    settable: dict[str, Any] = {}
    params: dict[str, Any] = {}
    for column, value in values.items():
        if isinstance(value, ClauseElement):
            settable[column] = value
        else:
            settable[column] = typed_param(column)
            params[_value_param(column)] = value
    return settable, params


def compare_and_set(
    dialect: str,
    job_id: str,
    values: dict[str, Any],
    where: Sequence[Any],
    returning: Any = Job,
    shape: str | None = None,
) -> tuple[ExecutableReturnsRows, dict[str, Any]]:
    """`UPDATE jobs SET values WHERE id = job_id AND where RETURNING returning`, and its parameters.

    `returning` is the `Job` entity (the row, loaded as the session's object) or one column. The UPDATE is
    a Core one, read through `select(returning).from_statement(...)`: an ORM-enabled UPDATE is copied on
    every execution (SQLAlchemy annotates it), so its cache key would be computed again each time.
    """
    settable, params = _split(values)
    params[JOB_ID] = job_id
    key = (shape, dialect, frozenset(settable)) if shape is not None else None
    built = _built.get(key) if key is not None else None
    if built is not None:
        return built, params
    table = cast(Table, Job.__table__)
    core = (
        update(table)
        .where(table.c.id == bindparam(JOB_ID), *where)
        .values({_COLUMNS[column]: value for column, value in settable.items()})
        .returning(*(table.c if returning is Job else [returning]))
    )
    statement = select(returning).from_statement(core)
    if key is not None:
        _built[key] = statement
    return statement, params
