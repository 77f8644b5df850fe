"""Where uploaded files and what is made of them live: one interface, two back-ends.

`STORAGE_URL` chooses: a local directory (`STORAGE_DIR`, the default; `local.LocalStorage`) or an
S3-compatible bucket (`s3://bucket/prefix`; `s3.S3Storage`). Objects are named by server-generated
keys (`<job id>.<format>`), checked on every use, never by a client's name.

A file being received goes into an `Incoming` (written chunk by chunk, never held whole in memory),
which `Storage.commit` puts in place under its key once it was checked, or `Incoming.discard` removes.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO
from urllib.parse import urlsplit

if TYPE_CHECKING:
    from core.settings import Settings

_KEY_RE = re.compile(r"^[0-9a-f]{32}\.[a-z0-9]{2,5}$")
SMALL_OBJECT_MAX_BYTES = 16 * 1024 * 1024  # `read_small`: images and such, never an upload


def check_key(key: str) -> str:
    """Returns `key` when it is a storage key (`<32 hex>.<ext>`), so it can never name another path or object.

    Raises:
        ValueError: it is not.
    """
    if not _KEY_RE.match(key):
        raise ValueError(f"not a storage key: {key!r}")
    return key


def is_key(name: str) -> bool:
    return _KEY_RE.match(name) is not None


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str  # "" or ends with "/"

    @classmethod
    def parse(cls, url: str) -> S3Location:
        """`s3://bucket` or `s3://bucket/some/prefix`.

        Raises:
            ValueError: not such a URL.
        """
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment:
            raise ValueError("expected s3://bucket or s3://bucket/prefix")
        prefix = parts.path.strip("/")
        return cls(parts.netloc, f"{prefix}/" if prefix else "")


class Incoming(ABC):
    """A file being received: written in order, then committed under a key or discarded."""

    @abstractmethod
    def write(self, data: bytes) -> None:
        """Appends `data` (cheap: a local write, or into a bounded buffer; never network I/O)."""

    @property
    def needs_flush(self) -> bool:
        """True when `flush` has work to do (a whole part is buffered); then call it off the event loop."""
        return False

    def flush(self) -> None:  # noqa: B027 (a no-op by default: local files need no flushing)
        """Sends what is buffered (blocking: call it in a thread)."""

    @abstractmethod
    def finish(self) -> None:
        """Ends the file (blocking). After it the file can be read back (`open`) and committed."""

    @abstractmethod
    def open(self) -> BinaryIO:
        """The finished file, readable and seekable (for sniffing its format)."""

    @abstractmethod
    def discard(self) -> None:
        """Removes whatever was written (blocking); safe to call at any point, and more than once."""


class Storage(ABC):
    """Stored files by key: uploads, and what tasks make of them (e.g. `<id>.png`)."""

    url: str  # where they are, for logs and /queue/status (no secrets)

    @staticmethod
    def key_for(job_id: str, extension: str) -> str:
        """The key of a file of a job, e.g. `key_for(id, "wav")` → `<id>.wav`.

        Raises:
            ValueError: the id or extension cannot make a storage key.
        """
        return check_key(f"{job_id}.{extension.lower()}")

    def ensure(self) -> None:  # noqa: B027 (only a local directory needs creating)
        """Creates what the back-end needs before first use (a directory); idempotent."""

    @abstractmethod
    def begin(self) -> Incoming:
        """A fresh `Incoming` for a file about to be received."""

    @abstractmethod
    def commit(self, incoming: Incoming, key: str) -> None:
        """Puts a finished `Incoming` in place under `key` (replacing what was there); its age starts now."""

    @abstractmethod
    def put_bytes(self, key: str, data: bytes) -> None:
        """Stores a small file in one step: a reader sees the old file or the new one, never half of it."""

    @abstractmethod
    def read_small(self, key: str) -> bytes | None:
        """The content of a small file (at most SMALL_OBJECT_MAX_BYTES), None when there is none."""

    @abstractmethod
    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        """A local file with the content of `key` for as long as the block lasts (a download for S3).

        Raises:
            FileNotFoundError: nothing is stored under `key`.
        """

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def delete(self, key: str) -> None:
        """Deletes the file of `key`; nothing there is not an error."""

    @abstractmethod
    def stored_keys(self) -> Iterator[str]:
        """Keys of the files in place (with or without a row)."""

    @abstractmethod
    def keys_older_than(self, cutoff: float) -> Iterator[str]:
        """Keys of files in place last written before `cutoff` (a UNIX time)."""

    @abstractmethod
    def sweep_incoming(self, cutoff: float) -> int:
        """Removes files being received that were started before `cutoff` (left by a dead process);
        returns how many."""


def build_storage(settings: Settings) -> Storage:
    """The storage `STORAGE_URL` names (a local directory when it is not set)."""
    from core.storage.local import LocalStorage

    if settings.storage_url is None or not settings.storage_url.startswith("s3://"):
        return LocalStorage(settings.storage_dir)
    from core.storage.s3 import S3Storage

    return S3Storage.from_settings(settings)
