"""The one exception tree of the project.

Domain code raises these; the API turns them into HTTP answers in one place
(`jobs.web.errors`), workers turn them into job outcomes (retry or not).
"""

from __future__ import annotations


class AudioKitError(Exception):
    """Root of every error this project raises on purpose."""


# --- configuration -----------------------------------------------------------------


class ConfigurationError(AudioKitError):
    """Raised when a setting is missing or invalid; the message names the variable."""


class RedisPolicyError(ConfigurationError):
    """Raised when the Redis server is configured so that it may lose queued jobs."""


# --- uploads (the client's mistakes) ------------------------------------------------


class UploadError(AudioKitError):
    """Raised when an upload is refused; the message is safe to show to the client."""


class UploadTooLarge(UploadError):
    """Raised when the uploaded file exceeds `MAX_UPLOAD_MB`."""


class UnsupportedAudio(UploadError):
    """Raised when the uploaded file is not audio we can read."""


class MalformedUpload(UploadError):
    """Raised when the request is not a well-formed upload (empty file, bad field, bad multipart, cut short)."""


class UploadTimedOut(UploadError):
    """Raised when the client stops sending the body, or takes longer than `UPLOAD_TIMEOUT_S`."""


class IdempotencyConflict(UploadError):
    """Raised when a request with the same `Idempotency-Key` is still being processed."""


class IdempotencyMismatch(UploadError):
    """Raised when an `Idempotency-Key` is reused with a different request."""


# --- lookups and state changes -------------------------------------------------------


class NotFound(AudioKitError):
    """Raised when an analysis or job id is unknown."""


class InvalidTransition(AudioKitError):
    """Raised when an operation does not apply to a job in its current state (e.g. cancel a finished job)."""


class QueueUnavailable(AudioKitError):
    """Raised when Redis cannot be reached or refuses writes."""


class QueueFull(QueueUnavailable):
    """Raised when Redis refuses writes because it is out of memory (`noeviction`)."""


# --- job outcomes -------------------------------------------------------------------


class JobError(AudioKitError):
    """Root of errors raised inside a job; subclasses decide whether the job is retried."""


class PermanentJobError(JobError):
    """Raised when running the job again cannot help; the job fails at once, without retries."""


class CorruptAudio(PermanentJobError):
    """Raised when the stored file cannot be decoded as audio."""


class AnalysisRejected(PermanentJobError):
    """Raised when the external analysis server refuses the file (4xx)."""


class JobNotAllowed(PermanentJobError):
    """Raised when a job names a function outside the allow-list, or its payload is not JSON."""


class TransientJobError(JobError):
    """Raised when the job may succeed later (a dependency is down); the job is retried with backoff."""


class AnalysisServerUnavailable(TransientJobError):
    """Raised when the external analysis server times out or answers 5xx."""


class CallbackRefused(PermanentJobError):
    """Raised when a callback URL cannot be sent to: not a valid http(s) URL, or its target is not allowed."""


class CallbackNotDelivered(TransientJobError):
    """Raised when a callback attempt failed (no answer in time, an error status); it is tried again later."""


class JobCanceled(JobError):
    """Raised inside a running job when a cancel was requested; the job stops and is not retried."""


class JobTimedOut(JobError):
    """Raised inside an in-process job that ran past its timeout (RQ kills its work-horse instead)."""


class TaskNotRegistered(PermanentJobError):
    """The job names a task no module registered in this process (check `TASK_MODULES`)."""


class BadJobResult(PermanentJobError):
    """A task returned something that is not JSON; the job cannot record it."""


class WorkHorseDied(TransientJobError):
    """The process running the job died (killed by a signal, out of memory) before the job ended."""


class JobInterrupted(JobError):
    """Raised inside an in-process job at a checkpoint while its process stops: the job goes to the next process."""
