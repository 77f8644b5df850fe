"""Creating stored uploads directly (no HTTP), for tests of jobs, workers and the reconciler."""

from __future__ import annotations

import hashlib
import uuid

from core.models import Analysis, AnalysisStatus, DispatchMode, Priority
from tasks.runtime import Runtime


def store_upload(
    runtime: Runtime,
    data: bytes,
    *,
    extension: str = "wav",
    queue: str = "audio_analysis",
    mode: DispatchMode = DispatchMode.RQ,
    callback_url: str | None = None,
) -> Analysis:
    """Writes `data` to storage and commits a `pending` analysis for it, as an upload would."""
    analysis_id = uuid.uuid4().hex
    key = runtime.storage.key_for(analysis_id, extension)
    runtime.storage.ensure()
    runtime.storage.path(key).write_bytes(data)
    return runtime.lifecycle.accept(
        Analysis(
            id=analysis_id,
            status=AnalysisStatus.PENDING,
            filename=f"test.{extension}",
            size_bytes=len(data),
            content_type=None,
            audio_format=extension,
            sha256=hashlib.sha256(data).hexdigest(),
            storage_key=key,
            priority=Priority.HIGH if queue == "high_priority" else Priority.NORMAL,
            queue=queue,
            mode=mode,
            callback_url=callback_url,
            logs=[],
        )
    )
