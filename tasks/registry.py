"""The allow-list: the only functions a worker will call for a job.

RQ resolves any dotted path it finds in a job hash; `redis_client.AnalysisJob`
refuses every name that is not listed here. Names only, no imports, so the
list can be read without importing the tasks.
"""

PROCESS_AUDIO_ANALYSIS = "tasks.audio_analysis.process_audio_analysis"
RECONCILE = "tasks.maintenance.reconcile"
DELIVER_CALLBACK = "tasks.callbacks.deliver_callback"

ON_FAILURE = "tasks.spec.on_failure"
ON_STOPPED = "tasks.spec.on_stopped"

# Job function → its `TaskSpec` (outcome hooks), for the callbacks above.
TASK_SPECS = {PROCESS_AUDIO_ANALYSIS: "tasks.audio_analysis.TASK", DELIVER_CALLBACK: "tasks.callbacks.TASK"}

ALLOWED_JOB_FUNCTIONS = frozenset({PROCESS_AUDIO_ANALYSIS, RECONCILE, DELIVER_CALLBACK})
ALLOWED_CALLBACKS = frozenset({ON_FAILURE, ON_STOPPED})
