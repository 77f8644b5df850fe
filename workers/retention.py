"""`python -m workers.retention`: retention now (ended jobs past their age and their files), report as JSON.

The scheduler (RQ mode) or the API (in-process mode) runs the same every `RETENTION_INTERVAL_S`;
this is for operators and scripts, in either mode.
"""

from __future__ import annotations

import json
import sys

from core.startup import configure_logging, settings_or_exit
from jobs.maintenance import run_retention
from jobs.runtime import get_runtime


def main() -> int:
    configure_logging(settings_or_exit("retention"), stream=sys.stderr)
    print(json.dumps(run_retention(get_runtime()).as_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
