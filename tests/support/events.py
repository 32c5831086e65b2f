"""Bodies as the sources send them: a Magnews webhook event, a Magnify email metric."""

from __future__ import annotations

from typing import Any

__all__ = ["magnews_event", "magnify_metric"]


def magnews_event(event_id: str, topic: str, **data: Any) -> dict[str, Any]:
    base = {"idcontact": 500106, "iddatabase": 7, "email": "ada@example.com", "fields": {"name": "Ada"}}
    return {"id": event_id, "topic": topic, "timestamp": "2025-11-14T13:00:00Z", "data": base | data}


def magnify_metric(event_type: str, user: str = "user_42", at: int = 1640995200000) -> dict[str, Any]:
    return {
        "account": {"id": "acc_1", "name": "Acme"},
        "user": {"id": user, "name": "John Doe"},
        "motion": {"id": "00000000-0000-0000-0000-000000000001", "name": "Welcome Series", "version": "1"},
        "emailEvent": {"templateId": "template_abc", "templateVersion": 1, "type": event_type},
        "occurredAt": at,
    }
