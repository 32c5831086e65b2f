"""Per-motion checkpoints, and reading only what is new in a motion's email metrics.

**Indexes, not positions.** The API pages a motion's metrics by position (``from``), oldest first
or newest first; which one is not documented, so it is learned from ``occurredAt`` (the first and
last metric of a page; until a motion shows two different times, oldest first is assumed and the
checks below correct a wrong guess). Each metric gets a stable *index*: its place counted from the
oldest, computed with the ``total`` of the very response it came in (a page and its total are one
snapshot)::

    oldest first:  index = position             newest first:  index = total - 1 - position

New metrics get the next indexes whichever the order; only where they appear differs (at the end of
the list, or at position 0, pushing every older metric one position further).

**The checkpoint** of a motion (Redis hash ``keys.MAGNIFY_CHECKPOINTS``, one JSON per bare motion id)
says that the metrics with index in ``[low, high)`` are stored, and names the boundary metrics by
event id: ``low_id`` (index ``low``) and ``high_id`` (index ``high - 1``). It is written only after
the ``EventWriter.ingest`` of the metrics it covers has returned, so it never claims a metric that is
not stored; a crash between the two only means a re-read, which the event id's dedupe absorbs.

**A cycle** reads for each motion what the checkpoint does not cover, within the 100,000-metric
window (indexes ``[0, 100000)`` oldest first, ``[total - 100000, total)`` newest first):

- *oldest first*: one request at ``from = high - 1``. It returns the boundary metric, which must
  still be ``high_id`` (else the list changed under us: the checkpoint is dropped and the motion
  read again from the start), and whatever follows it; then pages from ``high`` until ``total``.
  Metrics appended while paging extend ``total`` and are read in the same cycle. The checkpoint
  advances after every page, so a cycle cut short resumes exactly where it stopped.
- *newest first*: one request at ``from = 0`` (a small one, sized to the motion's recent growth:
  only the top of the list can be new). Metrics above ``high`` are new; pages go on below it until
  the page holding index ``high - 1`` (checked against ``high_id``). A metric appended while
  paging pushes older ones down a position, so a later page can repeat metrics already read (they
  are not ingested again) but never skip one. Then ``high`` becomes the ``total`` of the first page;
  metrics that arrived during the cycle are above it and are read next cycle. A motion whose early
  history is not read yet (a first read cut short by the cycle's budget) then continues below
  ``low``, at ``from = total - low - 1`` so the page starts with ``low_id``, advancing the
  checkpoint after every page.

**Floor and high-water mark.** A checkpoint also keeps ``floor_ms`` (metrics that occurred before it
are passed over: stepped past by the checkpoint, not ingested; set from ``MAGBRIDGE_MAGNIFY_START``
when the motion is first read) and ``passed_ms``, the high-water mark: every metric that occurred
before it has been passed. It moves when a checkpoint is saved whose range reaches down to the
oldest metric the window holds (always, oldest first). A reset keeps it as the new checkpoint's
floor, so a reset never delivers again a metric older than what was already passed; the metrics at
the mark's very millisecond are offered again and dedupe absorbs them. (A metric that turns up late
with an ``occurredAt`` older than the mark, and is first seen by a read after a reset, is passed over
too: the price of not re-reading history.)

An unchanged motion therefore costs one request per cycle in either order. A first read is the
same walk from an empty checkpoint. A motion with more metrics than the window is logged and
counted once (``magnify_window_overflow``) with how many metrics cannot be reached: the newest ones
when the API lists oldest first, the oldest ones when it lists newest first.
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any, Literal

import redis.asyncio as aioredis
import structlog

from bridge.events import Envelope, magnify_envelope
from bridge.store import keys
from workers.magnify.client import MagnifyClient

__all__ = ["CHECKPOINTS_KEY", "Budget", "Checkpoint", "CheckpointStore", "MotionReader", "MotionResult", "Order"]

CHECKPOINTS_KEY = keys.MAGNIFY_CHECKPOINTS
_PROBE_MIN = 10

Order = Literal["oldest_first", "newest_first"]
Ingest = Callable[[list[Envelope]], Awaitable[list[bool]]]

_log = structlog.get_logger("magbridge.magnify")


@dataclass(slots=True)
class Checkpoint:
    """What is stored of one motion: indexes ``[low, high)``; see the module docstring."""

    order: Order | None = None
    low: int = 0
    high: int = 0
    low_id: str = ""
    high_id: str = ""
    newest_ms: int = 0
    overflow: bool = False
    polled_at: int = 0  # epoch ms of the last completed read: motions read least recently go first
    recent: int = 0  # newest first: metrics new at the last read, to size the next first page
    # Where this motion starts (MAGBRIDGE_MAGNIFY_START, or the high-water mark after a reset): metrics
    # with an earlier occurredAt are passed over, not ingested. None: never seen, set at its first read.
    floor_ms: int | None = None
    # The high-water mark: every metric with an earlier occurredAt has been passed (ingested or not);
    # it survives a checkpoint reset as the new floor, so a reset re-delivers nothing already passed.
    passed_ms: int = 0
    # Unlisted motions (out of the /motions window): reads in a row that found the motion finished
    # and nothing new; at QUIET_READS it is retired (no longer read unless listed again).
    quiet: int = 0
    retired: bool = False

    @property
    def empty(self) -> bool:
        return self.high <= self.low

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes | None) -> Checkpoint:
        """A stored checkpoint; an unreadable one counts as none (the motion is read again)."""
        if raw is None:
            return cls()
        try:
            values = json.loads(raw)
            values.setdefault("floor_ms", 0)  # a checkpoint from before MAGNIFY_START: already tracked
            checkpoint = cls(**values)
        except (ValueError, TypeError):
            _log.warning("magnify checkpoint unreadable", reason="read again from scratch")
            return cls()
        if checkpoint.order not in (None, "oldest_first", "newest_first") or not 0 <= checkpoint.low <= checkpoint.high:
            return cls()
        return checkpoint


class CheckpointStore:
    """The checkpoints in Redis: one hash, one field per bare motion id."""

    def __init__(self, redis: aioredis.Redis):
        self._redis = redis

    async def load(self, motion_ids: Iterable[str]) -> dict[str, Checkpoint]:
        ids = list(motion_ids)
        if not ids:
            return {}
        raw = await self._redis.hmget(CHECKPOINTS_KEY, ids)  # type: ignore[misc]
        return {motion_id: Checkpoint.from_json(value) for motion_id, value in zip(ids, raw, strict=True)}

    async def save(self, motion_id: str, checkpoint: Checkpoint) -> None:
        await self._redis.hset(CHECKPOINTS_KEY, motion_id, checkpoint.to_json())  # type: ignore[misc]

    async def motion_ids(self) -> list[str]:
        """Every motion that has a checkpoint."""
        return [raw.decode() for raw in await self._redis.hkeys(CHECKPOINTS_KEY)]  # type: ignore[misc]


@dataclass(slots=True)
class Budget:
    """When a cycle must stop starting new requests (``time.monotonic()``), or at once if ``stopped``."""

    deadline: float
    stopped: bool = False

    def exhausted(self) -> bool:
        return self.stopped or time.monotonic() >= self.deadline


@dataclass(slots=True)
class MotionResult:
    """What reading one motion did."""

    requests: int = 0
    ingested: int = 0
    duplicates: int = 0
    newest_ms: int = 0
    overflow: bool = False  # newly found past the window this time
    complete: bool = True  # False when the budget ran out before the motion was read up to date
    resets: int = 0
    skipped: int = 0  # older than the motion's floor (MAGBRIDGE_MAGNIFY_START or a reset's high-water mark)


class _Mismatch(Exception):
    """The list no longer matches the checkpoint (order changed, or a metric moved): read again."""


class _Page:
    """One response: its metrics and the index of each; envelopes (event ids) are made when needed,
    so that checking an unchanged motion hashes one metric, not a page of them."""

    def __init__(self, start: int, total: int, order: Order, metrics: list[dict[str, Any]]):
        self.start = start
        self.total = total
        self.order = order
        self.metrics = metrics
        self._envelopes: dict[int, Envelope] = {}

    def __len__(self) -> int:
        return len(self.metrics)

    def envelope(self, offset: int) -> Envelope:
        envelope = self._envelopes.get(offset)
        if envelope is None:
            envelope = self._envelopes[offset] = magnify_envelope(self.metrics[offset])
        return envelope

    def id(self, offset: int) -> str:
        return self.envelope(offset).id

    def index(self, offset: int) -> int:
        position = self.start + offset
        return position if self.order == "oldest_first" else self.total - 1 - position

    def offset(self, index: int) -> int | None:
        """Where metric ``index`` is in this page, if it is."""
        position = index if self.order == "oldest_first" else self.total - 1 - index
        offset = position - self.start
        return offset if 0 <= offset < len(self.metrics) else None

    def between(self, low: int, high: int) -> list[tuple[int, Envelope]]:
        """``(index, envelope)`` of the metrics with ``low <= index < high``, in page order."""
        return [(self.index(o), self.envelope(o)) for o in range(len(self.metrics)) if low <= self.index(o) < high]

    def listed_order(self) -> Order | None:
        """The order this page shows, if its first and last times differ."""
        times = [ms for ms in map(_occurred_ms, self.metrics) if ms is not None]
        if len(times) < 2 or times[0] == times[-1]:
            return None
        return "oldest_first" if times[-1] > times[0] else "newest_first"


def _occurred_ms(metric: dict[str, Any]) -> int | None:
    value = metric.get("occurredAt")
    return int(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class MotionReader:
    """Reads one motion's new metrics into the event store and advances its checkpoint."""

    def __init__(
        self,
        client: MagnifyClient,
        store: CheckpointStore,
        ingest: Ingest,
        *,
        now_ms: Callable[[], int],
        start_ms: int = 0,
    ):
        self.client = client
        self.store = store
        self.ingest = ingest
        self.now_ms = now_ms
        self.start_ms = start_ms  # the floor of a motion never seen (MAGBRIDGE_MAGNIFY_START)

    async def read(self, motion_id: str, checkpoint: Checkpoint, budget: Budget) -> MotionResult:
        """Bring ``motion_id`` up to date as far as ``budget`` allows; the checkpoint is saved as it goes."""
        result = MotionResult()
        if checkpoint.floor_ms is None:
            checkpoint.floor_ms = self.start_ms
        try:
            await _MotionRun(self, motion_id, checkpoint, budget, result).run()
        except _Mismatch as reason:
            # The high-water mark becomes the floor: the re-read passes over what was passed already.
            floor = max(checkpoint.floor_ms or 0, checkpoint.passed_ms)
            _log.warning("magnify checkpoint reset", motion_id=motion_id, reason=str(reason), floor_ms=floor)
            result.resets += 1
            fresh = Checkpoint(
                overflow=checkpoint.overflow,
                floor_ms=floor,
                passed_ms=checkpoint.passed_ms,
                newest_ms=checkpoint.newest_ms,
                quiet=checkpoint.quiet,
            )
            try:
                await _MotionRun(self, motion_id, fresh, budget, result).run()
            except _Mismatch as again:
                # The list changes under every read: leave it for the next cycle rather than loop.
                _log.warning("magnify motion inconsistent", motion_id=motion_id, reason=str(again))
                result.complete = False
        return result


