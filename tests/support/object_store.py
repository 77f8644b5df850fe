"""A private S3-compatible server for the test session: moto's server mode, on a free loopback port.

Started once per session (like the private redis-server); each test gets a fresh bucket of its own, so
tests never see each other's objects. Workers and the API reach it over TCP like any S3 endpoint.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
import httpx

from devserver.ports import free_port
from tests.support.processes import wait_for

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

ACCESS_KEY_ID = "testing"
SECRET_ACCESS_KEY = "testing-secret"
REGION = "us-east-1"


class ObjectStoreServer:
    """`python -m moto.server` on loopback, its output in a log file."""

    def __init__(self, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        wait_for(self._ready, 60, f"the S3-compatible server on port {self.port}")

    def _ready(self) -> bool:
        assert self._process is not None
        if self._process.poll() is not None:
            raise AssertionError(f"moto exited:\n{self.log_path.read_text(errors='replace')[-3000:]}")
        try:
            return httpx.get(f"{self.url}/moto-api/", timeout=1).status_code < 500
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def client(self) -> S3Client:
        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
        )

    def new_bucket(self) -> str:
        name = f"test-{uuid.uuid4().hex[:20]}"
        self.client().create_bucket(Bucket=name)
        return name

    def settings_for(self, bucket: str, prefix: str = "uploads") -> dict[str, Any]:
        """Settings overrides that put a deployment's storage in `bucket` under `prefix`."""
        return {
            "storage_url": f"s3://{bucket}/{prefix}",
            "s3_endpoint_url": self.url,
            "s3_access_key_id": ACCESS_KEY_ID,
            "s3_secret_access_key": SECRET_ACCESS_KEY,
            "s3_region": REGION,
            "s3_part_size_mb": 5,
        }

    def object_names(self, bucket: str) -> list[str]:
        pages = self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket)
        return sorted(item["Key"] for page in pages for item in page.get("Contents", []))

    def pending_uploads(self, bucket: str) -> list[str]:
        """Multipart uploads neither completed nor aborted (their object names)."""
        answer = self.client().list_multipart_uploads(Bucket=bucket)
        return sorted(item["Key"] for item in answer.get("Uploads", []))
