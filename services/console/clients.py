"""The console's one way to the services: their public HTTP APIs, with the
signed-in operator's key. A service that does not answer (refused connection,
timeout, 5xx) is :class:`ServiceDown`; a 4xx is :class:`Refused` with the
problem's detail, so that a page can say what happened instead of failing."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from services.console.config import ConsoleSettings


class ServiceDown(Exception):
    """The service did not answer usefully (connection, timeout, 5xx)."""

    def __init__(self, service: str, reason: str) -> None:
        super().__init__(f"{service}: {reason}")
        self.service = service
        self.reason = reason


class Refused(Exception):
    """The service answered 4xx; ``detail`` is its problem's detail."""

    def __init__(self, service: str, status: int, detail: str, body: Any) -> None:
        super().__init__(f"{service}: {status} {detail}")
        self.service = service
        self.status = status
        self.detail = detail
        self.body = body


@dataclass(frozen=True)
class Answer:
    """A 2xx answer of a write: its status (200, 202, ...) and JSON body."""

    status: int
    body: Any


def _detail(resp: httpx.Response) -> tuple[str, Any]:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:300] or resp.reason_phrase, None
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or resp.reason_phrase), body
    return resp.reason_phrase, body


class Services:
    """An HTTP client per console process, over every service's base URL."""

    def __init__(
        self, settings: ConsoleSettings, transport: httpx.AsyncBaseTransport | None = None
    ) -> None:
        self.settings = settings
        self._http = httpx.AsyncClient(timeout=settings.timeout_s, transport=transport)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(
        self,
        service: str,
        method: str,
        path: str,
        key: str | None,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> httpx.Response:
        url = self.settings.url_of(service) + path
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        query = {k: v for k, v in (params or {}).items() if v not in (None, "")}
        try:
            resp = await self._http.request(method, url, headers=headers, params=query, json=body)
        except httpx.TimeoutException:
            raise ServiceDown(service, "did not answer in time") from None
        except httpx.HTTPError as exc:
            raise ServiceDown(service, f"not reachable at {self.settings.url_of(service)}") from exc
        if resp.status_code >= 500:
            detail, _ = _detail(resp)
            raise ServiceDown(service, f"answered {resp.status_code}: {detail}")
        if resp.status_code >= 400:
            detail, problem = _detail(resp)
            raise Refused(service, resp.status_code, detail, problem)
        return resp

    async def get(
        self, service: str, path: str, key: str, params: dict[str, Any] | None = None
    ) -> Any:
        """The JSON body of a GET, or :class:`ServiceDown` / :class:`Refused`."""
        return (await self._send(service, "GET", path, key, params)).json()

    async def post(self, service: str, path: str, key: str, body: Any) -> Answer:
        """A POST's 2xx answer, or :class:`ServiceDown` / :class:`Refused` (e.g. its 403)."""
        resp = await self._send(service, "POST", path, key, body=body)
        return Answer(resp.status_code, resp.json() if resp.content else None)

    async def metrics(self, service: str) -> str:
        """The service's Prometheus text (``/metrics`` takes no key)."""
        return (await self._send(service, "GET", "/metrics", None)).text
