"""Two tasks for the limits example: one limited to one run at a time, one run under ordering keys.

Each run records in Redis how many runs of its group work at that moment (the highest count is the
concurrency actually observed) and, when it ends, its label (the order in which they finished).
"""

from __future__ import annotations

from examples.limits.tally import Tally
from jobs import task

WORK_S = 0.3  # long enough for runs without a limit to overlap
TALLY = Tally("examples:limits:")
peak = TALLY.peak
finished = TALLY.finished
forget = TALLY.forget


@task(name="examples.limits.exclusive", retry=0, concurrency=1)
def exclusive(label: str) -> dict[str, str]:
    """At most one run at a time, across every worker."""
    return TALLY.work("exclusive", label, WORK_S)


@task(name="examples.limits.per_customer", retry=0)
def per_customer(customer: str, label: str) -> dict[str, str]:
    """No limit of its own; submitted with `ordering_key=customer`, a customer's jobs run in order."""
    return TALLY.work(customer, label, WORK_S)
