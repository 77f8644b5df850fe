"""`python -m workers.reconcile`: one reconciler pass now, report printed as JSON.

The scheduler runs the same pass every `RECONCILE_INTERVAL_S`; this is for
operators (after an outage, before a flag flip) and scripts. It moves jobs
onto RQ, so it only acts with `USE_RQ_QUEUE=true` (in-process mode, the API
reconciles its own jobs). Exits 1 when Redis is unreachable, so a script can
tell that nothing was done.
"""

from __future__ import annotations

import json
import sys

from core.startup import configure_logging, settings_or_exit
from jobs.maintenance import reconcile
from jobs.reconcile import SKIPPED_REDIS_DOWN


def main() -> int:
    configure_logging(settings_or_exit("reconcile"), stream=sys.stderr)
    report = reconcile()
    print(json.dumps(report, indent=2))
    return 1 if report["skipped"] == SKIPPED_REDIS_DOWN else 0


if __name__ == "__main__":
    sys.exit(main())
