"""Every Redis key the bridge writes, in one place. No other module spells a key.

One Redis database per bridge. Lua scripts get their key names from here (as ``KEYS`` or as
prefixes in ``ARGV``), so they never spell one either. The scripts name keys they compute, so Redis
Cluster is not supported.

=============================  ======  ===========================  ==================================
key                            type    expiry                       owner: what it holds
=============================  ======  ===========================  ==================================
``mb:event:{id}``              hash    retention; none while dead   store: envelope, ``payload``,
                                                                    ``status``, ``job`` (the delivery
                                                                    job that owns it), ``generation``,
                                                                    ``runs``, ``tries``, ``replays``
``mb:actions:{id}``            hash    as its event                 worker: action key -> JSON record
``mb:events``                  zset    trimmed to retention         store: event ids by receipt (ms)
``mb:dead``                    zset    none (until replayed)        worker: dead letters by time (ms)
``mb:pending``                 zset    none (members leave)         store: events not final, by when
                                                                    they are due (ms); the sweeper's
``mb:intake``                  string  none (deleted when begun)    store: the job taking new events
``mb:batch:{job}``             list    retention; deleted when done store: the event ids of a job
``mb:stats``                   hash    none                         all: counters (``bridge.store.stats``)
``mb:gauges``                  hash    none                         all: latest gauge values
``mb:hist:{name}``             hash    none                         all: histogram buckets
``mb:ledger:{request key}``    string  retention                    worker: a delivered request
``mb:gate:{dest}:rate``        string  a few seconds                worker: next free rate slot (ms)
``mb:gate:{dest}:holders``     zset    members expire               worker: requests in flight
``mb:gate:{dest}:breaker``     hash    none (deleted on success)    worker: failures, ``open_until``
``mb:gate:{dest}:probe``       string  the cooldown                 worker: the half-open probe
``mb:gate:{dest}:paused``      hash    none (deleted on resume)     worker: credentials refused (401/
                                                                    403): ``since``, ``at``, ``status``,
                                                                    ``credential`` (fingerprint),
                                                                    ``retry_at``, ``probe``, ``probe_until``
``mb:magnify:lock``            string  the poll's lease             worker: which worker polls
``mb:magnify:slot``            string  none                         worker: the last slot polled
``mb:magnify:checkpoints``     hash    none                         worker: motion id -> checkpoint
``mb:magnify:newest_ms``       string  none                         worker: newest metric ingested
``mb:magnify:auth``            string  none                         worker: the last token attempt
``mb:magnews:access_token``    string  the token's lifetime         worker: the cached access token
``mb:magnews:refresh_token``   string  none                         worker: the rotated refresh token
``mb:magnews:token_lock``      string  the refresh's lease          worker: one refresh at a time
``mb:worker:heartbeat``        string  a few seconds                worker (arq): liveness for readiness
=============================  ======  ===========================  ==================================

arq keeps its own keys (its queue, job records, in-progress and retry markers) under the names of
``arq.constants``; the bridge reaches them only through arq's public API.
"""

from __future__ import annotations

from arq.constants import default_queue_name

__all__ = [
    "ACTIONS_PREFIX",
    "BATCH_PREFIX",
    "DEAD_INDEX",
    "DESTINATIONS",
    "EVENTS_INDEX",
    "EVENT_PREFIX",
    "GAUGES",
    "HIST_PREFIX",
    "INTAKE",
    "LEDGER_PREFIX",
    "MAGNEWS_ACCESS_TOKEN",
    "MAGNEWS_REFRESH_TOKEN",
    "MAGNEWS_TOKEN_LOCK",
    "MAGNIFY_AUTH",
    "MAGNIFY_CHECKPOINTS",
    "MAGNIFY_LOCK",
    "MAGNIFY_NEWEST_MS",
    "MAGNIFY_SLOT",
    "MAGNIFY_START",
    "PENDING_INDEX",
    "QUEUE_NAME",
    "STATS",
    "WORKER_HEARTBEAT",
    "actions",
    "batch",
    "event",
    "gate",
    "gate_paused",
    "ledger",
]

EVENT_PREFIX = "mb:event:"
ACTIONS_PREFIX = "mb:actions:"
EVENTS_INDEX = "mb:events"
DEAD_INDEX = "mb:dead"
PENDING_INDEX = "mb:pending"
INTAKE = "mb:intake"
BATCH_PREFIX = "mb:batch:"

STATS = "mb:stats"
GAUGES = "mb:gauges"
HIST_PREFIX = "mb:hist:"

LEDGER_PREFIX = "mb:ledger:"

MAGNIFY_LOCK = "mb:magnify:lock"
MAGNIFY_SLOT = "mb:magnify:slot"
MAGNIFY_CHECKPOINTS = "mb:magnify:checkpoints"
MAGNIFY_NEWEST_MS = "mb:magnify:newest_ms"
MAGNIFY_AUTH = "mb:magnify:auth"
MAGNIFY_START = "mb:magnify:start"  # epoch ms of the first poll: MAGBRIDGE_MAGNIFY_START=now starts there

MAGNEWS_ACCESS_TOKEN = "mb:magnews:access_token"
MAGNEWS_REFRESH_TOKEN = "mb:magnews:refresh_token"
MAGNEWS_TOKEN_LOCK = "mb:magnews:token_lock"

# arq's worker writes its heartbeat here (its ``health_check_key``) and reads jobs from arq's default
# queue; both are passed to arq as settings.
WORKER_HEARTBEAT = "mb:worker:heartbeat"
QUEUE_NAME: str = default_queue_name


def event(event_id: str) -> str:
    return EVENT_PREFIX + event_id


def actions(event_id: str) -> str:
    return ACTIONS_PREFIX + event_id


def batch(job_id: str) -> str:
    return BATCH_PREFIX + job_id


def ledger(request_key: str) -> str:
    return LEDGER_PREFIX + request_key


def gate(destination: str) -> list[str]:
    """The keys of one destination's gate, in the order its scripts take them: rate, holders,
    breaker, probe."""
    prefix = f"mb:gate:{destination}:"
    return [prefix + "rate", prefix + "holders", prefix + "breaker", prefix + "probe"]


DESTINATIONS = ("magicbell", "magnews")
"""The destinations that have a gate (and so may be paused)."""


def gate_paused(destination: str) -> str:
    """A destination paused because it refused our credentials (``workers.destinations.limits``)."""
    return f"mb:gate:{destination}:paused"