class _MotionRun:
    """One motion in one cycle; see the module docstring for the walk."""

    def __init__(
        self, reader: MotionReader, motion_id: str, checkpoint: Checkpoint, budget: Budget, result: MotionResult
    ):
        self.reader = reader
        self.motion_id = motion_id
        self.cp = checkpoint
        self.budget = budget
        self.result = result
        self.order: Order = checkpoint.order or "oldest_first"
        self.limits = reader.client.limits
        self.latest_total = 0  # the largest total seen in this run: where positions are now

    async def run(self) -> None:
        cp = self.cp
        fresh = cp.empty
        if fresh:
            page = await self.fetch(0, learn=True)
        elif self.order == "newest_first":
            # Only the top of the list can be new: a small first page, sized to the motion's recent
            # growth, checks an unchanged motion without fetching a hundred metrics it already has.
            page = await self.fetch(0, size=max(_PROBE_MIN, 2 * cp.recent + 1))
        else:
            page = await self.fetch(min(cp.high - 1, self.limits.metrics_from_max))
        if page.total == 0 and fresh:
            cp.polled_at = self.reader.now_ms()
            await self.save()
            return
        if self.order == "oldest_first":
            await self.forward(page)
        else:
            await self.from_the_top(page)
        if self.result.complete:
            cp.polled_at = self.reader.now_ms()
            await self.save()

    async def fetch(self, start: int, *, learn: bool = False, size: int | None = None) -> _Page:
        size = min(size or self.limits.metrics_size_max, self.limits.metrics_size_max)
        metrics_page = await self.reader.client.email_metrics(
            self.motion_id, start=start, size=size, deadline=self.budget.deadline
        )
        self.result.requests += 1
        page = _Page(start, metrics_page.total, self.order, metrics_page.metrics)
        listed = page.listed_order()
        if listed is not None and listed != self.order:
            if not learn:
                raise _Mismatch(f"the API lists {listed.replace('_', ' ')}, the checkpoint says {self.order}")
            self.order = page.order = listed
        if listed is not None:
            self.cp.order = listed
        self.latest_total = max(self.latest_total, page.total)
        self.check_window(page.total)
        return page

    async def store(self, envelopes: list[Envelope]) -> None:
        """Ingest ``envelopes``, passing over those older than the motion's floor."""
        if not envelopes:
            return
        floor = self.cp.floor_ms or 0
        kept = [e for e in envelopes if (_occurred_ms(e.payload) or 0) >= floor] if floor else envelopes
        self.result.skipped += len(envelopes) - len(kept)
        newest = max((ms for ms in (_occurred_ms(e.payload) for e in envelopes) if ms is not None), default=0)
        self.cp.newest_ms = max(self.cp.newest_ms, newest)
        if not kept:
            return
        flags = await self.reader.ingest(kept)
        new = sum(flags)
        self.result.ingested += new
        self.result.duplicates += len(flags) - new
        kept_newest = max((ms for ms in (_occurred_ms(e.payload) for e in kept) if ms is not None), default=0)
        self.result.newest_ms = max(self.result.newest_ms, kept_newest)

    async def save(self) -> None:
        cp = self.cp
        # The high-water mark moves only while the range read reaches down to the oldest metric the
        # window holds (always, oldest first), so everything older than its newest metric is passed.
        if self.order == "oldest_first" or cp.low <= max(0, self.latest_total - self.limits.metrics_window):
            cp.passed_ms = max(cp.passed_ms, cp.newest_ms)
        await self.reader.store.save(self.motion_id, cp)

    def check_window(self, total: int) -> None:
        window = self.limits.metrics_window
        if total <= window or self.cp.overflow:
            return
        self.cp.overflow = self.result.overflow = True
        lost = "newest" if self.order == "oldest_first" else "oldest"
        _log.warning(
            "magnify window overflow",
            motion_id=self.motion_id,
            total=total,
            window=window,
            unreachable=total - window,
            unreachable_end=lost,
            order=self.order,
        )

    def verify(self, page: _Page, index: int, expected: str) -> None:
        """Metric ``index`` must be in ``page`` and still be ``expected``."""
        offset = page.offset(index)
        if offset is None:
            raise _Mismatch(f"metric #{index} is not where the checkpoint expects it (total {page.total})")
        if page.id(offset) != expected:
            raise _Mismatch(f"metric #{index} is not the one the checkpoint recorded")

    # --- oldest first ---------------------------------------------------------------------------

    async def forward(self, page: _Page) -> None:
        """Oldest first: verify the boundary, then store every page up to ``total`` (or the window)."""
        cp = self.cp
        if not cp.empty:
            if cp.low != 0:
                raise _Mismatch("an oldest-first checkpoint must start at the first metric")
            self.verify(page, cp.high - 1, cp.high_id)
        while True:
            await self.absorb_forward(page)
            end = min(page.total, self.limits.metrics_window)
            if cp.high >= end:
                return
            if self.budget.exhausted():
                self.result.complete = False
                return
            page = await self.fetch(min(cp.high, self.limits.metrics_from_max))
            if page.offset(cp.high) is None:
                if not page:
                    raise _Mismatch(f"the list ended at {page.start}, before metric #{cp.high}")
                raise _Mismatch(f"the page at {page.start} does not continue from metric #{cp.high}")
            if cp.high > 0:
                offset = page.offset(cp.high - 1)
                if offset is not None and page.id(offset) != cp.high_id:
                    raise _Mismatch(f"metric #{cp.high - 1} changed while paging")

    async def absorb_forward(self, page: _Page) -> None:
        cp = self.cp
        new = page.between(cp.high, page.total)
        if not new:
            return
        await self.store([envelope for _, envelope in new])
        if cp.empty:
            cp.low, cp.low_id = new[0][0], new[0][1].id
        cp.high, cp.high_id = new[-1][0] + 1, new[-1][1].id
        await self.save()

    # --- newest first ---------------------------------------------------------------------------

    async def from_the_top(self, first: _Page) -> None:
        """Newest first: store what is above ``high``, then continue below ``low`` if history is missing."""
        cp = self.cp
        if cp.empty:
            if not first:
                self.result.complete = False
                return
            cp.low = cp.high = first.total
            cp.high_id = first.id(0)
            page: _Page | None = first
        else:
            if not await self.down_to_high(first):
                return
            page = await self.fetch_from_low(first.total, check=True)
        while page is not None:
            await self.absorb_downward(page)
            page = await self.fetch_from_low(page.total, check=False)

    async def down_to_high(self, first: _Page) -> bool:
        """Store metrics with index ``>= high``, from position 0 down to metric ``high - 1``.

        True when done; ``high`` then moves to the first page's ``total``. False when the budget ran
        out first: nothing is saved (a partial read above ``high`` is not one range) and the next
        cycle repeats it, which dedupe absorbs.
        """
        cp = self.cp
        page = first
        below = first.total  # the lowest index stored by this walk: later pages may repeat a few
        while True:
            joined = page.offset(cp.high - 1)
            await self.store([envelope for _, envelope in page.between(cp.high, below)])
            below = min(below, page.index(len(page) - 1)) if page else below
            if joined is not None:
                if page.id(joined) != cp.high_id:
                    raise _Mismatch(f"metric #{cp.high - 1} is not the one the checkpoint recorded")
                break
            if not page or page.index(len(page) - 1) < cp.high - 1:
                raise _Mismatch(f"metric #{cp.high - 1} is not where the checkpoint expects it")
            next_start = page.start + len(page)
            if next_start > self.limits.metrics_from_max:
                # More new metrics since the last cycle than the window holds: those between are out
                # of reach (check_window has counted the motion). A new range starts at the top.
                _log.warning("magnify metrics out of reach", motion_id=self.motion_id, below_index=page.index(0))
                cp.low, cp.low_id = page.index(len(page) - 1), page.id(len(page) - 1)
                break
            if self.budget.exhausted():
                self.result.complete = False
                return False
            page = await self.fetch(next_start)
        if (cp.high, cp.high_id) != (first.total, first.id(0)):
            cp.recent = first.total - cp.high
            cp.high, cp.high_id = first.total, first.id(0)
            await self.save()
        else:
            cp.recent = 0
        return True

    async def fetch_from_low(self, total: int, *, check: bool) -> _Page | None:
        """The page that goes on below metric ``low``, or None when nothing is missing below it.

        ``check`` (resuming from a saved checkpoint) starts the page one metric earlier, at ``low``
        itself, and verifies it is still ``low_id``. The position comes from the latest ``total``
        known; when more metrics arrived meanwhile than the page can absorb, it is asked again.
        """
        cp = self.cp
        total = max(total, self.latest_total)
        for _ in range(3):
            if cp.low <= max(0, total - self.limits.metrics_window):
                return None
            if self.budget.exhausted():
                self.result.complete = False
                return None
            start = min(total - cp.low - (1 if check else 0), self.limits.metrics_from_max)
            page = await self.fetch(start)
            if page.offset(cp.low - 1) is None:
                if page.total > total:
                    total = page.total  # shifted by arrivals past this page: ask again
                    continue
                raise _Mismatch(f"metric #{cp.low - 1} is not where the checkpoint expects it")
            if check:
                self.verify(page, cp.low, cp.low_id)
            return page
        raise _Mismatch(f"metric #{cp.low} keeps moving faster than it can be read")

    async def absorb_downward(self, page: _Page) -> None:
        cp = self.cp
        floor = max(0, page.total - self.limits.metrics_window)
        below = page.between(floor, cp.low)
        if not below:
            return
        await self.store([e for _, e in below])
        cp.low, cp.low_id = below[-1][0], below[-1][1].id  # newest first: the last is the oldest
        await self.save()
