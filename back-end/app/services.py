"""The objects the API works with, built once per app from its settings: the kit's, plus uploads."""

from __future__ import annotations

from dataclasses import dataclass

from app.intake import Intake
from app.models import Analysis
from core.settings import Settings
from jobs.services import JobServices, job_services_kwargs


@dataclass(kw_only=True)
class Services(JobServices):
    intake: Intake


def build_services(settings: Settings) -> Services:
    kit = job_services_kwargs(settings)
    services = Services(**kit, intake=None, retention_dependents=(Analysis,))  # type: ignore[arg-type]
    services.intake = Intake(settings, services.storage, services.submitter)
    return services
