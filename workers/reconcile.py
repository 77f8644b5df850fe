"""`python -m workers.reconcile`: one reconciler pass now, report printed as JSON.

The scheduler runs the same pass every `RECONCILE_INTERVAL_S`; this is for
operators (after an outage, before a flag flip) and scripts. It moves jobs
onto RQ, so it only acts with `USE_RQ_QUEUE=true` (in-process mode, the API
reconciles its own jobs).
"""

from __future__ import annotations

import json
import logging
import sys

from core.errors import ConfigurationError
from core.settings import get_settings
from tasks.maintenance import reconcile


def main() -> int:
    try:
        settings = get_settings()
    except ConfigurationError as exc:
        print(f"reconcile: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level, stream=sys.stderr, format="%(asctime)s %(name)s %(message)s")
    report = reconcile()
    print(json.dumps(report, indent=2))
    return 1 if report.get("skipped") and "unreachable" in str(report["skipped"]) else 0


if __name__ == "__main__":
    sys.exit(main())
