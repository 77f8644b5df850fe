"""Stored files in an S3-compatible bucket: `s3://bucket/prefix` → objects `prefix/<key>`.

A file being received is a multipart upload to `prefix/.incoming/<random>.part` in parts of
`S3_PART_SIZE_MB` (one part in memory at most; a file smaller than a part is one PUT); `commit`
copies it to its key inside the bucket (no data passes through the API) and deletes it. Whatever
is refused is aborted/deleted; what a killed process leaves (incoming objects, multipart uploads
never completed) is removed by the sweep by age. Workers read an object by downloading it to a
temporary file under `STORAGE_DIR/.scratch`, removed when the task is done with it.
"""

from __future__ import annotations

import io
import logging
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from core.storage import SMALL_OBJECT_MAX_BYTES, Incoming, S3Location, Storage, check_key, is_key

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

    from core.settings import Settings

log = logging.getLogger(__name__)

INCOMING_DIR = ".incoming/"
READ_BUFFER_BYTES = 256 * 1024  # one ranged GET per this much when a format sniffer reads an object
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
_MISSING = {"404", "NoSuchKey", "NotFound"}


def _missing(exc: ClientError) -> bool:
    return str(exc.response.get("Error", {}).get("Code")) in _MISSING


class S3Incoming(Incoming):
    """A multipart upload in bounded parts, started once the first whole part is buffered."""

    def __init__(self, client: S3Client, bucket: str, key: str, part_size: int) -> None:
        self.client, self.bucket, self.key, self.part_size = client, bucket, key, part_size
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list[CompletedPartTypeDef] = []
        self._finished = False

    def write(self, data: bytes) -> None:
        self._buffer.extend(data)

    @property
    def needs_flush(self) -> bool:
        return len(self._buffer) >= self.part_size

    def _send_part(self, data: bytes) -> None:
        if self._upload_id is None:
            self._upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=self.key)["UploadId"]
        number = len(self._parts) + 1
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, PartNumber=number, Body=data
        )
        self._parts.append({"ETag": answer["ETag"], "PartNumber": number})

    def flush(self) -> None:
        while len(self._buffer) >= self.part_size:
            self._send_part(bytes(self._buffer[: self.part_size]))
            del self._buffer[: self.part_size]

    def finish(self) -> None:
        if self._upload_id is None:
            self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self._buffer))
        else:
            self.flush()
            if self._buffer or not self._parts:
                self._send_part(bytes(self._buffer))
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self._upload_id, MultipartUpload={"Parts": self._parts}
            )
            self._upload_id = None
        self._buffer.clear()
        self._finished = True

    def open(self) -> BinaryIO:
        size = self.client.head_object(Bucket=self.bucket, Key=self.key)["ContentLength"]
        return io.BufferedReader(_RangedObject(self.client, self.bucket, self.key, size), READ_BUFFER_BYTES)

    def discard(self) -> None:
        self._buffer.clear()
        if self._upload_id is not None:
            upload_id, self._upload_id = self._upload_id, None
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=upload_id)
        if self._finished:
            self.client.delete_object(Bucket=self.bucket, Key=self.key)
            self._finished = False


class _RangedObject(io.RawIOBase):
    """A read-only, seekable view of an object, one ranged GET per read (buffer it)."""

    def __init__(self, client: S3Client, bucket: str, key: str, size: int) -> None:
        self.client, self.bucket, self.key, self.size = client, bucket, key, size
        self.position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: memoryview | bytearray) -> int:  # type: ignore[override]
        if self.position >= self.size or not len(buffer):
            return 0
        end = min(self.position + len(buffer), self.size) - 1
        answer = self.client.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={self.position}-{end}")
        data = answer["Body"].read()
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


