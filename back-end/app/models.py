"""The upload's own row: what is audio-specific about an analysis.

Everything about running it (status, attempts, progress, logs, result, callback) is its job's
(`core.models.Job`, the same id): the audio analysis is one producer of jobs among others.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from core.models import Base, Job


class Analysis(Base):
    __tablename__ = "analyses"

    id: Mapped[str] = mapped_column(String(64), ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True)
    # The client's file name, kept as metadata only: it never becomes a path.
    filename: Mapped[str] = mapped_column(String(255))
    size_bytes: Mapped[int] = mapped_column(Integer)
    content_type: Mapped[str | None] = mapped_column(String(127))
    audio_format: Mapped[str] = mapped_column(String(32))
    sha256: Mapped[str] = mapped_column(String(64))
    storage_key: Mapped[str] = mapped_column(String(255))
    # Loaded with the row: every reader of an analysis wants its status.
    job: Mapped[Job] = relationship(lazy="joined", innerjoin=True)

    def __repr__(self) -> str:
        return f"<Analysis {self.id} {self.job.status.value if self.job else '?'}>"
