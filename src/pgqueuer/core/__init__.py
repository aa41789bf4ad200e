"""The engine: worker loop, executors, retry policies, scheduler, maintenance."""
