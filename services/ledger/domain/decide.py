"""Deciding a grant (pure): which budgets it draws on, whether a cap binds, and
whether a human must approve it.

The caller supplies what is left: the account's cost in the rolling window and
each budget's headroom. Keeping this pure lets the same rules serve the consumer,
the approval endpoint and the tests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from schemas import Money
from schemas.events import MONETARY_REWARDS, OfferIssued
from services.ledger.domain.program import LedgerProgram

_ZERO_DECIMALS = {"JPY", "KRW", "VND", "CLP", "ISK", "HUF", "TWD", "UGX", "XAF", "XOF"}


def fmt(money: Money) -> str:
    """``12345 USD`` -> ``123.45 USD`` (for people; amounts stay integers everywhere)."""
    if money.currency in _ZERO_DECIMALS:
        return f"{money.amount:,} {money.currency}"
    sign = "-" if money.amount < 0 else ""
    units, cents = divmod(abs(money.amount), 100)
    return f"{sign}{units:,}.{cents:02d} {money.currency}"


@dataclass(frozen=True)
class GrantRequest:
    """An issued offer as the ledger weighs it."""

    tenant: str
    account: str
    offer_id: str
    rule: str
    kind: str
    value: Money | None  # credit the customer can spend; None if the reward is not credit
    cost: Money  # discount-equivalent cost: what the caps count
    at: datetime  # stream time of the decision
    arr: Money | None
    segments: tuple[str, ...]
    expires_days: int | None  # the reward's own validity, if it says

    @classmethod
    def of(cls, offer: OfferIssued) -> GrantRequest:
        d = offer.data
        monetary = d.reward.kind in MONETARY_REWARDS and d.reward.value is not None
        ctx = d.account
        return cls(
            tenant=offer.tenant,
            account=offer.subject,
            offer_id=d.offer_id,
            rule=d.rule,
            kind=d.reward.kind,
            value=d.reward.value if monetary and d.reward.value.amount > 0 else None,  # type: ignore[union-attr]
            cost=d.reward.cost,
            at=offer.time,
            arr=ctx.arr if ctx else None,
            segments=tuple(ctx.segments) if ctx else (),
            expires_days=d.reward.days,
        )


@dataclass(frozen=True, order=True)
class BudgetKey:
    """A shared budget: one cap in one period (``-`` when it has none) and currency."""

    tenant: str
    name: str  # program | tier:<segment> | reward:<kind> | liability
    period: str
    currency: str


@dataclass(frozen=True)
class Need:
    key: BudgetKey
    cap: Money
    amount: int
    label: str


def period(at: datetime) -> str:
    return f"{at.year:04d}-{at.month:02d}"


def needs(program: LedgerProgram, req: GrantRequest, at: datetime) -> list[Need]:
    """The budgets a grant draws on, in the order their refusals are reported."""
    month = period(at)
    out: list[Need] = []

    def add(name: str, cap: Money | None, amount: int, label: str, p: str = month) -> None:
        if cap is not None:
            out.append(Need(BudgetKey(req.tenant, name, p, cap.currency), cap, amount, label))

    add(f"reward:{req.kind}", program.reward_caps.get(req.kind), req.cost.amount, f"{req.kind} cap")
    tier = program.tier_of(list(req.segments))
    if tier is not None:
        add(f"tier:{tier}", program.tier_caps[tier], req.cost.amount, f"{tier} cap")
    add("program", program.program_cap, req.cost.amount, "program cap")
    if req.value is not None:
        add("liability", program.liability_cap, req.value.amount, "liability ceiling", "-")
    return out


def account_allowance(program: LedgerProgram, req: GrantRequest) -> Money | None:
    """What the account may cost in the rolling window; None if there is no such cap."""
    cap = program.account_cap
    if cap is None:
        return None
    arr = req.arr if req.arr is not None and req.arr.currency == req.cost.currency else None
    share = int((arr.amount if arr else 0) * cap.percent_of_arr // 100)
    floor = cap.floor.amount if cap.floor and cap.floor.currency == req.cost.currency else 0
    return Money(amount=max(share, floor), currency=req.cost.currency)


def window_cost(
    program: LedgerProgram,
    req: GrantRequest,
    at: datetime,
    granted: Iterable[tuple[datetime, int, str]],
) -> int:
    """What the account's ``granted`` costs ((when, cost, currency)) add up to in the
    account cap's rolling window ending at ``at``, in the request's currency."""
    start = at - program.account_window
    return sum(
        cost
        for when, cost, currency in granted
        if start < when <= at and currency == req.cost.currency
    )


@dataclass(frozen=True)
class Verdict:
    outcome: Literal["grant", "reject", "pending"]
    reason: str
    cap: str | None = None
    headroom: Money | None = None


def decide(
    program: LedgerProgram,
    req: GrantRequest,
    at: datetime,
    account_cost: int,
    headroom: Mapping[BudgetKey, int],
    *,
    approved: bool = False,
) -> Verdict:
    """Caps first (a grant no cap allows needs no human), then approval thresholds.

    ``account_cost`` is what the account cost in the window before ``at``, in the
    request's currency; ``headroom`` what each budget of :func:`needs` has left.
    """
    allowance = account_allowance(program, req)
    if allowance is not None:
        left = max(allowance.amount - account_cost, 0)
        if req.cost.amount > left:
            return _refuse(
                "account cap",
                Money(amount=left, currency=req.cost.currency),
                req.cost,
                f"{program.account_cap.percent_of_arr:g} % of ARR"  # type: ignore[union-attr]
                f" ({fmt(req.arr) if req.arr else 'no ARR'}) per rolling window",
            )
    for need in needs(program, req, at):
        money = req.value if need.key.name == "liability" else req.cost
        if money is None:
            continue
        if need.key.currency != money.currency:
            return Verdict(
                "reject",
                f"{need.label} is in {need.key.currency}; a {money.currency} grant cannot count"
                " against it",
                need.label,
                Money(amount=0, currency=money.currency),
            )
        left = headroom.get(need.key, 0)
        if need.amount > left:
            return _refuse(
                need.label,
                Money(amount=left, currency=money.currency),
                money,
                f"{fmt(need.cap)} for {need.key.period}"
                if need.key.period != "-"
                else f"{fmt(need.cap)} outstanding",
            )
    if not approved:
        above = program.approve_above
        if (
            above is not None
            and above.currency == req.cost.currency
            and req.cost.amount > above.amount
        ):
            return Verdict("pending", f"costs {fmt(req.cost)}, above {fmt(above)}")
        over = program.approve_account_over
        total = Money(amount=account_cost + req.cost.amount, currency=req.cost.currency)
        if over is not None and over.currency == total.currency and total.amount > over.amount:
            return Verdict(
                "pending", f"takes the account to {fmt(total)} in the window, over {fmt(over)}"
            )
    return Verdict("grant", "within every cap")


def approvals_needed(program: LedgerProgram, req: GrantRequest) -> int:
    """How many different approvers a grant held for approval needs: two when it
    costs more than ``approvals.second_approver_above`` (in its currency), else one.
    Counted when the grant is held, like the thresholds that held it."""
    second = program.second_approver_above
    if (
        second is not None
        and second.currency == req.cost.currency
        and req.cost.amount > second.amount
    ):
        return 2
    return 1


@dataclass(frozen=True)
class Room:
    """One cap a grant counts against, as an approver sees it: how much of it is
    used now and what this grant would take."""

    cap: str  # the label decisions name ("program cap", "account cap", ...)
    period: str  # YYYY-MM, "-" for the liability ceiling, "rolling" for the account cap
    limit: Money
    used: int
    needs: int

    @property
    def left(self) -> int:
        return max(self.limit.amount - self.used, 0)

    @property
    def binds(self) -> bool:
        """Approving now would be refused by this cap."""
        return self.needs > self.left


def rooms(
    program: LedgerProgram,
    req: GrantRequest,
    at: datetime,
    used: Mapping[BudgetKey, int],
    account_cost: int,
) -> list[Room]:
    """The caps' headroom for a grant at stream time ``at``, in the order
    :func:`decide` checks them: the account cap, then each budget of :func:`needs`.
    ``used`` is what each budget has used across partitions (what an approval,
    which pools the partitions' leases, can count on); ``account_cost`` what the
    account cost in the window before ``at``."""
    out: list[Room] = []
    allowance = account_allowance(program, req)
    if allowance is not None:
        out.append(Room("account cap", "rolling", allowance, account_cost, req.cost.amount))
    for need in needs(program, req, at):
        out.append(Room(need.label, need.key.period, need.cap, used.get(need.key, 0), need.amount))
    return out


def _refuse(cap: str, left: Money, needed: Money, what: str) -> Verdict:
    return Verdict(
        "reject",
        f"{cap} ({what}) has {fmt(left)} left; this needs {fmt(needed)}",
        cap,
        left,
    )
