"""Counts and times every HTTP request of a service, for ``/metrics``.

Labelled by the route *template* (``/v1/accounts/{account_id}``), never by the
path itself (which holds account and offer ids), by the method and by the
status; a request no route matched counts as ``unmatched``. Pure ASGI, so it
buffers no body and streams stay streams."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from services.runtime.metrics import RuntimeMetrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def route_template(scope: Scope) -> str:
    """The template of the route that answered (the router leaves it in the scope)."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else "unmatched"


class HttpMetrics:
    def __init__(self, app: ASGIApp, metrics: RuntimeMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers if the app raises before it starts one

        async def counted(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, counted)
        finally:
            method = scope.get("method", "")
            method = method if method in METHODS else "other"
            route = route_template(scope)
            self.metrics.http_requests(route, method, str(status)).inc()
            self.metrics.http_seconds(route, method).observe(time.perf_counter() - started)
