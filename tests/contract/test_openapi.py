"""The OpenAPI documents tell the truth: schemathesis generates requests from each
service's own document (valid ones, and invalid ones) and sends them to the
service, in process, with its real lifespan (broker, Postgres) and an admin key, so
that every route is reachable. Every answer must be no server error and must
conform to the document: a declared status code, a declared content type, and a
body that matches the declared schema (errors are RFC 9457 problems).

The generation is derandomized (the same cases each run) and the cases are
counted: at least 1,000 across the five services."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import hypothesis
import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, Phase
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.python import asgi
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from services.cli import create_tenant_key
from services.runtime.config import Settings

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
EXAMPLES = {GenerationMode.POSITIVE: 40, GenerationMode.NEGATIVE: 20}
"""Per operation and mode; an operation with few distinct inputs gets fewer."""
FEWER = {"POST /v1/keys": 8, "POST /v1/keys/{key_id}/rotate": 8}
"""Operations that publish to the broker (a producer each): slower."""
ODD_PATH_PARAMETERS = {
    "a NUL": "a%00b",
    "a control character": "a%01b",
    "invalid UTF-8": "%FF%FE",
    "an encoded surrogate": "%ED%A0%80",
    "an encoded slash": "a%2Fb",
    "dot-dot": "..",
    "an encoded dot-dot": "%2E%2E",
    "10 kB": "x" * 10_000,
}
"""Path parameters that must be refused with a 4xx (Postgres refuses a NUL in text:
one reaching it was a 500)."""
ODD = "(odd path parameters)"
PROBE = {
    "ingest": "/v1/keys",
    "segmenter": "/v1/segments",
    "offers": "/v1/offers/summary",
    "ledger": "/v1/reports/credits",
    "insights": "/v1/insights/lift",
}


@dataclass
class Outcome:
    cases: dict[str, int] = field(default_factory=dict)
    """Requests sent, by operation and kind (generated positive / negative, odd paths)."""
    failures: list[str] = field(default_factory=list)

    def count(self, label: str) -> None:
        self.cases[label] = self.cases.get(label, 0) + 1

    def fail(self, label: str, exc: BaseException) -> None:
        self.failures.append(f"{label}: {type(exc).__name__}: {exc}"[:3000])

    @property
    def generated(self) -> int:
        return sum(n for label, n in self.cases.items() if not label.endswith(ODD))


def _apps(settings: Settings) -> dict[str, FastAPI]:
    from services.ingest.app import create_app as ingest_app
    from services.ingest.config import IngestSettings
    from services.insights.app import create_app as insights_app
    from services.ledger.app import create_app as ledger_app
    from services.offers.app import create_app as offers_app
    from services.segmenter.app import create_app as segmenter_app
    from services.segmenter.config import SegmenterSettings

    return {
        "ingest": ingest_app(IngestSettings(**settings.model_dump())),
        "segmenter": segmenter_app(SegmenterSettings(**settings.model_dump())),
        "offers": offers_app(settings),
        "ledger": ledger_app(settings),
        "insights": insights_app(settings),
    }


def _wait_for_key(app: FastAPI, path: str, auth: dict[str, str]) -> None:
    # the key reaches each service on the tenants topic
    with asgi.get_client(app) as client:
        for _ in range(300):
            if client.get(path, headers=auth).status_code == 200:
                return
            time.sleep(0.1)
    raise AssertionError(f"{path}: the key was never accepted")


def _has_input(operation: schemathesis.APIOperation) -> bool:
    return bool(operation.definition.raw.get("parameters") or operation.body)


def _run(
    strategy: Any,
    examples: int,
    call: Callable[[schemathesis.Case], None],
) -> None:
    @hypothesis.settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],  # failures are collected, not shrunk
        suppress_health_check=list(HealthCheck),
    )
    @hypothesis.given(case=strategy)
    def test(case: schemathesis.Case) -> None:
        call(case)

    test()


def _fuzz(name: str, app: FastAPI, auth: dict[str, str], outcome: Outcome) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode, examples in EXAMPLES.items():
            if mode is GenerationMode.NEGATIVE and not _has_input(operation):
                continue  # nothing to make invalid
            label = f"{name} {operation.label} ({mode.value})"
            outcome.cases[label] = 0

            def call(case: schemathesis.Case, label: str = label) -> None:
                outcome.count(label)
                try:
                    response = case.call(headers=auth)
                    case.validate_response(response, checks=CHECKS, headers=auth)
                except (Exception, BaseExceptionGroup) as exc:  # a check's failures come as a group
                    outcome.fail(label, exc)

            try:
                strategy = operation.as_strategy(generation_mode=mode)
                _run(strategy, min(examples, FEWER.get(operation.label, examples)), call)
            except Exception as exc:  # e.g. a schema nothing can be generated from
                outcome.fail(label, exc)


def _odd_paths(name: str, app: FastAPI, auth: dict[str, str], outcome: Outcome) -> None:
    # sent as raw URLs: what generated strings rarely are
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    with asgi.get_client(app) as client:
        for result in schema.get_all_operations():
            operation = result.ok()
            params = re.findall(r"\{([^}]+)\}", operation.path)
            if not params:
                continue
            label = f"{name} {operation.label} {ODD}"
            for what, odd in ODD_PATH_PARAMETERS.items():
                url = operation.path
                for p in params:
                    url = url.replace("{" + p + "}", odd)
                outcome.count(label)
                try:
                    response = client.request(operation.method.upper(), url, headers=auth)
                    assert 400 <= response.status_code < 500, (what, response.status_code)
                    case = operation.Case(path_parameters=dict.fromkeys(params, "x"))
                    case.validate_response(response, checks=CHECKS, headers=auth)
                except (Exception, BaseExceptionGroup) as exc:
                    outcome.fail(f"{label}, {what}", exc)


def _fuzz_all(settings: Settings, key: str) -> Outcome:
    auth = {"Authorization": f"Bearer {key}"}
    outcome = Outcome()
    apps = _apps(settings)
    try:
        for name, app in apps.items():
            schemathesis.openapi.from_asgi("/openapi.json", app)  # starts its lifespan
            _wait_for_key(app, PROBE[name], auth)
        for name, app in apps.items():
            _odd_paths(name, app, auth, outcome)
            _fuzz(name, app, auth, outcome)
    finally:
        asgi.shutdown_lifespans()
    return outcome


# schemathesis' negative mode draws from `random` (seeded by Hypothesis all the same)
@pytest.mark.filterwarnings("ignore:Do not use the `random` module inside strategies")
async def test_every_answer_of_every_service_conforms_to_its_openapi(settings: Settings) -> None:
    key = await create_tenant_key(settings, "Acme", None, "admin", "contract-admin")
    started = time.monotonic()
    outcome = await asyncio.to_thread(_fuzz_all, settings, key)
    took = time.monotonic() - started
    print(f"\n{outcome.generated} generated cases (and odd paths) in {took:.0f}s")
    for label, n in outcome.cases.items():
        print(f"  {n:4d}  {label}")
    assert not outcome.failures, "\n\n".join(outcome.failures[:20])
    assert all(outcome.cases.values()), [label for label, n in outcome.cases.items() if not n]
    assert outcome.generated >= 1_000
