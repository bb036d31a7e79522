"""Console sessions: who signed in, with which key, and the CSRF token of their forms.

The browser holds only a signed session id (itsdangerous; HTTP-only, SameSite=Strict):
the tenant API key stays on the server, so that the cookie (in a browser profile, a
proxy log) never gives away a key that outlives the session. A session ends when
its holder signs out, after ``idle_s`` without a request, or when the console
restarts (sign in again). The CSRF token is per session and checked on every POST;
the sign-in form, before there is a session, carries a signed token of its own."""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from itsdangerous import BadSignature, URLSafeTimedSerializer

from schemas.events import Scope
from services.runtime.tenants import ALLOWED

COOKIE = "loyalty_console"
LOGIN_COOKIE = "loyalty_console_login"


@dataclass
class Session:
    """One signed-in operator: the key they presented and what the services said of it."""

    sid: str
    key: str
    operator: str
    tenant: str
    scope: Scope
    holder: str
    csrf: str
    last_seen: float
    flashes: list[str] = field(default_factory=list)

    def may(self, route_scope: Scope) -> bool:
        """Whether this key's scope may use routes needing ``route_scope``."""
        return self.scope in ALLOWED[route_scope]

    def csrf_ok(self, token: str | None) -> bool:
        return token is not None and hmac.compare_digest(token, self.csrf)

    def flash(self, message: str) -> None:
        self.flashes.append(message)

    def take_flashes(self) -> list[str]:
        out, self.flashes = self.flashes, []
        return out


class SessionStore:
    """Sessions in this process's memory, found by their signed cookie value."""

    def __init__(
        self, secret: str, idle_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._signer = URLSafeTimedSerializer(secret, salt="loyalty-console-session")
        self._login = URLSafeTimedSerializer(secret, salt="loyalty-console-login")
        self._idle = idle_s
        self._clock = clock
        self._sessions: dict[str, Session] = {}

    def open(
        self, *, key: str, operator: str, tenant: str, scope: Scope, holder: str
    ) -> tuple[Session, str]:
        """A new session and the cookie value that names it."""
        self._forget_idle()
        session = Session(
            sid=secrets.token_urlsafe(24),
            key=key,
            operator=operator,
            tenant=tenant,
            scope=scope,
            holder=holder,
            csrf=secrets.token_urlsafe(24),
            last_seen=self._clock(),
        )
        self._sessions[session.sid] = session
        return session, self._signer.dumps(session.sid)

    def find(self, cookie: str | None) -> Session | None:
        """The live session a cookie value names, or None (unsigned, unknown, idle)."""
        if not cookie:
            return None
        try:
            sid = self._signer.loads(cookie)
        except BadSignature:
            return None
        session = self._sessions.get(sid) if isinstance(sid, str) else None
        if session is None:
            return None
        now = self._clock()
        if now - session.last_seen > self._idle:
            del self._sessions[session.sid]
            return None
        session.last_seen = now
        return session

    def close(self, session: Session) -> None:
        self._sessions.pop(session.sid, None)

    def login_token(self) -> tuple[str, str]:
        """A CSRF token for the sign-in form and the signed cookie value that pairs with it."""
        token = secrets.token_urlsafe(24)
        return token, self._login.dumps(token)

    def login_token_ok(self, cookie: str | None, token: str | None, max_age_s: int = 3600) -> bool:
        if not cookie or not token:
            return False
        try:
            expected = self._login.loads(cookie, max_age=max_age_s)
        except BadSignature:
            return False
        return isinstance(expected, str) and hmac.compare_digest(expected, token)

    def _forget_idle(self) -> None:
        now = self._clock()
        for sid in [s.sid for s in self._sessions.values() if now - s.last_seen > self._idle]:
            del self._sessions[sid]
