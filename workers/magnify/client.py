"""Magnify Partner API client: motions, one motion, and a motion's email metrics, with typed errors.

Every call is a ``GET`` with a bearer token from :class:`~workers.magnify.auth.TokenManager`.

- **401**: the token is dropped and the call is tried once more with a fresh one.
- **408, 429, 5xx, no answer**: tried again with exponential backoff and full jitter, never sooner
  than the server's ``Retry-After``, up to ``RetryPolicy.attempts`` tries, and never past the
  caller's ``deadline`` (a poll cycle has a budget).
- **any other error**: :class:`~config.errors.MagnifyApiError` at once, carrying the documented
  error body (``type``, ``message``, ``detail``, ``status``, ``instance``, ``validationErrors``).
- **404 on email-metrics**: the documented "no email metrics available": an empty page, not an error.

Motion ids: the list shows ``motion_<uuid>`` while the path wants the bare UUID (the documented
pattern; ``/motions/motion_…`` is a 400). :func:`parse_motion_id` accepts either form, checks the
UUID against the pattern and returns it bare; that is the id used everywhere in the bridge.

Paging stays inside the documented limits (:class:`MagnifyLimits`): for motions ``size`` ≤ 1000 and
``from`` ≤ 100, so one state lists at most 1100 motions (the general notes cap every page at 100
items: a 400 naming ``size`` makes the client use 100 from then on, so 200 motions per state); for
metrics ``size`` ≤ 100 and ``from`` ≤ 99,900, so at most the first 100,000 metrics of a motion can be read.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import aiohttp
import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from config.errors import (
    DeliveryError,
    InvalidMotionId,
    MagnifyApiError,
    MagnifyAuthError,
    TransientDeliveryError,
)
from config.settings import Settings
from workers.destinations.http import call_api
from workers.magnify.auth import RequestListener, TokenManager, status_class
from workers.retry import backoff_seconds

__all__ = [
    "MOTION_ID_PATTERN",
    "MOTION_STATES",
    "MagnifyClient",
    "MagnifyLimits",
    "MetricsPage",
    "Motion",
    "MotionList",
    "MotionsPage",
    "RetryPolicy",
    "parse_motion_id",
]

MOTION_ID_PATTERN = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
MOTION_ID_PREFIX = "motion_"
GENERAL_PAGE_SIZE_MAX = 100  # the spec's general notes: "Maximum page size is 100 items"
MOTION_STATES = ("COMPLETED", "DRAFT", "EXECUTING", "SCHEDULED", "FAILED", "ARCHIVED", "CANCELLED")

_log = structlog.get_logger("magbridge.magnify")


def parse_motion_id(raw: str) -> str:
    """The bare UUID of ``motion_<uuid>`` or ``<uuid>``; ``InvalidMotionId`` for anything else."""
    bare = raw.removeprefix(MOTION_ID_PREFIX)
    if not MOTION_ID_PATTERN.match(bare):
        raise InvalidMotionId(f"magnify: motion id {raw[:80]!r} does not match {MOTION_ID_PATTERN.pattern}")
    return bare


@dataclass(frozen=True, slots=True)
class MagnifyLimits:
    """The documented paging limits. Tests may lower them to reach a window cheaply."""

    motions_size_max: int = 1000
    motions_from_max: int = 100
    metrics_size_max: int = 100
    metrics_from_max: int = 99_900

    @property
    def metrics_window(self) -> int:
        """How many metrics of one motion can be read at all: 100,000."""
        return self.metrics_from_max + self.metrics_size_max


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 4
    base_seconds: float = 0.5
    cap_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class Motion:
    """A motion; ``id`` is the bare UUID."""

    id: str
    name: str
    state: str
    version: int | None = None
    created_at: int | None = None


@dataclass(frozen=True, slots=True)
class MotionsPage:
    total: int
    motions: list[Motion]
    invalid_ids: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class MotionList:
    """Every motion of one state that the paging limits reach; ``unreachable`` are the rest."""

    total: int
    motions: list[Motion]
    unreachable: int


@dataclass(frozen=True, slots=True)
class MetricsPage:
    """One page of a motion's email metrics (raw ``EmailMetricDataPoint`` objects) and the total."""

    total: int
    metrics: list[dict[str, Any]]


class _MotionData(BaseModel):
    model_config = ConfigDict(extra="allow")

    id: str
    name: str = ""
    version: int | None = None
    created_at: int | None = Field(None, alias="createdAt")
    state: str = ""


class _MotionsBody(BaseModel):
    total: int = Field(ge=0)
    data: list[_MotionData]


class _MetricsBody(BaseModel):
    total: int = Field(ge=0)
    data: list[dict[str, Any]]


