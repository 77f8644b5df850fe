"""The example shop's task declarations, read without running anything."""

from __future__ import annotations

import ast

import pytest

from core.settings import PROJECT_ROOT
from examples.shop.after import tasks
from jobs.registry import definition_of, lookup
from tests.examples.shop import JOURNAL_OF, QUEUE

WEB = {"fastapi", "starlette", "uvicorn", "jobs.web"}


def test_each_task_of_the_migrated_shop_is_registered_on_the_shop_queue() -> None:
    for name in JOURNAL_OF:
        definition = lookup(name)
        assert definition is not None, name
        assert definition.queue == QUEUE
    assert definition_of(tasks.send_confirmation).is_async
    assert definition_of(tasks.book_courier).retries == 5


@pytest.mark.parametrize("module", ["before/tasks.py", "after/tasks.py", "outside.py"])
def test_the_shop_task_modules_import_no_web_framework(module: str) -> None:
    tree = ast.parse((PROJECT_ROOT / "examples/shop" / module).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name in WEB or name.split(".")[0] in WEB}, imported
