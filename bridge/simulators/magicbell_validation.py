"""Validation of a MagicBell ``POST /broadcasts`` body against the v2 reference's Broadcasts object.

Every problem found becomes one message that starts with the field's path, e.g.
``"title: length must be between 1 and 255"`` or ``"recipients[3].email: must be a valid email address"``.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["validate_broadcast"]

TITLE_MAX = 255
CONTENT_MAX = 10_485_760
CHANNEL_CONTENT_MAX = 1_048_576
URL_MAX = 2048
NAME_MAX = 255
RECIPIENTS_MAX = 1000
NAME_PATTERN = re.compile(r"^[A-Za-z0-9_\.\-/:]+$")
# JSON Schema "format: uuid" is the hyphenated RFC 4122 form only.
UUID_PATTERN = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
CHANNELS = ("in_app", "email", "mobile_push", "sms")


def _title(path: str, value: Any, errors: list[str]) -> None:
    if not isinstance(value, str):
        errors.append(f"{path}: must be a string")
    elif not 1 <= len(value) <= TITLE_MAX:
        errors.append(f"{path}: length must be between 1 and {TITLE_MAX}")


def _optional_string(path: str, value: Any, max_length: int, errors: list[str]) -> None:
    """A nullable string of at most ``max_length`` characters."""
    if value is None:
        return
    if not isinstance(value, str):
        errors.append(f"{path}: must be a string or null")
    elif len(value) > max_length:
        errors.append(f"{path}: length must be at most {max_length}")


def _optional_name(path: str, value: Any, errors: list[str]) -> None:
    """``category`` and ``topic``: nullable, at most 255 characters, restricted alphabet."""
    before = len(errors)
    _optional_string(path, value, NAME_MAX, errors)
    if len(errors) == before and isinstance(value, str) and not NAME_PATTERN.match(value):
        errors.append(f"{path}: must match pattern {NAME_PATTERN.pattern}")


def _optional_object(path: str, value: Any, errors: list[str]) -> None:
    if value is not None and not isinstance(value, dict):
        errors.append(f"{path}: must be an object or null")


def _recipient(path: str, recipient: Any, errors: list[str]) -> None:
    if not isinstance(recipient, dict):
        errors.append(f"{path}: must be an object")
        return
    email = recipient.get("email")
    external_id = recipient.get("external_id")
    if email is None and external_id is None:
        errors.append(f"{path}: must have an email or an external_id")
    if email is not None and (not isinstance(email, str) or "@" not in email):
        errors.append(f"{path}.email: must be a valid email address")
    if external_id is not None and (not isinstance(external_id, str) or not external_id):
        errors.append(f"{path}.external_id: must be a non-empty string")
    _optional_object(f"{path}.custom_attributes", recipient.get("custom_attributes"), errors)


def _recipients(value: Any, errors: list[str]) -> None:
    if value is None:
        errors.append("recipients: is required")
        return
    if not isinstance(value, list):
        errors.append("recipients: must be an array")
        return
    if not 1 <= len(value) <= RECIPIENTS_MAX:
        errors.append(f"recipients: must contain between 1 and {RECIPIENTS_MAX} items")
    for index, recipient in enumerate(value):
        _recipient(f"recipients[{index}]", recipient, errors)


def _channel(path: str, value: Any, errors: list[str]) -> None:
    if not isinstance(value, dict):
        errors.append(f"{path}: must be an object")
        return
    if "title" in value:
        _title(f"{path}.title", value["title"], errors)
    if "content" in value:
        content = value["content"]
        if not isinstance(content, str):
            errors.append(f"{path}.content: must be a string")
        else:
            _optional_string(f"{path}.content", content, CHANNEL_CONTENT_MAX, errors)
    _optional_string(f"{path}.action_url", value.get("action_url"), URL_MAX, errors)


def _overrides(value: Any, errors: list[str]) -> None:
    """``overrides.channels.<channel>`` and ``overrides.providers.<provider>`` as the reference lists them."""
    if value is None:
        return
    if not isinstance(value, dict):
        errors.append("overrides: must be an object or null")
        return
    channels = value.get("channels")
    if isinstance(channels, dict):
        for name, channel in channels.items():
            if name not in CHANNELS:
                errors.append(f"overrides.channels: unknown channel {name!r}")
            else:
                _channel(f"overrides.channels.{name}", channel, errors)
    elif channels is not None:
        errors.append("overrides.channels: must be an object")
    providers = value.get("providers")
    if providers is not None and (
        not isinstance(providers, dict) or not all(isinstance(p, dict) for p in providers.values())
    ):
        errors.append("overrides.providers: must be an object of objects")


def validate_broadcast(body: dict[str, Any]) -> list[str]:
    """Every problem with a broadcast request body; an empty list means it is valid."""
    errors: list[str] = []
    if "title" not in body:
        errors.append("title: is required")
    else:
        _title("title", body["title"], errors)
    _recipients(body.get("recipients"), errors)
    _optional_string("content", body.get("content"), CONTENT_MAX, errors)
    _optional_string("action_url", body.get("action_url"), URL_MAX, errors)
    _optional_name("category", body.get("category"), errors)
    _optional_name("topic", body.get("topic"), errors)
    if "id" in body and (not isinstance(body["id"], str) or not UUID_PATTERN.match(body["id"])):
        errors.append("id: must be a UUID")
    _optional_object("custom_attributes", body.get("custom_attributes"), errors)
    _overrides(body.get("overrides"), errors)
    return errors
