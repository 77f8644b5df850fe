#!/usr/bin/env bash
# Starts RQ workers for the audio analysis service.
#
#   ./start_worker.sh [-n COUNT] [-q QUEUES] [--burst] [--no-fork]
#
#   -n, --count N     workers to run, in RQ's worker pool            [env WORKER_COUNT, default 2]
#   -q, --queues Q    comma-separated, highest priority first          [env WORKER_QUEUES, default the
#                                                                      PRIORITY_QUEUES: critical,high_priority,audio_analysis,low]
#   --burst           drain the queues, then exit
#   --no-fork         run each job in the warm worker process, no fork per job  [env WORKER_MODE=simple,
#                                                                      default fork]
#
# Every other setting (REDIS_URL, DATABASE_URL, RQ_JOB_TIMEOUT, ...) comes from the environment
# or .env, exactly as for the API. SIGTERM/Ctrl-C: finish the current job, then exit (warm
# shutdown); a second signal stops at once and the job is retried later.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-$here/.venv/bin/python}"
[ -x "$python" ] || python="$(command -v python3)"
if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'
    exit 0
fi
cd "$here"
exec "$python" -m workers.main "$@"
