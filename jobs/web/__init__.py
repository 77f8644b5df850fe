"""The kit's FastAPI adapter: the only part of the queue layer that imports FastAPI.

from jobs.web import QueuedTasks, install, lifespan
"""

from jobs.web.deps import JobHandle, QueuedTasks
from jobs.web.lifespan import install, lifespan, run_jobs

__all__ = ["JobHandle", "QueuedTasks", "install", "lifespan", "run_jobs"]
