"""Every Redis key the bridge writes, in one place. No other module spells a key.

One Redis database per bridge. Lua scripts get their key names from here (as ``KEYS`` or as
prefixes in ``ARGV``), so they never spell one either. The scripts name keys they compute, so Redis
Cluster is not supported.

=============================  ======  ===========================  ==================================
key                            type    expiry                       owner: what it holds
=============================  ======  ===========================  ==================================
``mb:event:{id}``              hash    dedupe window while in       store: envelope, ``payload``,
                                       flight; record retention     ``status``, ``job`` (the delivery
                                       once final; none while dead  job that owns it), ``generation``,
                                                                    ``runs``, ``tries``, ``replays``
``mb:seen:{id}``               string  the dedupe window            store: the dedupe marker: receipt
                                                                    time (ms) of the first copy
``mb:actions:{id}``            hash    as its event                 worker: action key -> JSON record
``mb:events``                  zset    trimmed to record retention  store: event ids by receipt (ms)
``mb:dead``                    zset    none (until replayed)        worker: dead letters by time (ms)
``mb:pending``                 zset    none (members leave)         store: events not final, by when
                                                                    they are due (ms); the sweeper's
``mb:intake``                  string  none (deleted when begun)    store: the job taking new events
``mb:batch:{job}``             list    retention; deleted when done store: the event ids of a job
``mb:stats``                   hash    none                         store: ingest totals by source,
                                                                    replays (``bridge.store.stats``)
``mb:replica_waits``           string  none                         store: replica waits begun, a write
                                                                    of the connection that WAITs
                                                                    (``bridge.store.replicas``)
``mb:gauges``                  hash    none                         worker: bridge-wide gauges (pauses,
                                                                    the last Magnify poll)
``mb:finished:{minute}``       hash    two hours                    worker: events that reached a final
                                                                    status in that minute (epoch
                                                                    minutes): status -> count
                                                                    (``bridge.store.throughput``)
``mb:ledger:{request key}``    string  the dedupe window            worker: a delivered request
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
``mb:magnify:last_cycle``      string  none                         worker: the last poll cycle's figures
                                                                    (JSON), for the console
``mb:magnews:access_token``    string  the token's lifetime         worker: the cached access token
``mb:magnews:refresh_token``   string  none                         worker: the rotated refresh token
``mb:magnews:token_lock``      string  the refresh's lease          worker: one refresh at a time
``mb:magnews:contact:{db}:     string  MAGNEWS_CONTACT_CACHE_SEC-   worker: the primary key of the
{field}:{value}``                      ONDS; a miss: ..._MISS_SECONDS contact whose ``field`` holds
                                                                    ``value`` (``{key}:{pk}``), or ""
                                                                    for no such contact
``mb:magnews:order:{db}:       hash    retention, from the last     worker: latest wins per contact:
{field}:{value}``                      merge admitted               ``f:{field}`` -> ``{ms}:{event}``
                                                                    of the newest merge admitted,
                                                                    ``holder``, ``holder_until``
``mb:worker:heartbeat``        string  a few seconds                worker (arq): liveness for readiness
``mb:console:session:{sid}``   string  the session's lifetime       web: a console login (deleted on
                                                                    logout), ``bridge.web.console``
=============================  ======  ===========================  ==================================

arq keeps its own keys (its queue, job records, in-progress and retry markers) under the names of
``arq.constants``; the bridge reaches them only through arq's public API.
"""

from __future__ import annotations

import hashlib

from arq.constants import default_queue_name

__all__ = [
    "ACTIONS_PREFIX",
    "BATCH_PREFIX",
    "CONSOLE_SESSION_PREFIX",
    "DEAD_INDEX",
    "DESTINATIONS",
    "EVENTS_INDEX",
    "EVENT_PREFIX",
    "FINISHED_PREFIX",
    "GAUGES",
    "INTAKE",
    "LEDGER_PREFIX",
    "MAGNEWS_ACCESS_TOKEN",
    "MAGNEWS_CONTACT_PREFIX",
    "MAGNEWS_ORDER_PREFIX",
    "MAGNEWS_REFRESH_TOKEN",
    "MAGNEWS_TOKEN_LOCK",
    "MAGNIFY_AUTH",
    "MAGNIFY_CHECKPOINTS",
    "MAGNIFY_LAST_CYCLE",
    "MAGNIFY_LOCK",
    "MAGNIFY_NEWEST_MS",
    "MAGNIFY_SLOT",
    "MAGNIFY_START",
    "PENDING_INDEX",
    "QUEUE_NAME",
    "REPLICA_WAITS",
    "SEEN_PREFIX",
    "STATS",
    "WORKER_HEARTBEAT",
    "actions",
    "batch",
    "console_session",
    "event",
    "finished",
    "gate",
    "gate_paused",
    "ledger",
    "magnews_contact",
    "magnews_order",
    "seen",
]

