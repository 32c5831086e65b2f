"""A private redis-server for the tests: started on a free port in a temporary folder, never shared.

Tests flush it freely because nothing else uses it; outage tests stop and restart it. The server
itself is the product's (``bridge.store.private_redis``, which ``magbridge demo`` runs on too); this
only says, when the binary is missing, that the tests need it.
"""

from __future__ import annotations

from pathlib import Path

from bridge.store.private_redis import PrivateRedis, RedisServerMissing, free_port

__all__ = ["RedisServer", "free_port"]


class RedisServer(PrivateRedis):
    def __init__(self, workdir: Path, *, appendonly: bool = False):
        try:
            super().__init__(workdir, appendonly=appendonly)
        except RedisServerMissing:
            raise RuntimeError(
                "redis-server is not installed; the tests need a local Redis binary (make install adds it as root)"
            ) from None
