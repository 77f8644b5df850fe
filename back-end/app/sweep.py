"""Deletes what interrupted uploads leave behind, once it is too old to belong to an upload in progress.

An API process killed mid-upload leaves `STORAGE_DIR/.incoming/<random>.part` (with S3: an object
under `prefix/.incoming/`, or a multipart upload never completed); one killed between storing a file
and committing its row leaves `<id>.<format>` that no row names. Every API process sweeps at start-up
and then every `UPLOAD_SWEEP_INTERVAL_S`. Processes may share the storage and none knows what the
others are writing, so age decides (file mtime; S3's LastModified, and Initiated for multipart
uploads): an upload lasts at most `UPLOAD_TIMEOUT_S`, a stored file's age starts when it is committed,
and the settings keep `UPLOAD_ORPHAN_AGE_S` well above both. A file that a row names is never touched
here (finished work goes by retention, `jobs.retention`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass

from sqlalchemy import select

from app.models import Analysis
from core.db import Database
from core.settings import Settings
from core.storage import Storage

log = logging.getLogger(__name__)

KEYS_PER_QUERY = 500  # well under SQLite's bound-parameter limit


@dataclass(frozen=True)
class SweepReport:
    partial_files: int = 0
    unreferenced_files: int = 0


def _referenced(database: Database, keys: list[str]) -> set[str]:
    """The keys that belong to an analysis: its upload (`<id>.<format>`) and what was made of it (`<id>.png`)."""
    ids = {key.split(".", 1)[0] for key in keys}
    with database.session() as session:
        known = set(session.scalars(select(Analysis.id).where(Analysis.id.in_(ids))))
    return {key for key in keys if key.split(".", 1)[0] in known}


def sweep_uploads(
    storage: Storage, database: Database, older_than_s: float, *, now: float | None = None
) -> SweepReport:
    """Deletes files being received (`.part` files; with S3 also multipart uploads never completed) and
    unreferenced stored files last modified more than `older_than_s` ago."""
    cutoff = (time.time() if now is None else now) - older_than_s
    partial = storage.sweep_incoming(cutoff)
    candidates = list(storage.keys_older_than(cutoff))
    unreferenced = 0
    for start in range(0, len(candidates), KEYS_PER_QUERY):
        batch = candidates[start : start + KEYS_PER_QUERY]
        referenced = _referenced(database, batch)
        for key in batch:
            if key not in referenced:
                storage.delete(key)
                unreferenced += 1
    return SweepReport(partial, unreferenced)


async def sweep_forever(storage: Storage, database: Database, settings: Settings) -> None:
    """Sweeps now, then every `UPLOAD_SWEEP_INTERVAL_S`, until cancelled."""
    while True:
        try:
            report = await asyncio.to_thread(sweep_uploads, storage, database, settings.upload_orphan_age_s)
        except Exception:
            log.exception("upload sweep failed")
        else:
            if report.partial_files or report.unreferenced_files:
                log.info(
                    "upload sweep: deleted %d partial upload(s) and %d stored file(s) no analysis refers to",
                    report.partial_files,
                    report.unreferenced_files,
                )
        await asyncio.sleep(settings.upload_sweep_interval_s)
