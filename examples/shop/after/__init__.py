"""The same shop on the kit: the tasks run on RQ workers or in-process, by `USE_RQ_QUEUE`."""
