"""The offers service's logic (program, arbitration, policy, holdouts, lifecycle)
through :func:`services.offers.handlers.process` over the in-memory store."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import Money
from schemas.events import (
    AccountFeatures,
    BundleReady,
    BundleReadyData,
    CancellationRequested,
    CancellationRequestedData,
    CreditApplied,
    CreditAppliedData,
    Event,
    FeatureUsed,
    FeatureUsedData,
    RfmScores,
    SegmentChangedData,
    SegmentEntered,
    SegmentExited,
)
from services.common.program import ProgramError
from services.offers.domain.engine import in_holdout, reason_kind
from services.offers.domain.program import OffersProgram, load_offers_program
from services.offers.handlers import process
from services.offers.memory import MemoryOfferRepository
from services.runtime.program_file import read_program

T0 = datetime(2026, 3, 2, 9, tzinfo=UTC)
RAW = read_program(None)
PROGRAM = load_offers_program(RAW)
_ids = itertools.count()


def treated(n: int = 0, program: OffersProgram = PROGRAM) -> str:
    """The n-th account name outside the holdout group."""
    names = (f"acct-{i}" for i in itertools.count())
    return next(itertools.islice((a for a in names if not in_holdout(program, "t", a)), n, None))


def held_out_account(program: OffersProgram = PROGRAM) -> str:
    return next(f"acct-{i}" for i in itertools.count() if in_holdout(program, "t", f"acct-{i}"))


def features(**over: Any) -> AccountFeatures:
    base: dict[str, Any] = {
        "seats_purchased": 20,
        "seats_used": 10,
        "mrr": Money(amount=100_000, currency="USD"),
        "arr": Money(amount=1_200_000, currency="USD"),
        "plan": "team",
        "interval": "month",
        "subscription_status": "active",
        "membership": "active",
        "paid_months": 1,
        "tenure_days": 100,
        "days_to_renewal": 200,
        "cancellation_requested": False,
    }
    base.update(over)
    return AccountFeatures(**base)


def entered(
    account: str,
    segment: str,
    t: datetime,
    segments: Sequence[str] = (),
    cause: str | None = None,
    user: str | None = None,
    **over: Any,
) -> SegmentEntered:
    return SegmentEntered(
        id=f"s{next(_ids)}",
        source="test",
        type="segment.entered",
        subject=account,
        tenant="t",
        time=t,
        data=_changed(segment, sorted({segment, *segments}), cause, user, **over),
    )


def exited(
    account: str,
    segment: str,
    t: datetime,
    segments: Sequence[str] = (),
    cause: str | None = None,
    **over: Any,
) -> SegmentExited:
    """``account`` left ``segment``; ``segments`` are those it is still in."""
    return SegmentExited(
        id=f"s{next(_ids)}",
        source="test",
        type="segment.exited",
        subject=account,
        tenant="t",
        time=t,
        data=_changed(segment, sorted(set(segments) - {segment}), cause, None, **over),
    )


def _changed(
    segment: str, segments: list[str], cause: str | None, user: str | None, **over: Any
) -> SegmentChangedData:
    return SegmentChangedData(
        segment=segment,
        features=features(**over),
        rfm=RfmScores(r=3, f=3, m=3, cell="loyal"),
        segments=segments,
        cause=cause or f"c{next(_ids)}",
        user_id=user,
    )


def bundle_ready(
    account: str, t: datetime, adopted: str = "reports", expected: str = "automations"
) -> BundleReady:
    return BundleReady(
        id=f"b{next(_ids)}",
        source="insights",
        type="bundle.ready",
        subject=account,
        tenant="t",
        time=t,
        data=BundleReadyData(
            sequence=f"{adopted}>{expected}",
            adopted=adopted,
            expected=expected,
            adopted_at=t - timedelta(days=12),
            typical_delay_days=11.5,
            support=0.2,
            confidence=0.6,
        ),
    )


def used(account: str, t: datetime, feature: str, user: str = "u-1") -> FeatureUsed:
    return FeatureUsed(
        id=f"f{next(_ids)}",
        source="test",
        type="product.feature_used",
        subject=account,
        tenant="t",
        time=t,
        data=FeatureUsedData(user_id=user, feature=feature),
    )


def cancel(account: str, t: datetime) -> CancellationRequested:
    return CancellationRequested(
        id=f"x{next(_ids)}",
        source="test",
        type="billing.cancellation_requested",
        subject=account,
        tenant="t",
        time=t,
        data=CancellationRequestedData(reason="too expensive"),
    )


def run(
    events: Sequence[Event],
    program: OffersProgram = PROGRAM,
    repo: MemoryOfferRepository | None = None,
    batch: int = 50,
) -> tuple[list[Event], MemoryOfferRepository]:
    repo = repo or MemoryOfferRepository()
    out: list[Event] = []

    async def go() -> None:
        for i in range(0, len(events), batch):
            out.extend((await process(repo, program, events[i : i + batch])).events)

    asyncio.run(go())
    return out, repo


def offers_of(out: Sequence[Event], rule: str | None = None) -> list[Event]:
    return [
        e
        for e in out
        if e.type in ("offer.issued", "offer.held_out") and (rule is None or e.data.rule == rule)
    ]


def reasons(repo: MemoryOfferRepository, rule: str) -> list[str]:
    return [s.suppression.reason for s in repo.suppressions.values() if s.suppression.rule == rule]


# ------------------------------------------------------------------ bad programs


def program_with(rules: dict[str, Any], **segments: str) -> dict[str, Any]:
    return {
        "version": 1,
        "segments": {name: {"when": w} for name, w in {"hot": "True", **segments}.items()},
        "offers": {"rules": rules},
    }


GOOD = {"trigger": {"segment": "hot"}, "reward": {"kind": "training", "cost": {"fixed": 0}}}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({**GOOD, "trigger": {"segment": "cold"}}, "rule 'r', field 'trigger': unknown segment"),
        (
            {**GOOD, "trigger": {"event": "product.teleported"}},
            "rule 'r', field 'trigger': unknown trigger event 'product.teleported'",
        ),
        (
            {**GOOD, "trigger": {"event": "product.feature_used", "where": {"colour": "red"}}},
            "rule 'r', field 'trigger.where': product.feature_used has no field 'colour'",
        ),
        (
            {**GOOD, "reward": {"kind": "pony", "cost": {"fixed": 0}}},
            "rule 'r', field 'reward.kind': unknown reward 'pony'",
        ),
        (
            {**GOOD, "reward": {"kind": "service_credit", "value": {"fixed": -5}}},
            "rule 'r', field 'reward.value': negative amount -5",
        ),
        (
            {
                **GOOD,
                "reward": {"kind": "discount", "value": {"percent": 120, "percent_of": "mrr"}},
            },
            "rule 'r', field 'reward.value': percent 120 is not between 0 and 100",
        ),
        ({**GOOD, "when": "'gone' in segments"}, "rule 'r', field 'when': unknown segment 'gone'"),
        ({**GOOD, "when": "seats_used >"}, "rule 'r', field 'when':"),
        ({**GOOD, "after": ["nope"]}, "rule 'r', field 'after': unknown rule 'nope'"),
        ({**GOOD, "cooldown": "soon"}, "rule 'r', field 'cooldown':"),
        ({**GOOD, "reward": {"kind": "training"}}, "rule 'r', field 'reward.cost':"),
        (
            {
                "trigger": {"event": "billing.cancellation_requested"},
                "reward": {"kind": "discount", "value": {"percent": 20, "percent_of": "mrr"}},
            },
            "rule 'r', field 'after': a discount answering cancellation intent must come after",
        ),
        ({**GOOD, "priority": "high"}, "rule 'r', field 'priority':"),
    ],
)
def test_a_bad_rule_is_refused_naming_the_rule_and_the_field(
    rule: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ProgramError) as err:
        load_offers_program(program_with({"r": rule}))
    assert any(p.startswith(expected) for p in err.value.problems), err.value.problems


def test_an_after_cycle_is_refused() -> None:
    rules = {"a": {**GOOD, "after": ["b"]}, "b": {**GOOD, "after": ["a"]}, "c": GOOD}
    with pytest.raises(ProgramError) as err:
        load_offers_program(program_with(rules))
    assert "rule 'a', field 'after': a cycle: a -> b -> a" in err.value.problems
    assert not any("'c'" in p for p in err.value.problems)


def test_the_default_program_is_valid_and_ships_every_playbook() -> None:
    triggers = {r.name: r.trigger for r in PROGRAM.rules}
    assert triggers["seat_expansion_credit"].segment == "expansion_ready"
    assert triggers["renewal_credit"].segment == "renewal_window"
    assert triggers["report_builder_beta"].nth == 10
    assert {r.kind for r in PROGRAM.rules} >= {
        "service_credit",
        "renewal_credit",
        "discount",
        "pause",
        "downgrade",
        "beta_access",
        "training",
        "feature_pass",
        "council_access",
    }


# ------------------------------------------------------- each default trigger


def _firing(account: str, t: datetime, rule: str, n: int) -> list[Event]:
    """Events that fire ``rule`` for ``account`` at ``t`` (the n-th time)."""
    segment_rules = {
        "seat_expansion_credit": ("expansion_ready", {"seats_used": 19}),
        "renewal_credit": (
            "renewal_window",
            {"interval": "year", "days_to_renewal": 60, "seats_purchased": 50},
        ),
        "onboarding_feature_pass": ("newly_activated", {"onboarding_completed": True}),
        "streak_beta": ("streak_5_days", {"active_day_streak": 5}),
        "weekly_habit_training": ("weekly_regulars", {"weekly_streak": 4}),
        "annual_conversion": ("annual_candidates", {"paid_months": 3}),
        "roadmap_council": ("advocates", {"last_nps": 10, "tenure_days": 400}),
        "at_risk_success_call": ("at_risk", {}),
    }
    if rule in segment_rules:
        segment, over = segment_rules[rule]
        extra = ["tier_gold"] if rule == "renewal_credit" else []
        return [entered(account, segment, t, extra, user="u-9", **over)]
    if rule == "power_user_lapsed_call":
        return [exited(account, "power_users", t, ["member_active"])]
    if rule == "bundle_automations_trial":
        return [bundle_ready(account, t)]
    if rule == "core_feature_training":
        return [used(account, t, ["api", "sso", "automations"][n % 3])]
    if rule == "report_builder_beta":
        return [used(account, t + timedelta(minutes=i), "reports") for i in range(10)]
    if rule == "cancel_pause":
        return [entered(account, "member_active", t), cancel(account, t + timedelta(minutes=1))]
    if rule == "cancel_downgrade":
        return [
            entered(account, "member_active", t, interval="year"),
            cancel(account, t + timedelta(minutes=1)),
        ]
    raise AssertionError(rule)


FIRST_CLASS = sorted(r.name for r in PROGRAM.rules if r.name != "cancel_save_discount")


@pytest.mark.parametrize("rule", FIRST_CLASS)
def test_each_default_trigger_fires_once_then_not_within_its_cooldown(rule: str) -> None:
    r = next(x for x in PROGRAM.rules if x.name == rule)
    account = treated()
    events = _firing(account, T0, rule, 0)
    out, repo = run(events)
    first = offers_of(out)
    assert [(o.type, o.data.rule) for o in first] == [("offer.issued", rule)]
    assert first[0].data.explanation is not None and first[0].data.explanation.trigger
    # again the next day, after it expired, and just before the cooldown ends
    later = [T0 + timedelta(days=2), T0 + r.expires_in + timedelta(days=1)]
    later += [T0 + r.cooldown - timedelta(hours=1)]
    again: list[Event] = []
    for n, t in enumerate(x for x in later if x < T0 + r.cooldown):
        again += _firing(account, t, rule, n + 1)
    out2, repo = run(again, repo=repo)
    assert offers_of(out2, rule) == []
    if r.trigger.nth is None:
        assert reasons(repo, rule), "each repeat is recorded with its reason"


def test_a_rule_fires_again_after_its_cooldown() -> None:
    account = treated()
    r = next(x for x in PROGRAM.rules if x.name == "seat_expansion_credit")
    _, repo = run(_firing(account, T0, r.name, 0))
    t = T0 + r.cooldown + timedelta(hours=1)
    out2, _ = run(_firing(account, t, r.name, 1), repo=repo)
    assert [o.data.rule for o in offers_of(out2)] == [r.name]


def test_renewal_credit_is_the_tier_percent_of_the_renewal_value() -> None:
    cases = {"tier_silver": 1, "tier_gold": 3, "tier_platinum": 5}
    for n, (tier, percent) in enumerate(cases.items()):
        account = treated(n)
        event = entered(
            account,
            "renewal_window",
            T0,
            [tier],
            interval="year",
            days_to_renewal=60,
            arr=Money(amount=1_234_567, currency="EUR"),
            mrr=Money(amount=102_880, currency="EUR"),
        )
        out, _ = run([event])
        (offer,) = offers_of(out)
        value = offer.data.reward.value
        assert value == Money(amount=1_234_567 * percent // 100, currency="EUR")
        assert offer.data.reward.cost == value
        assert offer.data.explanation.facts["value_basis"]["segment"] == tier


def test_the_nth_report_fires_once_and_first_uses_count_per_feature() -> None:
    account = treated()
    events = [used(account, T0 + timedelta(hours=i), "reports") for i in range(12)]
    events += [
        used(account, T0 + timedelta(days=20 + 20 * i), f)
        for i, f in enumerate(["api", "api", "sso"])
    ]
    out, _ = run(events)
    assert [o.data.rule for o in offers_of(out)] == [
        "report_builder_beta",
        "core_feature_training",
        "core_feature_training",
    ]
    assert "10th product.feature_used (feature='reports')" in offers_of(out)[0].data.reason
    assert "feature='sso'" in offers_of(out)[2].data.reason


def test_cancellation_gets_a_pause_first_and_a_discount_only_after_it() -> None:
    account = treated()
    events = [entered(account, "member_active", T0), cancel(account, T0 + timedelta(hours=1))]
    events.append(cancel(account, T0 + timedelta(days=20)))
    out, repo = run(events)
    assert [o.data.rule for o in offers_of(out)] == ["cancel_pause", "cancel_save_discount"]
    assert offers_of(out)[1].data.reward.value == Money(amount=20_000, currency="USD")
    # on the first request the discount was not even a candidate: it comes after a pause
    first = {s.suppression.rule: s.suppression.reason for s in repo.suppressions.values()}
    assert first["cancel_save_discount"].startswith("comes after cancel_pause or cancel_downgrade")


def test_one_offer_per_moment_by_priority_with_the_losers_explained() -> None:
    account = treated()
    cause = "one-event"
    events = [
        entered(account, "at_risk", T0, cause=cause, seats_used=19),
        entered(account, "expansion_ready", T0, ["at_risk"], cause=cause, seats_used=19),
    ]
    out, repo = run(events)
    (offer,) = offers_of(out)
    assert offer.data.rule == "seat_expansion_credit"
    explanation = offer.data.explanation
    assert explanation.trigger == "entered segment expansion_ready"
    assert explanation.facts["membership"] == "active"
    assert explanation.facts["value_basis"] == {"mrr": 100_000, "percent": 10.0}
    (loser,) = explanation.competitors
    assert (loser.rule, loser.outcome) == ("at_risk_success_call", "lost")
    assert loser.reason == "lost to seat_expansion_credit: priority 45 < 50"
    assert reasons(repo, "at_risk_success_call") == [loser.reason]


def test_the_offer_names_the_user_who_caused_it() -> None:
    account = treated()
    out, _ = run([used(account, T0, "api", user="ada")])
    assert offers_of(out)[0].data.user_id == "ada"


def test_a_held_out_account_gets_a_recorded_decision_and_no_offer() -> None:
    account = held_out_account()
    out, repo = run(_firing(account, T0, "seat_expansion_credit", 0))
    assert [o.type for o in out] == ["offer.held_out"]
    assert out[0].data.holdout is True
    # it counts for the contact policy like a real offer would
    out2, _ = run(_firing(account, T0 + timedelta(hours=2), "at_risk_success_call", 0), repo=repo)
    assert offers_of(out2) == []


def test_offers_expire_in_stream_time_and_credits_redeem_them() -> None:
    a, b = treated(0), treated(1)
    out, repo = run(
        _firing(a, T0, "seat_expansion_credit", 0) + _firing(b, T0, "seat_expansion_credit", 0)
    )
    offer_a, offer_b = offers_of(out)
    applied = CreditApplied(
        id="inv-1-credit",
        source="billing",
        type="billing.credit_applied",
        subject=b,
        tenant="t",
        time=T0 + timedelta(days=3),
        data=CreditAppliedData(
            credit_id=offer_b.data.offer_id,
            invoice_id="inv-1",
            amount=Money(amount=100, currency="USD"),
        ),
    )
    out2, repo = run([applied], repo=repo)
    assert [(e.type, e.data.offer_id) for e in out2] == [("offer.redeemed", offer_b.data.offer_id)]
    # nothing else happens until stream time passes 30 days: then a's offer expires
    late = T0 + timedelta(days=31)
    out3, _ = run([used("someone-else", late, "exports")], repo=repo)
    assert [(e.type, e.data.offer_id, e.time) for e in out3] == [
        ("offer.expired", offer_a.data.offer_id, T0 + timedelta(days=30))
    ]


# ------------------------------------------------------------ policy, holdouts, replay

_SEGMENT_RULES = [
    n for n in FIRST_CLASS if n not in ("core_feature_training", "report_builder_beta")
]


@st.composite
def streams(draw: st.DrawFn) -> list[Event]:
    accounts = [treated(i) for i in range(3)]
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(accounts),
                st.integers(min_value=0, max_value=400 * 24),  # hours
                st.sampled_from([*_SEGMENT_RULES, "core_feature_training"]),
            ),
            min_size=1,
            max_size=60,
        )
    )
    events: list[Event] = []
    for n, (account, hours, rule) in enumerate(sorted(steps, key=lambda s: s[1])):
        events += _firing(account, T0 + timedelta(hours=hours), rule, n)
    return sorted(events, key=lambda e: e.time)


@settings(max_examples=60, deadline=None)
@given(streams())
def test_the_contact_policy_holds_on_a_random_stream(events: list[Event]) -> None:
    out, _ = run(events, batch=7)
    by_account: dict[str, list[Event]] = {}
    for o in offers_of(out):
        by_account.setdefault(o.subject, []).append(o)
    rules = {r.name: r for r in PROGRAM.rules}
    for offers in by_account.values():
        times = [o.time for o in offers]
        assert times == sorted(times)
        for i, t in enumerate(times):
            in_window = [x for x in times if t - PROGRAM.window < x <= t]
            assert len(in_window) <= PROGRAM.max_offers
            if i:
                assert t - times[i - 1] >= PROGRAM.quiet_period
        for a, b in itertools.combinations(offers, 2):
            if a.data.rule == b.data.rule:
                assert b.time - a.time >= rules[a.data.rule].cooldown  # and so never both open
        assert len({o.data.explanation.trigger + o.id for o in offers}) == len(offers)


def test_the_holdout_share_on_10000_accounts_is_the_setting_and_stable() -> None:
    accounts = [f"acct-{i}" for i in range(10_000)]
    first = [in_holdout(PROGRAM, "t", a) for a in accounts]
    share = sum(first) / len(accounts)
    assert abs(share - 0.10) <= 0.01, share
    again = load_offers_program(RAW)  # as a restarted or second instance would
    assert [in_holdout(again, "t", a) for a in accounts] == first
    salted = load_offers_program({**RAW, "offers": {**RAW["offers"], "holdout": {"salt": "v2"}}})
    assert [in_holdout(salted, "t", a) for a in accounts] != first


def test_the_holdout_share_of_real_decisions_matches() -> None:
    events = [
        entered(f"acct-{i}", "expansion_ready", T0 + timedelta(seconds=i), seats_used=19)
        for i in range(2_000)
    ]
    out, _ = run(events, batch=500)
    held = sum(o.type == "offer.held_out" for o in offers_of(out))
    assert len(offers_of(out)) == 2_000
    assert 0.08 <= held / 2_000 <= 0.12


@settings(max_examples=20, deadline=None)
@given(streams())
def test_a_replay_of_the_same_events_yields_the_same_decisions(events: list[Event]) -> None:
    first, _ = run(events, batch=50)
    second, _ = run(events, batch=50)
    one_by_one, _ = run(events, batch=1)  # every cause here is a single event

    def dump(out: list[Event]) -> list[dict[str, Any]]:
        return [e.model_dump(mode="json") for e in out]

    assert dump(second) == dump(first)
    # batches only move when an untouched account's expiry is noticed
    assert dump(offers_of(one_by_one)) == dump(offers_of(first))
    assert sorted(e.id for e in one_by_one) == sorted(e.id for e in first)


def test_an_input_arriving_after_later_ones_cannot_break_the_policy() -> None:
    # the service reads five topics: a transition may come after a later event
    account = treated()
    later = _firing(account, T0 + timedelta(hours=5), "seat_expansion_credit", 0)
    out, repo = run(later)
    assert len(offers_of(out)) == 1
    earlier = _firing(account, T0 + timedelta(hours=1), "onboarding_feature_pass", 0)
    out2, repo = run(earlier, repo=repo)
    assert offers_of(out2) == []
    assert reasons(repo, "onboarding_feature_pass") == [
        "contact policy: quiet period of 1d after an offer"
    ]


@pytest.mark.parametrize(
    ("reason", "kind"),
    [
        ("cooldown 60d since the offer of 2026-06-14", "cooldown 60d"),
        ("cooldown 60d since the offer of 2026-07-01", "cooldown 60d"),
        ("lost to renewal_credit: higher priority (10 > 5)", "lost to renewal_credit"),
        (
            "contact policy: 3 offers in the last 30d (at most 3)",
            "contact policy: offers per window",
        ),
        ("contact policy: quiet period of 2d after an offer", "contact policy: quiet period"),
        ("an offer of this rule is still open", "an offer of this rule is still open"),
    ],
)
def test_suppressions_are_counted_by_the_kind_of_their_reason(reason: str, kind: str) -> None:
    """The offers summary and ``loyalty simulate`` count by it: a cooldown's date or
    a count in the reason must not split one kind into a line per day."""
    assert reason_kind(reason) == kind
