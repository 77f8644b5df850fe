"""The shop as it is usually written: slow work handed to FastAPI's `BackgroundTasks`."""
