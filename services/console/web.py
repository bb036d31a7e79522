"""The console's pages and actions. Every page reads the services' public APIs
with the operator's key; whatever a service cannot give (down, or refusing the
key's scope) becomes a banner naming the service, never a 500. Every POST checks
the session's CSRF token (403 otherwise) and the key's scope (403, as the
service itself would answer); every action's comment names the operator."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.datastructures import FormData

from services.console.charts import Bar, bar_chart, sparkline
from services.console.clients import Refused, ServiceDown, Services
from services.console.config import SERVICE_NAMES, ConsoleSettings
from services.console.figures import Scrape, ScrapeHistory, overview
from services.console.formats import money
from services.console.lift_view import lift_blocks
from services.console.session import COOKIE, LOGIN_COOKIE, Session, SessionStore

router = APIRouter()

WHOAMI_ORDER = ("ledger", "segmenter", "offers", "insights", "ingest")
"""Where sign-in asks who a key is: the first service that answers."""
MAX_COMMENT = 2000
_OPERATOR = re.compile(r"^[^\x00-\x1f\x7f]{1,200}$")


class SignInNeeded(Exception):
    def __init__(self, next_path: str) -> None:
        self.next_path = next_path


class Forbidden(Exception):
    """403: a wrong CSRF token, or a scope that may not do this."""

    def __init__(self, detail: str, required_scope: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.required_scope = required_scope


@dataclass(frozen=True)
class Banner:
    service: str
    message: str
    level: Literal["down", "refused", "info"] = "down"


def attributed(operator: str, comment: str) -> str:
    """An action's comment as the services store it: who did it here, and why."""
    prefix = f"via console by {operator}"
    text = f"{prefix}: {comment}" if comment else prefix
    return text[:MAX_COMMENT]


def safe_next(path: str | None) -> str:
    """A local path to go on to after sign-in (never another site)."""
    if not path or not path.startswith("/") or path.startswith("//") or "\\" in path:
        return "/"
    return path


def _q(segment: str) -> str:
    return quote(segment, safe="")


def _text(form: FormData, name: str) -> str:
    value = form.get(name)
    return value.strip() if isinstance(value, str) else ""


# ----------------------------------------------------------------- dependencies


