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

from core.job_log import appended
from core.models import Job, utcnow

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


def compare_and_set(
    dialect: str,
    job_id: str,
    values: dict[str, Any],
    where: Sequence[Any],
    *,
    log: str | Sequence[str] | None = None,
    returning: Any = Job,
    shape: str | None = None,
) -> tuple[ExecutableReturnsRows, dict[str, Any]]:
    """`UPDATE jobs SET values, updated_at[, logs] WHERE id = job_id AND where RETURNING returning`, and its
    parameters; `log`: lines appended to the job's log in the same statement.

    `returning` is the `Job` entity (the row, loaded as the session's object) or one column. The UPDATE is
    a Core one, read through `select(returning).from_statement(...)`: an ORM-enabled UPDATE is copied on
    every execution (SQLAlchemy annotates it), so its cache key would be computed again each time.
    """
    values = {**values, "updated_at": utcnow()}
    params: dict[str, Any] = {JOB_ID: job_id}
    if log:
        values["logs"], log_params = appended(dialect, log)
        params |= log_params
    params |= {_value_param(column): value for column, value in values.items() if not isinstance(value, ClauseElement)}
    key = (shape, dialect, frozenset(values)) if shape is not None else None
    built = _built.get(key) if key is not None else None
    if built is not None:
        return built, params
    settable = {
        _COLUMNS[column]: value if isinstance(value, ClauseElement) else typed_param(column)
        for column, value in values.items()
    }
    table = cast(Table, Job.__table__)
    core = (
        update(table)
        .where(table.c.id == bindparam(JOB_ID), *where)
        .values(settable)
        .returning(*(table.c if returning is Job else [returning]))
    )
    statement = select(returning).from_statement(core)
    if key is not None:
        _built[key] = statement
    return statement, params
