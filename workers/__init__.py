"""arq worker: mapping, delivery to MagicBell and Magnews, retries and the Magnify poller."""

from workers.worker import WorkerSettings, create_worker

__all__ = ["WorkerSettings", "create_worker"]