def _store(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.sessions
    return store


def _services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


def _templates(request: Request) -> Jinja2Templates:
    templates: Jinja2Templates = request.app.state.templates
    return templates


async def current_session(request: Request) -> Session:
    session = _store(request).find(request.cookies.get(COOKIE))
    if session is None:
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInNeeded(path)
    return session


SessionDep = Annotated[Session, Depends(current_session)]


async def checked_form(request: Request, session: SessionDep) -> FormData:
    """The POSTed form, if it carries this session's CSRF token (else 403)."""
    form = await request.form()
    token = form.get("csrf")
    if not session.csrf_ok(token if isinstance(token, str) else None) and not session.csrf_ok(
        request.headers.get("x-csrf-token")
    ):
        raise Forbidden("the form's CSRF token is missing or does not match this session")
    return form


FormDep = Annotated[FormData, Depends(checked_form)]


def require(session: Session, scope: Literal["approve", "admin"], what: str) -> None:
    """403 unless the key's scope may ``what`` (the console's own check, before the service's)."""
    if not session.may(scope):
        raise Forbidden(
            f"{what} needs a key with the {scope!r} scope; this key ({session.holder})"
            f" has the {session.scope!r} scope",
            required_scope=scope,
        )


class Reads:
    """A page's reads: the JSON a service gave, or None and a banner saying why."""

    def __init__(self, request: Request, session: Session) -> None:
        self.services = _services(request)
        self.session = session
        self.banners: list[Banner] = []

    def note(self, banner: Banner) -> None:
        if banner not in self.banners:
            self.banners.append(banner)

    async def get(
        self,
        service: str,
        path: str,
        what: str,
        params: dict[str, Any] | None = None,
        *,
        missing: str | None = None,
    ) -> Any:
        """``missing``: what a 404 means here (an info banner), instead of a refusal."""
        try:
            return await self.services.get(service, path, self.session.key, params)
        except ServiceDown as exc:
            reason = f"{service} is unavailable ({exc.reason}): {what} cannot be shown"
            self.note(Banner(service, reason))
        except Refused as exc:
            if exc.status == 404 and missing is not None:
                self.note(Banner(service, missing, "info"))
            else:
                why = exc.detail if exc.status == 403 else f"{exc.status} {exc.detail}"
                self.note(Banner(service, f"{service} refused {what}: {why}", "refused"))
        return None


def page(
    request: Request,
    template: str,
    session: Session | None,
    status_code: int = 200,
    banners: list[Banner] | None = None,
    **context: Any,
) -> Response:
    settings: ConsoleSettings = request.app.state.settings
    return _templates(request).TemplateResponse(
        request,
        template,
        {
            "session": session,
            "banners": banners or [],
            "flashes": session.take_flashes() if session else [],
            "refresh_s": settings.refresh_s,
            "path": request.url.path,
            **context,
        },
        status_code=status_code,
    )


def _see(path: str) -> RedirectResponse:
    return RedirectResponse(path, status_code=303)


# ----------------------------------------------------------------- sign-in


@router.get("/login", include_in_schema=False)
async def login_form(request: Request, next: str = "/") -> Response:
    return _login_page(request, next_path=safe_next(next))


def _login_page(
    request: Request, *, next_path: str, error: str | None = None, status_code: int = 200
) -> Response:
    token, cookie = _store(request).login_token()
    settings: ConsoleSettings = request.app.state.settings
    resp = page(
        request, "login.html", None, status_code, csrf=token, next_path=next_path, error=error
    )
    resp.set_cookie(
        LOGIN_COOKIE,
        cookie,
        httponly=True,
        samesite="strict",
        secure=settings.secure_cookie,
        path="/login",
    )
    return resp


@router.post("/login", include_in_schema=False)
async def login(request: Request) -> Response:
    form = await request.form()
    next_path = safe_next(_text(form, "next"))
    token = _text(form, "csrf")
    if not _store(request).login_token_ok(request.cookies.get(LOGIN_COOKIE), token):
        raise Forbidden("the sign-in form's CSRF token is missing or expired; load the form again")
    key = _text(form, "key")
    operator = _text(form, "operator")
    if not key or not _OPERATOR.match(operator):
        return _login_page(
            request,
            next_path=next_path,
            error="give an API key and your name or e-mail (up to 200 characters)",
            status_code=422,
        )
    services = _services(request)
    who: Any = None
    down: list[str] = []
    for service in WHOAMI_ORDER:
        try:
            who = await services.get(service, "/v1/whoami", key)
            break
        except ServiceDown:
            down.append(service)
        except Refused as exc:
            error = (
                "that key is unknown or revoked"
                if exc.status == 401
                else f"{service} refused the key: {exc.status} {exc.detail}"
            )
            return _login_page(request, next_path=next_path, error=error, status_code=401)
    if who is None:
        return _login_page(
            request,
            next_path=next_path,
            error=f"no service answered ({', '.join(down)}): cannot check the key now",
            status_code=503,
        )
    if who["scope"] == "ingest":
        return _login_page(
            request,
            next_path=next_path,
            error="an ingest key may only post events; sign in with a read, approve or admin key",
            status_code=403,
        )
    _, cookie = _store(request).open(
        key=key, operator=operator, tenant=who["tenant"], scope=who["scope"], holder=who["holder"]
    )
    settings: ConsoleSettings = request.app.state.settings
    resp = _see(next_path)
    resp.set_cookie(
        COOKIE, cookie, httponly=True, samesite="strict", secure=settings.secure_cookie, path="/"
    )
    resp.delete_cookie(LOGIN_COOKIE, path="/login")
    return resp


@router.post("/logout", include_in_schema=False)
async def logout(request: Request, session: SessionDep, form: FormDep) -> Response:
    _store(request).close(session)
    resp = _see("/login")
    resp.delete_cookie(COOKIE, path="/")
    return resp


# ----------------------------------------------------------------- overview


async def _overview(request: Request) -> tuple[Any, list[Banner]]:
    services = _services(request)
    history: ScrapeHistory = request.app.state.scrapes
    texts = await asyncio.gather(
        *(services.metrics(n) for n in SERVICE_NAMES), return_exceptions=True
    )
    banners = []
    pairs: dict[str, tuple[Scrape, Scrape | None]] = {}
    for name, text in zip(SERVICE_NAMES, texts, strict=True):
        if isinstance(text, str):
            try:
                scrape = Scrape.parse(name, time.monotonic(), text)
            except ValueError as exc:
                banners.append(Banner(name, f"{name}'s /metrics could not be read: {exc}"))
                continue
            pairs[name] = (scrape, history.add(scrape))
        elif isinstance(text, ServiceDown | Refused):
            banners.append(Banner(name, f"{name} is unavailable ({text}): its figures are missing"))
        else:
            raise text
    return overview(SERVICE_NAMES, pairs), banners


@router.get("/", include_in_schema=False)
async def overview_page(request: Request, session: SessionDep) -> Response:
    figures, banners = await _overview(request)
    return page(request, "overview.html", session, panel_banners=banners, o=figures)


@router.get("/overview/panel", include_in_schema=False)
async def overview_panel(request: Request, session: SessionDep) -> Response:
    figures, banners = await _overview(request)
    return page(request, "_overview_panel.html", session, panel_banners=banners, o=figures)


# ----------------------------------------------------------------- segments, accounts


@router.get("/segments", include_in_schema=False)
async def segments_page(request: Request, session: SessionDep) -> Response:
    reads = Reads(request, session)
    sizes, growth = await asyncio.gather(
        reads.get("segmenter", "/v1/segments", "the segments"),
        reads.get("insights", "/v1/insights/segments", "the segments' trend"),
    )
    trend: dict[str, Any] = {}
    for g in (growth or {}).get("segments", []):
        days = [float(step["size"]) for step in g.get("days", [])][-30:]
        trend[g["segment"]] = {"spark": sparkline(days), "months": g.get("months", [])[-6:]}
    rows = (sizes or {}).get("segments", [])
    chart = bar_chart([Bar(s["name"], s["size"], f"{s['size']:,}") for s in rows])
    return page(
        request,
        "segments.html",
        session,
        banners=reads.banners,
        segments=rows,
        trend=trend,
        chart=chart,
        member_value=(growth or {}).get("member_value", [])[-6:],
    )


@router.get("/segments/{name}", include_in_schema=False)
async def members_page(
    request: Request, session: SessionDep, name: str, after: str | None = None
) -> Response:
    reads = Reads(request, session)
    members = await reads.get(
        "segmenter",
        f"/v1/segments/{_q(name)}/members",
        f"the members of {name}",
        {"after": after, "limit": 50},
        missing=f"the segmenter knows no segment {name!r}",
    )
    return page(
        request,
        "members.html",
        session,
        banners=reads.banners,
        name=name,
        members=(members or {}).get("members", []),
        next_page=(members or {}).get("next"),
        after=after,
    )


@router.get("/accounts", include_in_schema=False)
async def find_account(request: Request, session: SessionDep, account: str = "") -> Response:
    account = account.strip()
    return _see(f"/accounts/{_q(account)}" if account else "/segments")


@router.get("/accounts/{account_id}", include_in_schema=False)
async def account_page(request: Request, session: SessionDep, account_id: str) -> Response:
    reads = Reads(request, session)
    a = _q(account_id)
    segments, offers, statement = await asyncio.gather(
        reads.get(
            "segmenter",
            f"/v1/accounts/{a}",
            "the account's features and segments",
            missing=f"the segmenter has no features of {account_id!r} (no events yet?)",
        ),
        reads.get(
            "offers",
            f"/v1/accounts/{a}/offers",
            "the account's offers",
            missing=f"no offers were made to {account_id!r}",
        ),
        reads.get(
            "ledger",
            f"/v1/accounts/{a}/credits",
            "the account's credits",
            missing=f"the ledger has no credits of {account_id!r}",
        ),
    )
    return page(
        request,
        "account.html",
        session,
        banners=reads.banners,
        account=account_id,
        seg=segments,
        offers=offers,
        statement=statement,
    )


# ----------------------------------------------------------------- offers


@router.get("/offers", include_in_schema=False)
async def offers_page(request: Request, session: SessionDep) -> Response:
    reads = Reads(request, session)
    summary, lift = await asyncio.gather(
        reads.get("offers", "/v1/offers/summary", "the offers summary"),
        reads.get("insights", "/v1/insights/lift", "the lift against the holdout"),
    )
    rules = (summary or {}).get("rules", {})
    totals = {name: sum(r["offers"].values()) for name, r in sorted(rules.items())}
    chart = bar_chart([Bar(name, n, f"{n:,}") for name, n in totals.items()])
    return page(
        request,
        "offers.html",
        session,
        banners=reads.banners,
        summary=summary,
        rules=rules,
        chart=chart,
        lift=lift,
        lifts=lift_blocks(lift),
    )


# ----------------------------------------------------------------- approvals


@router.get("/approvals", include_in_schema=False)
async def approvals_page(
    request: Request, session: SessionDep, status: Literal["pending", "all"] = "pending"
) -> Response:
    reads = Reads(request, session)
    listed = await reads.get("ledger", "/v1/approvals", "the approvals", {"status": status})
    approvals = (listed or {}).get("approvals", [])
    for a in approvals:  # the queue shows the tightest cap; the detail shows them all
        rooms = a.get("headroom") or []
        a["tightest"] = min(rooms, key=lambda r: r["left"] - r["needs"], default=None)
        a["binding"] = [r["cap"] for r in rooms if r["binds"]]
    return page(
        request,
        "approvals.html",
        session,
        banners=reads.banners,
        approvals=approvals,
        status=status,
        may_decide=session.may("approve"),
        csrf=session.csrf,
    )


@router.get("/approvals/{approval_id}", include_in_schema=False)
async def approval_page(request: Request, session: SessionDep, approval_id: str) -> Response:
    reads = Reads(request, session)
    detail = await reads.get(
        "ledger",
        f"/v1/approvals/{_q(approval_id)}",
        "the approval",
        missing=f"the ledger has no approval {approval_id!r}",
    )
    statement = None
    if detail:
        statement = await reads.get(
            "ledger", f"/v1/accounts/{_q(detail['account'])}/credits", "the account's credits"
        )
    return page(
        request,
        "approval.html",
        session,
        banners=reads.banners,
        a=detail,
        statement=statement,
        may_decide=session.may("approve"),
        csrf=session.csrf,
    )


@router.post("/approvals/{approval_id}/{action}", include_in_schema=False)
async def decide(
    request: Request,
    session: SessionDep,
    form: FormDep,
    approval_id: str,
    action: Literal["approve", "reject"],
) -> Response:
    require(session, "approve", f"to {action} a credit")
    body = {"comment": attributed(session.operator, _text(form, "comment"))}
    here = f"/approvals/{_q(approval_id)}"
    try:
        answer = await _services(request).post(
            "ledger", f"/v1/approvals/{_q(approval_id)}/{action}", session.key, body
        )
    except Refused as exc:
        if exc.status == 403:
            raise Forbidden(exc.detail, required_scope="approve") from None
        session.flash(f"The ledger refused to {action} {approval_id}: {exc.status} {exc.detail}")
        return _see(here)
    except ServiceDown as exc:
        session.flash(f"Nothing was done: the ledger is unavailable ({exc.reason}).")
        return _see(here)
    settled = answer.body or {}
    if answer.status == 202:
        session.flash(
            f"Your approval of {approval_id} is recorded; it is still pending: it needs"
            f" {settled.get('approvals_needed')} different approvers (four eyes), approved so far"
            f" by {', '.join(settled.get('approved_by', []))}."
        )
    else:
        session.flash(f"{approval_id}: {settled.get('status')} ({action}d by {session.holder}).")
    return _see(here)


# ----------------------------------------------------------------- ledger


@router.get("/ledger", include_in_schema=False)
async def ledger_page(request: Request, session: SessionDep) -> Response:
    reads = Reads(request, session)
    liability, credits, cost_share, decisions = await asyncio.gather(
        reads.get("ledger", "/v1/reports/liability", "the liability"),
        reads.get("ledger", "/v1/reports/credits", "the credits report"),
        reads.get("ledger", "/v1/reports/cost-share", "the cost share of ARR"),
        reads.get("ledger", "/v1/reports/decisions", "the decisions report"),
    )
    by_dimension: dict[str, list[Bar]] = {}
    for row in (liability or {}).get("liability", []):
        by_dimension.setdefault(row["dimension"], []).append(
            Bar(
                f"{row['key']} ({row['currency']})",
                row["outstanding"],
                f"{money(row['outstanding'], row['currency'])} · {row['credits']} credit"
                + ("" if row["credits"] == 1 else "s"),
            )
        )
    charts = {dim: bar_chart(bars) for dim, bars in sorted(by_dimension.items())}
    shares = [
        r for r in (cost_share or {}).get("segments", []) if r["cost_share_of_arr"] is not None
    ]
    share_chart = bar_chart(
        [
            Bar(
                f"{r['segment']} ({r['currency']})",
                r["cost_share_of_arr"],
                f"{r['cost_share_of_arr']:.2%} of {money(r['arr'], r['currency'])} ARR",
            )
            for r in shares
        ]
    )
    return page(
        request,
        "ledger.html",
        session,
        banners=reads.banners,
        charts=charts,
        credits=(credits or {}).get("credits", []),
        cost_share=(cost_share or {}).get("segments", []),
        share_chart=share_chart,
        decisions=(decisions or {}).get("decisions", []),
    )


# ----------------------------------------------------------------- insights


@router.get("/insights", include_in_schema=False)
async def insights_page(request: Request, session: SessionDep) -> Response:
    reads = Reads(request, session)
    nrr, upsell, bundles, ready = await asyncio.gather(
        reads.get("insights", "/v1/insights/nrr", "the net revenue retention"),
        reads.get("insights", "/v1/insights/upsell-rate", "the up-sell rate"),
        reads.get("insights", "/v1/insights/bundles", "the bundles"),
        reads.get("insights", "/v1/insights/bundles/ready", "the accounts ready for a bundle"),
    )
    # a group no month counted an account in (non-members when everybody is a
    # member) is a column of dashes: it is named under the table instead
    months = (nrr or {}).get("months", [])
    named = {g for p in months for g in p.get("groups", {})}
    groups = sorted(g for g in named if any(p["groups"].get(g, {}).get("accounts") for p in months))
    empty_groups = sorted(named - set(groups))
    return page(
        request,
        "insights.html",
        session,
        banners=reads.banners,
        nrr=nrr,
        groups=groups,
        empty_groups=empty_groups,
        upsell=upsell,
        bundles=bundles,
        ready=(ready or {}).get("ready", []),
    )


# ----------------------------------------------------------------- dead letters

_NO_DLQ_API = (
    "the dead-letter API is unavailable: this ingest does not offer /v1/dead-letters"
    " (an older version?), so dead letters cannot be listed or replayed here"
)


@router.get("/dead-letters", include_in_schema=False)
async def dead_letters_page(
    request: Request,
    session: SessionDep,
    topic: str = "",
    reason: str = "",
    status: Literal["open", "replayed", "discarded", "all"] = "open",
    after: str = "",
) -> Response:
    reads = Reads(request, session)
    params = {"topic": topic, "reason": reason, "status": status, "after": after, "limit": 100}
    listed = await reads.get(
        "ingest", "/v1/dead-letters", "the dead letters", params, missing=_NO_DLQ_API
    )
    entries = (listed or {}).get("dead_letters", [])
    per_topic: dict[str, int] = {}
    for e in entries:
        per_topic[e["topic"]] = per_topic.get(e["topic"], 0) + 1
    query = {"topic": topic, "reason": reason, "status": status}
    return page(
        request,
        "dead_letters.html",
        session,
        banners=reads.banners,
        available=listed is not None,
        entries=entries,
        per_topic=per_topic,
        reasons=sorted({e["reason"] for e in entries if e.get("reason")}),
        topic=topic,
        reason=reason,
        status=status,
        next_page=(listed or {}).get("next"),
        next_query=urlencode({**query, "after": (listed or {}).get("next") or ""}),
        may_act=session.may("admin"),
        csrf=session.csrf,
    )


@router.get("/dead-letters/{entry_id}", include_in_schema=False)
async def dead_letter_page(request: Request, session: SessionDep, entry_id: str) -> Response:
    reads = Reads(request, session)
    entry = await reads.get(
        "ingest",
        f"/v1/dead-letters/{_q(entry_id)}",
        "the dead letter",
        missing=f"ingest has no dead letter {entry_id!r} (or no dead-letter API)",
    )
    return page(
        request,
        "dead_letter.html",
        session,
        banners=reads.banners,
        e=entry,
        entry_id=entry_id,
        may_act=session.may("admin"),
        csrf=session.csrf,
    )


async def _dlq_action(
    request: Request, session: Session, path: str, body: dict[str, Any], back: str, what: str
) -> tuple[Any, RedirectResponse]:
    try:
        answer = await _services(request).post("ingest", path, session.key, body)
    except Refused as exc:
        if exc.status == 403:
            raise Forbidden(exc.detail, required_scope="admin") from None
        session.flash(f"Ingest refused to {what}: {exc.status} {exc.detail}")
        return None, _see(back)
    except ServiceDown as exc:
        session.flash(f"Nothing was done: ingest is unavailable ({exc.reason}).")
        return None, _see(back)
    return answer.body, _see(back)


@router.post("/dead-letters/replay", include_in_schema=False)
async def replay_all(request: Request, session: SessionDep, form: FormDep) -> Response:
    require(session, "admin", "replaying dead letters")
    reason, topic = _text(form, "reason"), _text(form, "topic")
    if not reason:
        session.flash("Give the reason whose dead letters to replay.")
        return _see("/dead-letters")
    body = {
        "reason": reason,
        "topic": topic or None,
        "comment": attributed(session.operator, _text(form, "comment")),
    }
    done, resp = await _dlq_action(
        request, session, "/v1/dead-letters/replay", body, "/dead-letters", "replay them"
    )
    if done is not None:
        session.flash(f"Replayed {done.get('replayed', 0)} dead letters with reason {reason!r}.")
    return resp


@router.post("/dead-letters/{entry_id}/{action}", include_in_schema=False)
async def act_on_dead_letter(
    request: Request,
    session: SessionDep,
    form: FormDep,
    entry_id: str,
    action: Literal["replay", "discard"],
) -> Response:
    require(session, "admin", f"to {action} a dead letter")
    text = _text(form, "comment" if action == "replay" else "reason")
    if action == "discard" and not text:
        session.flash("Give a reason to discard it.")
        return _see(f"/dead-letters/{_q(entry_id)}")
    key = "comment" if action == "replay" else "reason"
    done, resp = await _dlq_action(
        request,
        session,
        f"/v1/dead-letters/{_q(entry_id)}/{action}",
        {key: attributed(session.operator, text)},
        f"/dead-letters/{_q(entry_id)}",
        f"{action} {entry_id}",
    )
    if done is not None:
        where = done.get("replayed_to")
        to = ", ".join(f"{k} {v}" for k, v in where.items()) if isinstance(where, dict) else ""
        session.flash(f"{entry_id}: {done.get('status')}" + (f" (to {to})" if to else ""))
    return resp
