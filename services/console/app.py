"""The console's app: wiring (settings, sessions, the services' client, templates)
and the error pages. It owns no tables and no topics: everything it shows it
reads from the services' public HTTP APIs with the signed-in operator's key."""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlencode

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from jinja2 import Environment, FileSystemLoader, select_autoescape
from pydantic import BaseModel

from services.console.clients import Services
from services.console.config import ConsoleSettings
from services.console.figures import ScrapeHistory
from services.console.formats import money, num, pct, points, when
from services.console.session import SessionStore
from services.console.web import Forbidden, SignInNeeded, current_session, page, router

log = logging.getLogger(__name__)
HERE = Path(__file__).parent

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; style-src 'self';"
    " frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def templates() -> Jinja2Templates:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        autoescape=select_autoescape(["html"]),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(money=money, when=when, pct=pct, points=points, num=num)
    return Jinja2Templates(env=env)


class ConsoleHealth(BaseModel):
    status: str
    service: str


def create_app(
    settings: ConsoleSettings | None = None, transport: httpx.AsyncBaseTransport | None = None
) -> FastAPI:
    """The console; ``transport`` replaces the network to the services (tests)."""
    settings = settings or ConsoleSettings()
    if settings.secret is None:
        secret = secrets.token_urlsafe(32)
        log.warning(
            "console: LOYALTY_CONSOLE_SECRET is not set; generated a session secret for this"
            " process (dev only: sessions end when it restarts; set one in production)"
        )
    else:
        secret = settings.secret.get_secret_value()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await app.state.services.aclose()

    app = FastAPI(
        title="loyalty console",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.settings = settings
    app.state.sessions = SessionStore(secret, idle_s=settings.session_hours * 3600)
    app.state.services = Services(settings, transport=transport)
    app.state.templates = templates()
    app.state.scrapes = ScrapeHistory()
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    app.include_router(router)

    @app.get("/health", include_in_schema=False)
    @app.get("/ready", include_in_schema=False)
    async def health() -> ConsoleHealth:
        """The console answers (it holds no connection that could be down)."""
        return ConsoleHealth(status="ok", service="console")

    @app.exception_handler(SignInNeeded)
    async def sign_in(request: Request, exc: SignInNeeded) -> Response:
        if request.method != "GET":
            return Response("sign in first", status_code=401)
        return RedirectResponse("/login?" + urlencode({"next": exc.next_path}), 303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        try:
            session = await current_session(request)
        except SignInNeeded:
            session = None
        return page(
            request,
            "error.html",
            session,
            status_code=403,
            title="Not allowed",
            detail=exc.detail,
            required_scope=exc.required_scope,
        )

    @app.middleware("http")
    async def security_headers(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        if not request.url.path.startswith("/static"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app
