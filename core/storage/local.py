"""Stored files in a local directory: `STORAGE_DIR/<key>`.

Files still being received are `STORAGE_DIR/.incoming/<random>.part` until `commit` moves them into place.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import BinaryIO

from core.storage import SMALL_OBJECT_MAX_BYTES, Incoming, Storage, check_key, is_key


class LocalIncoming(Incoming):
    """A file being received into `path`, opened on the first write."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._file: BinaryIO | None = None

    def write(self, data: bytes) -> None:
        if self._file is None:
            self._file = self.path.open("wb")
        # A page-cache write of one chunk is microseconds; a thread hop per chunk would cost more.
        self._file.write(data)

    def _close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def finish(self) -> None:
        if self._file is None:
            self.path.touch()  # an empty file part: an empty file (refused later, as such)
        self._close()

    def open(self) -> BinaryIO:
        return self.path.open("rb")

    def discard(self) -> None:
        self._close()
        self.path.unlink(missing_ok=True)


class LocalStorage(Storage):
    """Files under one directory, named by their keys."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.url = str(root)
        self._incoming = root / ".incoming"

    def ensure(self) -> None:
        self._incoming.mkdir(parents=True, exist_ok=True)

    def incoming_path(self) -> Path:
        """A fresh path for a file still being received (moved into place by `commit`)."""
        self.ensure()
        return self._incoming / f"{uuid.uuid4().hex}.part"

    def begin(self) -> LocalIncoming:
        return LocalIncoming(self.incoming_path())

    def path(self, key: str) -> Path:
        """The file for a storage key; the key is checked so it can never name another path."""
        return self.root / check_key(key)

    def commit(self, incoming: Incoming, key: str) -> None:
        assert isinstance(incoming, LocalIncoming), incoming
        target = self.path(key)
        # The file's age then counts from now: the orphan sweep must not take it before its row is committed.
        os.utime(incoming.path)
        os.replace(incoming.path, target)

    def put_bytes(self, key: str, data: bytes) -> None:
        target = self.path(key)
        incoming = self.incoming_path()
        incoming.write_bytes(data)
        os.replace(incoming, target)

    def read_small(self, key: str) -> bytes | None:
        try:
            with self.path(key).open("rb") as file:
                return file.read(SMALL_OBJECT_MAX_BYTES)
        except FileNotFoundError:
            return None

    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        path = self.path(key)
        if not path.is_file():
            raise FileNotFoundError(f"nothing is stored under {key}")
        return nullcontext(path)

    def exists(self, key: str) -> bool:
        return self.path(key).is_file()

    def delete(self, key: str) -> None:
        self.path(key).unlink(missing_ok=True)

    def partial_files(self) -> Iterator[Path]:
        """Files being received, or left by a process that died while receiving them."""
        if self._incoming.is_dir():
            yield from self._incoming.glob("*.part")

    def stored_keys(self) -> Iterator[str]:
        if self.root.is_dir():
            for entry in os.scandir(self.root):
                if is_key(entry.name) and entry.is_file(follow_symlinks=False):
                    yield entry.name

    def keys_older_than(self, cutoff: float) -> Iterator[str]:
        for key in self.stored_keys():
            if _older_than(self.path(key), cutoff):
                yield key

    def sweep_incoming(self, cutoff: float) -> int:
        removed = 0
        for path in list(self.partial_files()):
            if _older_than(path, cutoff):
                path.unlink(missing_ok=True)
                removed += 1
        return removed


def _older_than(path: Path, cutoff: float) -> bool:
    try:
        return path.stat().st_mtime < cutoff
    except FileNotFoundError:  # finished or swept by another process meanwhile
        return False