class _ErrorBody(BaseModel):
    """The documented error format; every field optional so that a partial body still helps."""

    type: str = ""
    message: str = ""
    detail: str = ""
    status: int | None = None
    instance: str = ""
    validation_errors: list[str] = Field(default_factory=list, alias="validationErrors")


def _api_error(exc: DeliveryError, instance: str) -> MagnifyApiError:
    """``call_api``'s classified failure as a ``MagnifyApiError`` with the documented body's fields."""
    retry_after = exc.retry_after if isinstance(exc, TransientDeliveryError) else None
    if exc.status is None:
        return MagnifyApiError(exc.message, status=None, instance=instance, retry_after=retry_after)
    try:
        body = _ErrorBody.model_validate_json(exc.body or "")
    except ValidationError:
        body = _ErrorBody()
    parts = [f"magnify: HTTP {exc.status}", body.type, body.message, body.detail, "; ".join(body.validation_errors)]
    return MagnifyApiError(
        ": ".join(part for part in parts if part),
        status=exc.status,
        type=body.type,
        message=body.message,
        detail=body.detail,
        instance=body.instance or instance,
        validation_errors=body.validation_errors,
        retry_after=retry_after,
    )


def _shape_error(path: str, exc: ValidationError) -> MagnifyApiError:
    first = exc.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "$"
    return MagnifyApiError(f"magnify: unexpected response from {path}: {where}: {first['msg']}", status=200)


