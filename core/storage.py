"""Where uploaded files live: `STORAGE_DIR/<analysis id>.<format>`, never the client's name.

Files still being received are `STORAGE_DIR/.incoming/<random>.part` until `commit` moves them into place.
"""

from __future__ import annotations

import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

_KEY_RE = re.compile(r"^[0-9a-f]{32}\.[a-z0-9]{2,5}$")


class Storage:
    """Uploaded audio files, stored under server-generated names."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._incoming = root / ".incoming"

    def ensure(self) -> None:
        self._incoming.mkdir(parents=True, exist_ok=True)

    def incoming_path(self) -> Path:
        """A fresh path for a file still being received (moved into place by `commit`)."""
        self.ensure()
        return self._incoming / f"{uuid.uuid4().hex}.part"

    @staticmethod
    def key_for(analysis_id: str, audio_format: str) -> str:
        key = f"{analysis_id}.{audio_format.lower()}"
        if not _KEY_RE.match(key):
            raise ValueError(f"not a storage key: {key!r}")
        return key

    def path(self, key: str) -> Path:
        """The file for a storage key; the key is checked so it can never name another path."""
        if not _KEY_RE.match(key):
            raise ValueError(f"not a storage key: {key!r}")
        return self.root / key

    def commit(self, incoming: Path, key: str) -> Path:
        target = self.path(key)
        # The file's age then counts from now: the orphan sweep must not take it before its row is committed.
        os.utime(incoming)
        os.replace(incoming, target)
        return target

    def partial_files(self) -> Iterator[Path]:
        """Files being received, or left by a process that died while receiving them."""
        if self._incoming.is_dir():
            yield from self._incoming.glob("*.part")

    def stored_keys(self) -> Iterator[str]:
        """Keys of the files in place (with or without a row)."""
        if self.root.is_dir():
            for entry in os.scandir(self.root):
                if _KEY_RE.match(entry.name) and entry.is_file(follow_symlinks=False):
                    yield entry.name

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)
