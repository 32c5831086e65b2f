"""Every state-changing console form carries a CSRF token, checked here before anything else of it.

The token is an HMAC of the session id (the login form's: of its nonce cookie), see
``bridge.web.console.sessions``: another site can neither read it (the pages are same-origin, never
framed) nor compute it. The session cookie is ``SameSite=Strict`` as well, so a forged cross-site
``POST`` arrives without a session in current browsers and without the token in every browser.
"""

from __future__ import annotations

import hmac

from aiohttp import web
from multidict import MultiDict

from config.errors import RequestRejected

__all__ = ["FIELD", "checked_form"]

FIELD = "csrf"


async def checked_form(request: web.Request, expected: str | None) -> MultiDict[str]:
    """The form's text fields, once its CSRF token is found to be ``expected``; 403 otherwise."""
    form = await request.post()  # bounded by the application's client_max_size
    given = form.get(FIELD)
    if expected is None or not isinstance(given, str) or not given:
        raise RequestRejected(
            403, "CSRF token missing", "The form lacks its CSRF token: reload the page and try again."
        )
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise RequestRejected(403, "CSRF token wrong", "The form's CSRF token is not this session's: reload the page.")
    return MultiDict((name, value) for name, value in form.items() if isinstance(value, str))
