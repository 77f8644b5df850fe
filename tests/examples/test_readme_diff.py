"""The README's migration diff is the real difference between the example's two apps."""

from __future__ import annotations

import re
import subprocess

from core.settings import PROJECT_ROOT

SECTION = "## Moving your own endpoints\n"
FILES = ("tasks.py", "app.py")  # in the README's order


def readme_diff() -> str:
    """The first ```diff block of the README's section on moving endpoints."""
    readme = (PROJECT_ROOT / "README.md").read_text()
    section = readme[readme.index(SECTION) :]
    match = re.search(r"^```diff\n(.*?)^```$", section, re.MULTILINE | re.DOTALL)
    assert match, "no ```diff block in the README's section on moving endpoints"
    return match.group(1)


def real_diff() -> str:
    """`diff -u` of each file of examples/shop/before against after/, without the file times."""
    parts = []
    for name in FILES:
        before, after = f"examples/shop/before/{name}", f"examples/shop/after/{name}"
        done = subprocess.run(["diff", "-u", before, after], cwd=PROJECT_ROOT, capture_output=True, text=True)
        assert done.returncode == 1, done.stderr or f"{before} and {after} do not differ"
        parts.append(re.sub(r"^((?:---|\+\+\+) \S+)\t.*$", r"\1", done.stdout, flags=re.MULTILINE))
    return "".join(parts)


def test_the_readme_shows_the_real_migration_diff_of_the_example() -> None:
    assert readme_diff() == real_diff()


def test_the_diff_covers_every_module_of_the_two_apps() -> None:
    for side in ("before", "after"):
        modules = sorted(path.name for path in (PROJECT_ROOT / "examples/shop" / side).glob("*.py"))
        assert modules == sorted(["__init__.py", *FILES]), side
