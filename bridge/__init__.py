"""The bridge's service side. Each folder is one part of the architecture:

- ``bridge.web``: the aiohttp service (webhook receiver, probes, metrics, admin API);
- ``bridge.store``: the event store and the delivery queue in Redis (every key in ``bridge.store.keys``);
- ``bridge.cli``: the ``magbridge`` command line;
- ``bridge.simulators``: the three vendor APIs as local aiohttp servers, for tests, demo and staging.

``bridge.events`` (envelopes), ``bridge.coalesce``, ``bridge.logs`` and ``bridge.labels`` are shared by all.
"""

__all__: list[str] = []
