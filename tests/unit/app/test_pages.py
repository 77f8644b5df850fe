"""The pages at `/` and `/admin` and their files: served with a CSP that allows no inline script, and
written so that data never becomes markup."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from app.routes.pages import STATIC_DIR
from core.settings import Settings

pytestmark = pytest.mark.one_database

# Ways a script turns a string into markup or code; the pages use none of them.
MARKUP_SINKS = re.compile(
    r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|\beval\(|new Function|setAttribute\(\s*\"on"
)


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("path", ["/", "/admin"])
def test_a_page_is_html_under_a_policy_without_inline_script_or_framing(client: TestClient, path: str) -> None:
    answer = client.get(path)

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(part.strip().split(" ", 1) for part in answer.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["frame-ancestors"] == "'none'"
    assert "unsafe" not in answer.headers["content-security-policy"]
    assert answer.headers["x-content-type-options"] == "nosniff"
    assert '<meta name="viewport"' in answer.text
    assert re.search(r"<script(?![^>]*\bsrc=)", answer.text) is None  # every script is a file
    assert re.search(r"<[^>]*\s(on[a-z]+|style)\s*=", answer.text) is None  # no inline handler or style


@pytest.mark.parametrize(
    ("path", "media_type"),
    [
        ("/static/common.js", "text/javascript"),
        ("/static/upload.js", "text/javascript"),
        ("/static/admin.js", "text/javascript"),
        ("/static/page.css", "text/css"),
    ],
)
def test_the_pages_files_are_served_with_their_type_and_not_sniffed(
    client: TestClient, path: str, media_type: str
) -> None:
    answer = client.get(path)

    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith(media_type)
    assert answer.headers["x-content-type-options"] == "nosniff"


def test_an_unknown_file_is_404_and_the_folder_is_not_listed(client: TestClient) -> None:
    assert client.get("/static/nothing.js").status_code == 404
    assert client.get("/static/").status_code == 404
    assert client.get("/static/../main.py").status_code == 404


def test_the_pages_are_not_in_the_api_document(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]

    assert "/" not in paths
    assert "/admin" not in paths


@pytest.mark.parametrize("name", sorted(path.name for path in STATIC_DIR.glob("*.js")))
def test_the_scripts_never_turn_text_into_markup(name: str) -> None:
    source = (STATIC_DIR / name).read_text()

    assert MARKUP_SINKS.search(source) is None
