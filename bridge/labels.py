"""Bounded label values for metrics: an event type from outside becomes one of a known set.

Prometheus keeps one series per label value, so a label must never take an arbitrary string from an
event. Known Magnews topics and Magnify email event types keep their name; anything else is
``other`` (the event itself is stored and listed under its real type all the same).
"""

from __future__ import annotations

from bridge.events import MAGNIFY_EVENT_TYPES

__all__ = ["KNOWN_EVENT_TYPES", "OTHER", "event_type_label"]

OTHER = "other"

_MAGNEWS_TOPICS = (
    *(f"contacts/{name}" for name in ("create", "update", "unsubscription", "delete")),
    *(
        f"{channel}/msg/{name}"
        for channel in ("communications", "transactionals")
        for name in ("sent", "open", "click", "conversion", "bounce", "complaint")
    ),
)
KNOWN_EVENT_TYPES: dict[str, frozenset[str]] = {
    "magnews": frozenset(_MAGNEWS_TOPICS),
    "magnify": frozenset(MAGNIFY_EVENT_TYPES),
}


def event_type_label(source: str, event_type: str) -> str:
    """``event_type`` when it is a documented type of ``source``, else ``other``."""
    return event_type if event_type in KNOWN_EVENT_TYPES.get(source, frozenset()) else OTHER