EVENT_PREFIX = "mb:event:"
# The dedupe marker outlives the record: a small string for the window, the record for less.
SEEN_PREFIX = "mb:seen:"
ACTIONS_PREFIX = "mb:actions:"
EVENTS_INDEX = "mb:events"
DEAD_INDEX = "mb:dead"
PENDING_INDEX = "mb:pending"
INTAKE = "mb:intake"
BATCH_PREFIX = "mb:batch:"

STATS = "mb:stats"
# Incremented before each WAIT, on the same connection: WAIT counts that connection's writes only.
REPLICA_WAITS = "mb:replica_waits"
GAUGES = "mb:gauges"
FINISHED_PREFIX = "mb:finished:"

LEDGER_PREFIX = "mb:ledger:"

MAGNIFY_LOCK = "mb:magnify:lock"
MAGNIFY_SLOT = "mb:magnify:slot"
MAGNIFY_CHECKPOINTS = "mb:magnify:checkpoints"
MAGNIFY_NEWEST_MS = "mb:magnify:newest_ms"
MAGNIFY_AUTH = "mb:magnify:auth"
MAGNIFY_LAST_CYCLE = "mb:magnify:last_cycle"
MAGNIFY_START = "mb:magnify:start"  # epoch ms of the first poll: MAGBRIDGE_MAGNIFY_START=now starts there

MAGNEWS_ACCESS_TOKEN = "mb:magnews:access_token"
MAGNEWS_REFRESH_TOKEN = "mb:magnews:refresh_token"
MAGNEWS_TOKEN_LOCK = "mb:magnews:token_lock"
MAGNEWS_CONTACT_PREFIX = "mb:magnews:contact:"
MAGNEWS_ORDER_PREFIX = "mb:magnews:order:"

# arq's worker writes its heartbeat here (its ``health_check_key``) and reads jobs from arq's default
# queue; both are passed to arq as settings.
WORKER_HEARTBEAT = "mb:worker:heartbeat"
QUEUE_NAME: str = default_queue_name

CONSOLE_SESSION_PREFIX = "mb:console:session:"


def event(event_id: str) -> str:
    return EVENT_PREFIX + event_id


def seen(event_id: str) -> str:
    return SEEN_PREFIX + event_id


def actions(event_id: str) -> str:
    return ACTIONS_PREFIX + event_id


def batch(job_id: str) -> str:
    return BATCH_PREFIX + job_id


def ledger(request_key: str) -> str:
    return LEDGER_PREFIX + request_key


def finished(minute: int) -> str:
    """Events finished in one minute (``minute``: epoch milliseconds // 60000)."""
    return f"{FINISHED_PREFIX}{minute}"


def console_session(session_id: str) -> str:
    return CONSOLE_SESSION_PREFIX + session_id


def _contact(database: int, field: str, value: str) -> str:
    # A long or unprintable value is hashed: a key stays short and readable in redis-cli.
    if len(value) > 64 or not value.isprintable():
        value = "sha256:" + hashlib.sha256(value.encode()).hexdigest()
    return f"{database}:{field}:{value}"


def magnews_contact(database: int, field: str, value: str) -> str:
    """The cached answer to "which contact of ``database`` has ``field`` = ``value``"."""
    return MAGNEWS_CONTACT_PREFIX + _contact(database, field, value)


def magnews_order(database: int, field: str, value: str) -> str:
    """Latest wins: the newest merge admitted for the contact ``field`` = ``value``, per field written."""
    return MAGNEWS_ORDER_PREFIX + _contact(database, field, value)


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
