"""The offers triggers beyond entering a segment: leaving one (``segment_exit``) and
insights' ``bundle.ready`` signal, through :func:`services.offers.handlers.process`
over the in-memory store."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest

from services.common.program import ProgramError
from services.offers.app import TOPICS
from services.offers.domain.program import load_offers_program
from tests.unit.test_offers_domain import (
    GOOD,
    PROGRAM,
    T0,
    bundle_ready,
    entered,
    exited,
    offers_of,
    program_with,
    reasons,
    run,
    treated,
)

REWARD = {"kind": "training", "cost": {"fixed": 0}}

# ------------------------------------------------------------------ segment_exit

ENTER_AND_EXIT = load_offers_program(
    program_with(
        {
            "welcome": {"trigger": {"segment": "power_users"}, "reward": REWARD},
            "lapsed": {"trigger": {"segment_exit": "power_users"}, "reward": REWARD},
        },
        power_users="key_actions_30d >= 20",
    )
)


def test_a_segment_exit_rule_fires_when_the_account_leaves_and_not_when_it_enters() -> None:
    account = treated(program=ENTER_AND_EXIT)
    out, repo = run([entered(account, "power_users", T0)], ENTER_AND_EXIT)
    assert [o.data.rule for o in offers_of(out)] == ["welcome"]
    assert reasons(repo, "lapsed") == []  # not even a candidate on entering

    left = T0 + timedelta(days=40)  # past the contact policy's window and quiet period
    out2, repo = run([exited(account, "power_users", left)], ENTER_AND_EXIT, repo)
    (offer,) = offers_of(out2)
    assert offer.data.rule == "lapsed"
    assert offer.data.explanation.trigger == "left segment power_users"
    assert offer.data.reason.startswith("left segment power_users: ")
    assert reasons(repo, "welcome") == []  # an entering rule does not fire on leaving


def test_leaving_fires_on_every_exit_each_judged_by_the_cooldown() -> None:
    account = treated(program=ENTER_AND_EXIT)
    exits = [
        exited(account, "power_users", T0 + timedelta(days=d), cause=f"day-{d}")
        for d in (0, 10, 45)
    ]
    out, repo = run(exits, ENTER_AND_EXIT)
    assert [o.time for o in offers_of(out, "lapsed")] == [T0, T0 + timedelta(days=45)]
    assert reasons(repo, "lapsed") == ["an offer of this rule is still open"]


def test_the_default_lapsed_power_user_gets_a_success_call_unless_cancelling() -> None:
    stays, cancels = treated(0), treated(1)
    out, _ = run(
        [
            exited(stays, "power_users", T0, ["member_active"]),
            exited(cancels, "power_users", T0, ["member_active"], cancellation_requested=True),
        ]
    )
    (offer,) = offers_of(out)
    assert (offer.subject, offer.data.rule) == (stays, "power_user_lapsed_call")
    assert offer.data.reward.kind == "training"
    assert offer.data.reward.cost.amount == 10_000
    assert offer.data.explanation.facts == {"cancellation_requested": False, "membership": "active"}


def test_leaving_one_segment_and_entering_another_at_once_is_one_moment() -> None:
    # a quiet month: the account leaves the power users and enters at_risk (one cause)
    account = treated()
    cause = f"{account}/day/30"
    out, _ = run(
        [
            exited(account, "power_users", T0, ["member_active"], cause=cause),
            entered(account, "at_risk", T0, ["member_active"], cause=cause),
        ]
    )
    (offer,) = offers_of(out)
    assert offer.data.rule == "at_risk_success_call"
    (loser,) = offer.data.explanation.competitors
    assert (loser.rule, loser.outcome) == ("power_user_lapsed_call", "lost")
    assert loser.reason == "lost to at_risk_success_call: priority 40 < 45"


# ------------------------------------------------------------------ bundle.ready

AUTOMATIONS = load_offers_program(
    program_with(
        {
            "automations_trial": {
                "trigger": {"event": "bundle.ready", "where": {"expected": "automations"}},
                "reward": {"kind": "feature_pass", "days": 14, "cost": {"fixed": 0}},
            }
        }
    )
)


def test_a_bundle_ready_rule_fires_on_a_matching_signal_only() -> None:
    matching, other = treated(0, AUTOMATIONS), treated(1, AUTOMATIONS)
    out, repo = run(
        [
            bundle_ready(matching, T0, "reports", "automations"),
            bundle_ready(other, T0, "reports", "api"),
        ],
        AUTOMATIONS,
    )
    (offer,) = offers_of(out)
    assert (offer.subject, offer.data.rule) == (matching, "automations_trial")
    assert offer.data.explanation.trigger == "bundle.ready (expected='automations')"
    assert offer.data.reward.days == 14
    assert offer.data.user_id is None  # a signal names no user
    assert reasons(repo, "automations_trial") == []  # the other one never fired it


def test_bundle_ready_where_compares_several_fields_and_lists_of_values() -> None:
    program = load_offers_program(
        program_with(
            {
                "r": {
                    "trigger": {
                        "event": "bundle.ready",
                        "where": {"adopted": "reports", "expected": ["automations", "api"]},
                    },
                    "reward": REWARD,
                }
            }
        )
    )
    accounts = [treated(i, program) for i in range(3)]
    signals = [
        bundle_ready(accounts[0], T0, "reports", "api"),
        bundle_ready(accounts[1], T0, "exports", "api"),
        bundle_ready(accounts[2], T0, "reports", "sso"),
    ]
    out, _ = run(signals, program)
    assert [o.subject for o in offers_of(out)] == [accounts[0]]


def test_the_default_bundle_trial_answers_a_ready_automations_bundle() -> None:
    account = treated()
    out, _ = run([bundle_ready(account, T0, "reports", "automations")])
    (offer,) = offers_of(out)
    assert offer.data.rule == "bundle_automations_trial"
    assert (offer.data.reward.kind, offer.data.reward.days) == ("feature_pass", 14)
    assert offer.data.expires_at == T0 + timedelta(days=21)
    out2, _ = run([bundle_ready(treated(1), T0, "reports", "sso")])
    assert offers_of(out2) == []


def test_the_offers_service_reads_insights_signals() -> None:
    assert "insights.signals" in TOPICS
    assert "bundle.ready" in PROGRAM.by_event


# ------------------------------------------------------------------ bad programs


@pytest.mark.parametrize(
    ("trigger", "expected"),
    [
        ({"segment_exit": "gone"}, "rule 'r', field 'trigger': unknown segment 'gone'"),
        (
            {"event": "bundle.ready", "where": {"feature": "automations"}},
            "rule 'r', field 'trigger.where': bundle.ready has no field 'feature'",
        ),
        ({"event": "bundle.stale"}, "rule 'r', field 'trigger': unknown trigger event"),
        ({"event": "segment.exited"}, "rule 'r', field 'trigger': unknown trigger event"),
        ({"event": "offer.issued"}, "rule 'r', field 'trigger': unknown trigger event"),
        (
            {"segment_exit": "hot", "where": {"segment": "hot"}},
            "rule 'r', field 'trigger': Value error, where and nth go with event triggers only",
        ),
        (
            {"segment_exit": "hot", "nth": 2},
            "rule 'r', field 'trigger': Value error, where and nth go with event triggers only",
        ),
        (
            {"segment": "hot", "segment_exit": "hot"},
            "rule 'r', field 'trigger': Value error, say one of segment: NAME,"
            " segment_exit: NAME or event: TYPE",
        ),
        (
            {"segment_exit": "hot", "event": "bundle.ready"},
            "rule 'r', field 'trigger': Value error, say one of",
        ),
        ({}, "rule 'r', field 'trigger': Value error, say one of"),
    ],
)
def test_a_bad_trigger_is_refused_naming_the_rule_and_the_field(
    trigger: dict[str, Any], expected: str
) -> None:
    with pytest.raises(ProgramError) as err:
        load_offers_program(program_with({"r": {**GOOD, "trigger": trigger}}))
    assert any(p.startswith(expected) for p in err.value.problems), err.value.problems


def test_a_discount_on_leaving_a_cancellation_segment_must_come_after_a_pause() -> None:
    rule = {
        "trigger": {"segment_exit": "staying"},
        "reward": {"kind": "discount", "value": {"percent": 20, "percent_of": "mrr"}},
    }
    with pytest.raises(ProgramError) as err:
        load_offers_program(program_with({"r": rule}, staying="not cancellation_requested"))
    assert any(
        p.startswith("rule 'r', field 'after': a discount answering cancellation intent")
        for p in err.value.problems
    ), err.value.problems
