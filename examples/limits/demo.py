"""The limits example: three jobs of a task limited to one at a time, three jobs under one ordering key.

    TASK_MODULES=tasks.audio_analysis,tasks.waveform,examples.limits.tasks python -m examples.limits.demo submit
    TASK_MODULES=... ./start_worker.sh -n 2 --burst
    TASK_MODULES=... python -m examples.limits.demo report

`submit` accepts the six jobs (RQ mode: `USE_RQ_QUEUE=true`, the default) and prints, per job, its
id, task, ordering key, status and its row's last log line; `report` prints the highest number of
runs seen at once per group, and the order in which the customer's jobs finished. Settings come
from the environment or `.env`, as for the API; the database must be migrated (`make run` does it).
"""

from __future__ import annotations

import sys

from core.settings import get_settings
from examples.limits import tasks
from jobs.services import build_job_services

CUSTOMER = "customer-42"
COUNT = 3


def submit() -> list[str]:
    services = build_job_services(get_settings())
    tasks.forget(services.redis, "exclusive", CUSTOMER)
    jobs = [services.submitter.build(tasks.exclusive, [f"x{n}"]) for n in range(COUNT)]
    jobs += [
        services.submitter.build(tasks.per_customer, [CUSTOMER, f"c{n}"], ordering_key=CUSTOMER) for n in range(COUNT)
    ]
    lines = []
    for job in jobs:
        services.submitter.submit(job)
        row = services.lifecycle.require(job.id)
        last_log = row.logs[-1]["message"] if row.logs else ""
        lines.append(f"{row.id[:8]} {row.task} {row.ordering_key or '-'} {row.status} {last_log}")
    return lines


def report() -> str:
    services = build_job_services(get_settings())
    order = tasks.finished(services.redis, CUSTOMER)
    return (
        f"peak exclusive: {tasks.peak(services.redis, 'exclusive')} | peak {CUSTOMER}: "
        f"{tasks.peak(services.redis, CUSTOMER)} | {CUSTOMER} finished in order: {order}"
    )


def main(argv: list[str]) -> int:
    if argv == ["submit"]:
        print("\n".join(submit()))
        return 0
    if argv == ["report"]:
        print(report())
        return 0
    print("usage: python -m examples.limits.demo submit|report", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
