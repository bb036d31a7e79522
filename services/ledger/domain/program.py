"""The ledger's part of the program file: caps, approval thresholds and expiries.

Every cap is on discount-equivalent cost (a reward's ``cost``), except the
liability ceiling, which is on outstanding credit. A cap is one amount in one
currency; a grant in a currency a configured cap does not name is refused by that
cap (safe by default: no currency escapes the guardrails). Periods are calendar
months (UTC) of the grant's stream time; the per-account window rolls.

Approval thresholds (``approvals.above``, ``account_over``, and the four-eyes
``second_approver_above``) apply only to grants in their own currency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from schemas import Money
from schemas.events import REWARD_KINDS
from services.common.durations import parse_duration
from services.common.program import ProgramError, Strict, where


class AccountCapSpec(Strict):
    percent_of_arr: float = Field(ge=0, le=100)
    window: str = "365d"
    floor: Money | None = Field(
        default=None, description="Allowance in the window for accounts without (enough) ARR."
    )


class CapsSpec(Strict):
    account: AccountCapSpec | None = None
    by_tier: dict[str, Money] = Field(default_factory=dict)
    program: Money | None = None
    by_reward: dict[str, Money] = Field(default_factory=dict)
    liability: Money | None = None


class ApprovalsSpec(Strict):
    above: Money | None = Field(default=None, description="One grant costing more waits.")
    account_over: Money | None = Field(
        default=None, description="A grant taking an account's cost in the window past it waits."
    )
    second_approver_above: Money | None = Field(
        default=None,
        description="A waiting grant costing more needs two different approvers (four eyes).",
    )
    expire_after: str = "7d"


class LeasesSpec(Strict):
    slice_percent: float = Field(default=5, gt=0, le=100)


class LedgerSection(Strict):
    credits_expire_in: str = "365d"
    caps: CapsSpec = CapsSpec()
    approvals: ApprovalsSpec = ApprovalsSpec()
    leases: LeasesSpec = LeasesSpec()


class LedgerSections(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)
    version: Literal[1] = 1
    segments: dict[str, Any] = Field(default_factory=dict)
    ledger: LedgerSection = LedgerSection()


@dataclass(frozen=True)
class AccountCap:
    percent_of_arr: float
    window: timedelta
    floor: Money | None


@dataclass(frozen=True)
class LedgerProgram:
    credits_expire_in: timedelta = timedelta(days=365)
    account_cap: AccountCap | None = None
    tier_caps: dict[str, Money] = field(default_factory=dict)
    program_cap: Money | None = None
    reward_caps: dict[str, Money] = field(default_factory=dict)
    liability_cap: Money | None = None
    approve_above: Money | None = None
    approve_account_over: Money | None = None
    second_approver_above: Money | None = None
    approval_window: timedelta = timedelta(days=7)
    account_window: timedelta = timedelta(days=365)
    slice_percent: float = 5.0

    def tier_of(self, segments: list[str]) -> str | None:
        """The account's usage tier: the first of its segments that has a tier cap."""
        return next((s for s in segments if s in self.tier_caps), None)


def load_ledger_program(raw: Any) -> LedgerProgram:
    """Validates the ``ledger`` section; one line per problem."""
    try:
        sections = LedgerSections.model_validate(raw)
    except ValidationError as exc:
        raise ProgramError(
            [where(e["loc"]) + e["msg"] for e in exc.errors(include_url=False)]
        ) from None
    section = sections.ledger
    problems: list[str] = []

    def duration(text: str, name: str) -> timedelta:
        try:
            d = parse_duration(text)
        except ValueError as exc:
            problems.append(f"ledger, field {name!r}: {exc}")
            return timedelta(0)
        if d <= timedelta(0):
            problems.append(f"ledger, field {name!r}: must be longer than zero")
        return d

    caps = section.caps
    for tier in caps.by_tier:
        if tier not in sections.segments:
            problems.append(f"ledger.caps.by_tier: unknown segment {tier!r}")
    for kind in caps.by_reward:
        if kind not in REWARD_KINDS:
            problems.append(
                f"ledger.caps.by_reward: unknown reward {kind!r} (one of {', '.join(REWARD_KINDS)})"
            )
    amounts = {
        "caps.program": caps.program,
        "caps.liability": caps.liability,
        "approvals.above": section.approvals.above,
        "approvals.account_over": section.approvals.account_over,
        "approvals.second_approver_above": section.approvals.second_approver_above,
        **{f"caps.by_tier.{k}": v for k, v in caps.by_tier.items()},
        **{f"caps.by_reward.{k}": v for k, v in caps.by_reward.items()},
    }
    if caps.account is not None and caps.account.floor is not None:
        amounts["caps.account.floor"] = caps.account.floor
    for name, money in amounts.items():
        if money is not None and money.amount < 0:
            problems.append(f"ledger.{name}: a negative amount ({money.amount})")
    account_cap = None
    window = timedelta(days=365)
    if caps.account is not None:
        window = duration(caps.account.window, "caps.account.window")
        account_cap = AccountCap(caps.account.percent_of_arr, window, caps.account.floor)
    program = LedgerProgram(
        credits_expire_in=duration(section.credits_expire_in, "credits_expire_in"),
        account_cap=account_cap,
        tier_caps=dict(caps.by_tier),
        program_cap=caps.program,
        reward_caps=dict(caps.by_reward),
        liability_cap=caps.liability,
        approve_above=section.approvals.above,
        approve_account_over=section.approvals.account_over,
        second_approver_above=section.approvals.second_approver_above,
        approval_window=duration(section.approvals.expire_after, "approvals.expire_after"),
        account_window=window,
        slice_percent=section.leases.slice_percent,
    )
    if problems:
        raise ProgramError(problems)
    return program
