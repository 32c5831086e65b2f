"""The replica wait: acknowledge a webhook only once enough replicas hold what was stored for it.

Redis replicates asynchronously: a primary that dies just after answering can take writes with it
that no replica has yet, and a Sentinel failover then promotes a replica without them. With
``REDIS_MIN_REPLICAS_ACK`` = N > 0 the receiver, after the ingest script and the job enqueue
(``bridge.store.ingest``) have returned, sends ``WAIT N timeout`` and answers 200 only if N replicas
confirmed; otherwise 503 (``ReplicasUnconfirmed``). The events are stored on the primary then, so the
sender's resend is a duplicate, acknowledged once replicas confirm it (or stored again on the new
primary, if the old one is gone).

``WAIT`` counts what replicas acknowledged of the writes of *its own connection*: Redis remembers,
per connection, the replication offset just after that connection's last write, and waits for
replicas at or past it. redis-py hands each command (and arq's enqueue pipeline) whatever pooled
connection is free, so the ingest script and the enqueue may have run on other connections. One
pipeline therefore makes a write of its own (``INCR keys.REPLICA_WAITS``) and then ``WAIT`` on the
same connection: that write's offset lies past every write already answered on any connection
(replication is one ordered stream), so its acknowledgement covers the script's and the enqueue's
writes too. One wait per ingest batch (``bridge.web.ingest_batcher``), however many requests it serves.
The one case it cannot tell: a failover completed entirely between the script's answer and the
``WAIT`` (seconds of detection and promotion, against the microseconds between the two) would send
the ``WAIT`` to the new primary.
"""

from __future__ import annotations

from arq.connections import ArqRedis
from redis.exceptions import RedisError

from bridge.store import keys
from config.errors import ReplicasUnconfirmed, StoreUnavailable

__all__ = ["ReplicaWait"]


class ReplicaWait:
    def __init__(self, redis: ArqRedis, *, replicas: int, timeout_ms: int):
        if replicas < 1 or timeout_ms < 1:
            raise ValueError("a replica wait needs at least one replica and a timeout (0 would block forever)")
        self._redis = redis
        self.replicas = replicas
        self.timeout_ms = timeout_ms

    async def confirm(self) -> int:
        """Replicas that hold every write answered before this call; ``ReplicasUnconfirmed`` when fewer
        than required confirmed within the timeout, ``StoreUnavailable`` when Redis failed."""
        try:
            async with self._redis.pipeline(transaction=False) as pipe:
                pipe.incr(keys.REPLICA_WAITS)
                pipe.execute_command("WAIT", self.replicas, self.timeout_ms)
                _, confirmed = await pipe.execute()
        except (RedisError, OSError) as exc:
            raise StoreUnavailable(f"redis: {exc}") from exc
        if int(confirmed) < self.replicas:
            raise ReplicasUnconfirmed(
                f"{confirmed} of {self.replicas} replicas confirmed the write within {self.timeout_ms} ms",
                required=self.replicas,
                confirmed=int(confirmed),
                timeout_ms=self.timeout_ms,
            )
        return int(confirmed)
