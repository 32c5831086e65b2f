"""arq worker: delivery jobs, mapping, delivery to MagicBell and Magnews, retries and the Magnify poller.

Run it with ``magbridge worker`` (``workers.supervisor``) or arq's own ``arq workers.worker.WorkerSettings``.
"""

__all__: list[str] = []
