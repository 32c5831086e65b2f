"""Fault injection settings of a simulator, changed at run time through ``POST /_sim/faults``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from types import MappingProxyType
from typing import Any

__all__ = ["Faults"]


def _number(name: str, value: object, *, upper: float | None = None) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
        raise ValueError(f"{name}: must be a number >= 0")
    if upper is not None and value > upper:
        raise ValueError(f"{name}: must be a number between 0 and {upper:g}")
    return float(value)


def _fraction(name: str, value: object) -> float:
    return _number(name, value, upper=1)


def _count(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{name}: must be an integer >= 0")
    return value


def _error_status(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 400 <= value <= 599:
        raise ValueError(f"{name}: must be an HTTP status between 400 and 599")
    return value


def _error_statuses(name: str, value: object) -> list[int]:
    if not isinstance(value, list):
        raise ValueError(f"{name}: must be a list of HTTP statuses between 400 and 599")
    return [_error_status(name, item) for item in value]


def _flag(name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: must be a boolean")
    return value


# One checker per Faults field: it returns the value to store or raises ValueError naming the field.
_FAULT_CHECKS: Mapping[str, Callable[[str, object], object]] = MappingProxyType(
    {
        "error_rate": _fraction,
        "error_status": _error_status,
        "fail_next": _error_statuses,
        "rate_limit_next": _count,
        "retry_after": _number,
        "max_rps": _number,
        "latency_ms": _number,
        "drop_rate": _fraction,
        "down": _flag,
    }
)


def _check_fault(name: str, value: object) -> object:
    check = _FAULT_CHECKS.get(name)
    if check is None:
        raise ValueError(f"{name}: unknown fault field")
    return check(name, value)


@dataclass
class Faults:
    """Failures injected into API requests; change them at run time with ``POST /_sim/faults``.

    Checked in this order, the first that applies answers the request: ``latency_ms`` (a delay, then
    go on), ``drop_rate``, ``down``, ``fail_next``, ``rate_limit_next``, ``max_rps``, ``error_rate``.
    """

    error_rate: float = 0.0
    """Fraction of requests answered ``error_status`` with an error body in the vendor's format."""
    error_status: int = 500
    fail_next: list[int] = field(default_factory=list)
    """The next requests get these statuses, one each, then behaviour is normal again."""
    rate_limit_next: int = 0
    """The next N requests get 429 with ``Retry-After: <retry_after>``."""
    retry_after: float = 1.0
    max_rps: float = 0.0
    """Requests per second accepted (0 = unlimited); the excess gets 429 with ``Retry-After``."""
    latency_ms: float = 0.0
    drop_rate: float = 0.0
    """Fraction of requests whose connection is closed with no response at all."""
    down: bool = False
    """Every API request is answered 503."""

    def update(self, changes: dict[str, Any]) -> None:
        """Merge ``changes`` into these faults; all or nothing, ``ValueError`` naming the bad field."""
        checked = {name: _check_fault(name, value) for name, value in changes.items()}
        for name, value in checked.items():
            setattr(self, name, value)


# A field added to Faults without a checker would be impossible to set at run time.
assert set(_FAULT_CHECKS) == {f.name for f in fields(Faults)}
