"""The upload sweep deletes only leftovers old enough not to belong to an upload in progress."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from app.models import Analysis
from app.sweep import sweep_uploads
from core.db import get_database
from core.errors import ConfigurationError
from core.models import DispatchMode, Job, JobStatus
from core.settings import Settings, load_settings
from core.storage.local import LocalIncoming, LocalStorage

AGE_S = 3600


def _aged(path: Path, age_s: float) -> Path:
    then = time.time() - age_s
    os.utime(path, (then, then))
    return path


def _stored(storage: LocalStorage, age_s: float) -> str:
    key = LocalStorage.key_for(uuid.uuid4().hex, "wav")
    storage.path(key).write_bytes(b"RIFF")
    _aged(storage.path(key), age_s)
    return key


def _partial(storage: LocalStorage, age_s: float) -> Path:
    path = storage.incoming_path()
    path.write_bytes(b"RIFF")
    return _aged(path, age_s)


def _row_for(settings: Settings, key: str) -> None:
    analysis_id = key.split(".")[0]
    job = Job(
        id=analysis_id,
        task="tasks.audio_analysis.process_audio_analysis",
        args=[key],
        status=JobStatus.PENDING,
        queue="audio_analysis",
        mode=DispatchMode.RQ,
        timeout_s=60,
    )
    analysis = Analysis(
        id=analysis_id, filename="a.wav", size_bytes=4, audio_format="wav", sha256="0" * 64, storage_key=key
    )
    with get_database(settings.database_url).session() as session:
        session.add(job)
        session.flush()
        session.add(analysis)


def test_old_part_files_go_and_fresh_ones_stay(settings: Settings) -> None:
    storage = LocalStorage(settings.storage_dir)
    old, fresh = _partial(storage, AGE_S + 60), _partial(storage, 5)

    report = sweep_uploads(storage, get_database(settings.database_url), AGE_S)

    assert (report.partial_files, old.exists(), fresh.exists()) == (1, False, True)


def test_old_stored_files_without_a_row_go_and_files_of_an_analysis_stay(settings: Settings) -> None:
    storage = LocalStorage(settings.storage_dir)
    storage.ensure()
    orphan, recent_orphan, kept = _stored(storage, AGE_S + 60), _stored(storage, 5), _stored(storage, AGE_S + 60)
    _row_for(settings, kept)
    image = LocalStorage.key_for(kept.split(".")[0], "png")  # its waveform, rendered from it
    storage.path(image).write_bytes(b"PNG")
    _aged(storage.path(image), AGE_S + 60)
    other = settings.storage_dir / "README.txt"  # not a storage key: never ours to delete
    other.write_text("x")
    _aged(other, AGE_S + 60)

    report = sweep_uploads(storage, get_database(settings.database_url), AGE_S)

    assert report.unreferenced_files == 1
    assert sorted(path.name for path in settings.storage_dir.iterdir() if path.is_file()) == sorted(
        [recent_orphan, kept, image, "README.txt"]
    )
    assert not storage.path(orphan).exists()


def test_a_committed_file_is_young_however_long_its_upload_took(settings: Settings) -> None:
    storage = LocalStorage(settings.storage_dir)
    incoming = _partial(storage, AGE_S + 60)  # a long upload, just finished
    key = LocalStorage.key_for(uuid.uuid4().hex, "wav")
    storage.commit(LocalIncoming(incoming), key)  # its row is about to be committed

    report = sweep_uploads(storage, get_database(settings.database_url), AGE_S)

    assert (report.unreferenced_files, storage.path(key).exists()) == (0, True)


def test_a_missing_storage_directory_is_nothing_to_sweep(settings: Settings, tmp_path: Path) -> None:
    report = sweep_uploads(LocalStorage(tmp_path / "nowhere"), get_database(settings.database_url), AGE_S)
    assert (report.partial_files, report.unreferenced_files) == (0, 0)


def test_the_orphan_age_must_outlast_an_upload() -> None:
    with pytest.raises(ConfigurationError, match="UPLOAD_ORPHAN_AGE_S must be at least UPLOAD_TIMEOUT_S"):
        load_settings(env_file="", upload_timeout_s=900, upload_orphan_age_s=900)
