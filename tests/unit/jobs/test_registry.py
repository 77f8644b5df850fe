"""Declaring tasks: `@task` in both forms, the allow-list by name, and declarations that are refused."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest

from core.settings import QUEUE_NORMAL
from jobs.registry import TaskDef, definition_of, import_task_modules, lookup, registered, task


@task
def bare(item_id: int) -> int:
    return item_id * 2


@task(name="tests.registry.configured", queue="emails", timeout="15m", retry=3, retry_intervals=[5, 30])
async def configured(order_id: int, *, email: str) -> dict[str, Any]:
    return {"order_id": order_id, "email": email}


def plain(item_id: int) -> int:
    return item_id


def another(item_id: int) -> int:
    return item_id


def with_queue_parameter(item_id: int, queue: str) -> None: ...


def with_options_as_keywords(item_id: int, *, priority: str = "high", at: str = "") -> None: ...


def _unique_name() -> str:
    return f"tests.registry.{uuid.uuid4().hex}"


def test_the_bare_decorator_registers_under_module_and_name_with_the_defaults() -> None:
    definition = definition_of(bare)

    assert definition == TaskDef(
        name=f"{__name__}.bare", func=bare, queue=QUEUE_NORMAL, timeout_s=None, retries=None, retry_intervals=None
    )
    assert lookup(f"{__name__}.bare") is definition
    assert bare(21) == 42  # still the function it was
    assert not definition.is_async


def test_the_decorator_with_options_records_them() -> None:
    definition = definition_of(configured)

    assert (definition.name, definition.queue, definition.timeout_s) == ("tests.registry.configured", "emails", 900)
    assert (definition.retries, definition.retry_intervals) == (3, (5, 30))
    assert definition.is_async
    assert lookup("tests.registry.configured") is definition
    assert "tests.registry.configured" in registered()


def test_a_name_taken_by_another_function_is_refused() -> None:
    name = _unique_name()
    task(name=name)(plain)

    with pytest.raises(ValueError, match=f"task name '{name}' is registered already"):
        task(name=name)(another)
    kept = lookup(name)
    assert kept is not None
    assert kept.func is plain


def test_registering_the_same_function_again_is_allowed() -> None:
    # A module imported twice (e.g. as `__main__` and by name) declares its tasks again.
    name = _unique_name()
    first = task(name=name, queue="a")(plain)
    second = task(name=name, queue="b")(plain)

    assert first is second is plain
    assert definition_of(plain).queue == "b"


@pytest.mark.parametrize(
    ("func", "clash"),
    [(with_queue_parameter, "queue"), (with_options_as_keywords, "at, priority")],
    ids=["positional", "keyword-only"],
)
def test_a_parameter_named_like_an_add_task_option_is_refused(func: Callable[..., Any], clash: str) -> None:
    with pytest.raises(TypeError, match=f"parameter {clash} has the name of an add_task option"):
        task(name=_unique_name())(func)


def test_a_function_defined_inside_another_is_refused() -> None:
    def local(item_id: int) -> None: ...

    with pytest.raises(TypeError, match="needs a module-level function"):
        task(local)


@pytest.mark.parametrize("target", [print, TaskDef, None], ids=["builtin", "class", "none"])
def test_what_is_not_a_function_is_refused(target: Any) -> None:
    with pytest.raises(TypeError, match="needs a module-level function"):
        task(name=_unique_name())(target)


@pytest.mark.parametrize("timeout", ["15 minutes", "0", 0, -5, True, "1w"])
def test_a_bad_timeout_is_refused(timeout: Any) -> None:
    with pytest.raises(ValueError, match=r"duration|greater than zero"):
        task(name=_unique_name(), timeout=timeout)(plain)


@pytest.mark.parametrize("retry", [-1, 26, True])
def test_a_bad_retry_count_is_refused(retry: Any) -> None:
    with pytest.raises(ValueError, match="retry must be a whole number from 0 to 25"):
        task(name=_unique_name(), retry=retry)(plain)


@pytest.mark.parametrize("intervals", [[], [-1], [1.5], [True], [10, "30"]])
def test_bad_retry_intervals_are_refused(intervals: Any) -> None:
    with pytest.raises(ValueError, match="retry_intervals must be whole seconds"):
        task(name=_unique_name(), retry_intervals=intervals)(plain)


def test_a_refused_declaration_registers_nothing() -> None:
    name = _unique_name()
    with pytest.raises(ValueError, match="retry must be"):
        task(name=name, retry=-1)(another)
    assert lookup(name) is None


def test_definition_of_a_plain_function_is_a_type_error_naming_it() -> None:
    def not_a_task() -> None: ...

    with pytest.raises(TypeError, match=r"not_a_task is not a task: decorate it with @task"):
        definition_of(not_a_task)


def test_an_unknown_name_is_not_registered() -> None:
    assert lookup("tests.registry.never-declared") is None


def test_importing_task_modules_registers_their_tasks() -> None:
    import_task_modules(["tasks.waveform"])
    definition = lookup("tasks.waveform.render_waveform")
    assert definition is not None
    assert (definition.timeout_s, definition.retries, definition.retry_intervals) == (120, 2, (2, 10))


def test_a_task_module_that_does_not_exist_is_an_import_error() -> None:
    with pytest.raises(ImportError, match="tasks_typo"):
        import_task_modules(["tasks_typo.audio"])