class S3Storage(Storage):
    """Objects in one bucket under one prefix, named by their keys."""

    def __init__(self, client: S3Client, location: S3Location, *, part_size: int, scratch_dir: Path) -> None:
        self.client = client
        self.bucket, self.prefix = location.bucket, location.prefix
        self.part_size = part_size
        self.scratch_dir = scratch_dir
        self.url = f"s3://{self.bucket}/{self.prefix}"

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Storage:
        assert settings.storage_url is not None
        secret = settings.s3_secret_access_key.get_secret_value() if settings.s3_secret_access_key else None
        # Empty keys (as an env file leaves them) mean boto3's own chain: environment, instance role...
        client = boto3.client(
            "s3",
            endpoint_url=settings.s3_endpoint_url,
            aws_access_key_id=settings.s3_access_key_id or None,
            aws_secret_access_key=secret or None,
            region_name=settings.s3_region,
            config=Config(
                connect_timeout=CONNECT_TIMEOUT_S,
                read_timeout=READ_TIMEOUT_S,
                retries={"max_attempts": 3, "mode": "standard"},
                # Most S3-compatible servers (MinIO, moto, Ceph) want path-style addressing.
                s3={"addressing_style": "path" if settings.s3_endpoint_url else "auto"},
            ),
        )
        return cls(
            client,
            S3Location.parse(settings.storage_url),
            part_size=settings.s3_part_size_mb * 1024 * 1024,
            scratch_dir=settings.storage_dir / ".scratch",
        )

    def object_key(self, key: str) -> str:
        return f"{self.prefix}{check_key(key)}"

    def begin(self) -> S3Incoming:
        key = f"{self.prefix}{INCOMING_DIR}{uuid.uuid4().hex}.part"
        return S3Incoming(self.client, self.bucket, key, self.part_size)

    def commit(self, incoming: Incoming, key: str) -> None:
        assert isinstance(incoming, S3Incoming), incoming
        # A server-side copy (uploads are bounded by MAX_UPLOAD_MB, well under S3's 5 GB copy limit).
        self.client.copy_object(
            Bucket=self.bucket, Key=self.object_key(key), CopySource={"Bucket": self.bucket, "Key": incoming.key}
        )
        incoming.discard()

    def put_bytes(self, key: str, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=self.object_key(key), Body=data)

    def read_small(self, key: str) -> bytes | None:
        try:
            answer = self.client.get_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _missing(exc):
                return None
            raise
        return answer["Body"].read(SMALL_OBJECT_MAX_BYTES)

    def local_copy(self, key: str) -> AbstractContextManager[Path]:
        return self._download(self.object_key(key), key)

    @contextmanager
    def _download(self, name: str, key: str) -> Iterator[Path]:
        self.scratch_dir.mkdir(parents=True, exist_ok=True)
        # Named by its key, as on local storage: what a task sends on (a remote analyzer's file name) is the same.
        directory = Path(tempfile.mkdtemp(dir=self.scratch_dir))
        path = directory / key
        try:
            with path.open("wb") as file:
                try:
                    self.client.download_fileobj(self.bucket, name, file)
                except ClientError as exc:
                    if _missing(exc):
                        raise FileNotFoundError(f"nothing is stored under {key}") from None
                    raise
            yield path
        finally:
            path.unlink(missing_ok=True)
            directory.rmdir()

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self.object_key(key))
        except ClientError as exc:
            if _missing(exc):
                return False
            raise
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self.object_key(key))

    def _objects(self, prefix: str) -> Iterator[tuple[str, float]]:
        for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", []):
                yield item["Key"], item["LastModified"].timestamp()

    def stored_keys(self) -> Iterator[str]:
        for name, _ in self._objects(self.prefix):
            if is_key(name[len(self.prefix) :]):
                yield name[len(self.prefix) :]

    def keys_older_than(self, cutoff: float) -> Iterator[str]:
        for name, modified in self._objects(self.prefix):
            if modified < cutoff and is_key(name[len(self.prefix) :]):
                yield name[len(self.prefix) :]

    def pending_uploads(self) -> list[tuple[str, str, float]]:
        """Multipart uploads begun and neither completed nor aborted: (object, upload id, started at)."""
        found = []
        for page in self.client.get_paginator("list_multipart_uploads").paginate(
            Bucket=self.bucket, Prefix=f"{self.prefix}{INCOMING_DIR}"
        ):
            for item in page.get("Uploads", []):
                found.append((item["Key"], item["UploadId"], item["Initiated"].timestamp()))
        return found

    def sweep_incoming(self, cutoff: float) -> int:
        removed = 0
        for name, modified in list(self._objects(f"{self.prefix}{INCOMING_DIR}")):
            if modified < cutoff:
                self.client.delete_object(Bucket=self.bucket, Key=name)
                removed += 1
        for name, upload_id, started in self.pending_uploads():
            if started < cutoff:
                try:
                    self.client.abort_multipart_upload(Bucket=self.bucket, Key=name, UploadId=upload_id)
                except ClientError as exc:
                    if str(exc.response.get("Error", {}).get("Code")) != "NoSuchUpload":
                        raise
                    continue  # completed or aborted meanwhile
                removed += 1
        return removed
