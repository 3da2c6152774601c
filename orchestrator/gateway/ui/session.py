"""Who is looking at the dashboard, and the rules its forms follow.

The login form takes an API key and keeps it in a cookie (`orch_ui`: HttpOnly, so no script reads
it; SameSite=Strict, so no other site's page sends it; Path=/ui, so the API never sees it as a
credential). Every request resolves the key exactly as the API does (`Authenticator.caller`), so
revoking a key logs its dashboard out, and roles mean the same thing (admin pages need an admin).

Forms that change or cost something (playground, feedback, logout) are refused unless they carry
the session's CSRF token and, when the browser says where they come from (`Origin`,
`Sec-Fetch-Site`), come from this origin. The token is an HMAC keyed by the session's API key, so
every replica behind a load balancer accepts it and a page on another site, which can neither
read the cookie nor the page, cannot compute it; an open gateway (no key) keys it with a
per-process secret instead.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request

from orchestrator.gateway import errors as E
from orchestrator.gateway.auth import Caller
from orchestrator.gateway.deps import State

COOKIE = "orch_ui"
COOKIE_PATH = "/ui"
COOKIE_MAX_AGE_S = 12 * 3600


class LoginRequired(Exception):
    """No valid key for a page: the handler sends the browser to the login form."""

    def __init__(self, next_path: str) -> None:
        super().__init__(next_path)
        self.next_path = next_path


class PageForbidden(Exception):
    """The page needs what this caller lacks (an admin key, a CSRF token): a 403 page."""


class Session:
    """The dashboard's caller and the CSRF token its forms carry."""

    def __init__(self, caller: Caller, csrf: str) -> None:
        self.caller, self.csrf = caller, csrf

    @property
    def is_admin(self) -> bool:
        return self.caller.is_admin


class SessionSigner:
    """Makes CSRF tokens: keyed by the session's API key, or by a per-process secret on an open
    gateway (one signer per app, built by `install`)."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def csrf_token(self, key: str | None) -> str:
        return hmac.new(key.encode() if key else self._secret, b"orchestrator-ui-csrf", hashlib.sha256).hexdigest()


def safe_next(path: str | None) -> str:
    """Where to go after logging in: a path of the dashboard only (never another site)."""
    if not path or not path.startswith("/ui") or path.startswith("//") or "\\" in path or urlsplit(path).netloc:
        return "/ui"
    return path


async def resolve(request: Request, st: State) -> Session:
    """The session of a page request; raises LoginRequired when a key is needed and missing or invalid."""
    signer: SessionSigner = request.app.state.ui_signer
    client = request.client.host if request.client else "unknown"
    if not await st.auth.required():
        return Session(await st.auth.caller("", client), signer.csrf_token(None))
    key = request.cookies.get(COOKIE, "")
    if not key:
        raise LoginRequired(request.url.path)
    try:
        caller = await st.auth.caller(f"Bearer {key}", client)
    except E.Unauthorized:
        raise LoginRequired(request.url.path) from None
    return Session(caller, signer.csrf_token(key))


SessionDep = Annotated[Session, Depends(resolve)]


async def admin_session(session: SessionDep) -> Session:
    if not session.is_admin:
        raise PageForbidden("this page needs an admin API key")
    return session


AdminSessionDep = Annotated[Session, Depends(admin_session)]


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site (a missing header, as
    from a non-browser client, is left to the CSRF token)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None and site not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is not None:
        host = request.headers.get("host", "")
        if origin == "null" or urlsplit(origin).netloc != host:
            return False
    return True


def check_form(request: Request, session: Session, token: str) -> None:
    """Refuse a state-changing form that is cross-site or lacks the session's token."""
    if not same_origin(request) or not hmac.compare_digest(token.encode(), session.csrf.encode()):
        raise PageForbidden("this form was not sent from a page of this dashboard (cross-site or missing CSRF token)")


def login_location(next_path: str) -> str:
    return f"/ui/login?next={quote(safe_next(next_path), safe='/')}"