class MagnifyClient:
    """The Partner API; ``base_url`` is e.g. ``https://api.magnify.io/v1/partner``."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        base_url: str,
        tokens: TokenManager,
        *,
        timeout: float,
        retry: RetryPolicy | None = None,
        limits: MagnifyLimits | None = None,
        on_request: RequestListener | None = None,
    ):
        self._session = session
        self._base_url = base_url.rstrip("/")
        self.tokens = tokens
        self._timeout = timeout
        self._retry = retry or RetryPolicy()
        self.limits = limits or MagnifyLimits()
        self._on_request = on_request
        # The motions table allows size <= 1000, the general notes "Maximum page size is 100 items":
        # ask for the table's maximum until a 400 names `size`, then use 100 for the process's life.
        self.motions_page_size = self.limits.motions_size_max

    @classmethod
    def from_settings(
        cls,
        session: aiohttp.ClientSession,
        settings: Settings,
        tokens: TokenManager,
        *,
        on_request: RequestListener | None = None,
        limits: MagnifyLimits | None = None,
    ) -> MagnifyClient:
        retry = RetryPolicy(
            attempts=settings.magnify_retry_attempts,
            base_seconds=settings.magnify_retry_base_seconds,
            cap_seconds=settings.magnify_retry_cap_seconds,
        )
        return cls(
            session,
            str(settings.magnify_base_url),
            tokens,
            timeout=settings.http_timeout_seconds,
            retry=retry,
            limits=limits,
            on_request=on_request,
        )

    async def get_json(
        self, path: str, params: dict[str, str | int] | None = None, *, endpoint: str, deadline: float | None = None
    ) -> Any:
        """``GET`` a path under the base URL; the decoded 2xx body, or ``MagnifyApiError``.

        ``endpoint`` names the call in the request counters (``motions`` or ``metrics``);
        ``deadline`` (``time.monotonic()``) stops retries that would end after it.
        """
        url = self._base_url + path + ("?" + urlencode(params) if params else "")
        refreshed = False
        attempt = 0
        while True:
            token = ""
            try:
                token = await self.tokens.token()
                headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
                response = await call_api(
                    self._session, "GET", url, api="magnify", headers=headers, timeout=self._timeout
                )
            except MagnifyAuthError as exc:
                if not exc.transient:
                    raise
                error: MagnifyAuthError | MagnifyApiError = exc
            except DeliveryError as exc:
                await self._count(endpoint, exc.status)
                error = _api_error(exc, path)
                error.__cause__ = exc
                if error.status == 401 and not refreshed:
                    # Expired or revoked before our own clock said so: one refresh, one retry.
                    refreshed = True
                    self.tokens.invalidate(token)
                    continue
                if not error.transient:
                    raise error from exc
            else:
                await self._count(endpoint, response.status)
                return response.body
            attempt += 1
            await asyncio.sleep(self._retry_delay(attempt, error, path, deadline))

    def _retry_delay(
        self, attempt: int, error: MagnifyAuthError | MagnifyApiError, path: str, deadline: float | None
    ) -> float:
        """How long to wait before the next try, or ``error`` raised when there is none to make."""
        if attempt >= self._retry.attempts:
            raise error
        delay = backoff_seconds(
            attempt, base=self._retry.base_seconds, cap=self._retry.cap_seconds, retry_after=error.retry_after
        )
        if deadline is not None and time.monotonic() + delay > deadline:
            raise error
        _log.info("magnify request retrying", path=path, status=error.status, delay=round(delay, 3), attempt=attempt)
        return delay

    async def _count(self, endpoint: str, status: int | None) -> None:
        if self._on_request is not None:
            await self._on_request(endpoint, status_class(status))

    async def list_motions(
        self, *, state: str | None = None, size: int = 10, start: int = 0, deadline: float | None = None
    ) -> MotionsPage:
        """One page of ``/motions``; the values are sent as given, so the API judges them."""
        params: dict[str, str | int] = {"size": size, "from": start}
        if state is not None:
            params["state"] = state
        raw = await self.get_json("/motions", params, endpoint="motions", deadline=deadline)
        try:
            body = _MotionsBody.model_validate(raw)
        except ValidationError as exc:
            raise _shape_error("/motions", exc) from exc
        motions: list[Motion] = []
        invalid: list[str] = []
        for item in body.data:
            try:
                motion_id = parse_motion_id(item.id)
            except InvalidMotionId:
                invalid.append(item.id)
                continue
            motions.append(Motion(motion_id, item.name, item.state, item.version, item.created_at))
        return MotionsPage(total=body.total, motions=motions, invalid_ids=invalid)

    async def all_motions(self, state: str | None = None, *, deadline: float | None = None) -> MotionList:
        """Every motion in ``state`` the paging limits reach: pages of 1000 (or 100, see
        ``motions_page_size``), ``from`` at most 100."""
        limits = self.limits
        found: dict[str, Motion] = {}
        position = 0  # motions of the listing read so far, from the start
        total = 0
        while True:
            start = min(position, limits.motions_from_max)
            try:
                page = await self.list_motions(state=state, size=self.motions_page_size, start=start, deadline=deadline)
            except MagnifyApiError as exc:
                if not self._smaller_page(exc):
                    raise
                continue
            total = page.total
            listed = len(page.motions) + len(page.invalid_ids)
            for motion in page.motions:
                found.setdefault(motion.id, motion)
            for raw in page.invalid_ids:
                _log.warning("magnify motion id invalid", motion_id=raw[:80], reason="skipped: not motion_<uuid>")
            position = max(position, start + listed)
            if listed == 0 or position >= total or start == limits.motions_from_max:
                break
        unreachable = max(0, total - position)
        if unreachable:
            _log.warning("magnify motions beyond the listing window", state=state, total=total, unreachable=unreachable)
        return MotionList(total=total, motions=list(found.values()), unreachable=unreachable)

    def _smaller_page(self, exc: MagnifyApiError) -> bool:
        """A 400 naming ``size`` while asking for more than 100: fall back to 100 (logged once)."""
        fallback = min(GENERAL_PAGE_SIZE_MAX, self.limits.motions_size_max)
        if exc.status != 400 or self.motions_page_size <= fallback:
            return False
        if not any(error.strip().startswith("size") for error in exc.validation_errors):
            return False
        _log.warning(
            "magnify motions page size lowered",
            refused=self.motions_page_size,
            size=fallback,
            reason="the API refused size above the general 100-item page limit",
            error=str(exc),
        )
        self.motions_page_size = fallback
        return True

    async def get_motion(self, motion_id: str, *, deadline: float | None = None) -> Motion:
        """``/motions/{id}`` for ``motion_<uuid>`` or ``<uuid>``; ``MagnifyApiError`` 404 if there is none."""
        bare = parse_motion_id(motion_id)
        raw = await self.get_json(f"/motions/{bare}", endpoint="motions", deadline=deadline)
        try:
            item = _MotionData.model_validate(raw)
        except ValidationError as exc:
            raise _shape_error(f"/motions/{bare}", exc) from exc
        return Motion(parse_motion_id(item.id), item.name, item.state, item.version, item.created_at)

    async def email_metrics(
        self, motion_id: str, *, start: int = 0, size: int = 100, deadline: float | None = None
    ) -> MetricsPage:
        """One page of ``/motions/{id}/email-metrics``; a 404 ("no metrics yet") is an empty page."""
        bare = parse_motion_id(motion_id)
        path = f"/motions/{bare}/email-metrics"
        try:
            raw = await self.get_json(path, {"from": start, "size": size}, endpoint="metrics", deadline=deadline)
        except MagnifyApiError as exc:
            if exc.status == 404:
                return MetricsPage(total=0, metrics=[])
            raise
        try:
            body = _MetricsBody.model_validate(raw)
        except ValidationError as exc:
            raise _shape_error(path, exc) from exc
        return MetricsPage(total=body.total, metrics=body.data)
