"""The operator console: a few server-rendered pages under ``/console`` for an operator who is paged.

- ``app``: the sub-application and its routes; ``state``: what the handlers share;
- ``guard``: the one middleware (console off without an admin token, security headers, error pages);
- ``sessions``: the admin token exchanged for a signed, expiring cookie; ``csrf``: the forms' tokens;
  ``auth``: login, logout and the ``signed_in`` guard of every page;
- ``render``: the Jinja2 templates (``templates/``) and their filters; ``assets``: ``static/``;
- the pages: ``overview``, ``events`` (list and detail), ``dead_letters`` and ``replay``, ``magnify``,
  ``magnews``; ``destinations``: the gates' state they show.

Every read reuses the store's own (``bridge.store.reads``, ``queries``, ``views``, ``replay``) and is
bounded: pages of an index, counts from indexes, never a walk over every event. See docs/console.md.
"""

from bridge.web.console.app import create_console

__all__ = ["create_console"]
