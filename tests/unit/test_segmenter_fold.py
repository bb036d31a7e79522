"""The tenant fold: time-driven transitions, lateness, RFM at rollovers, and
replay = live however the history is batched."""

from __future__ import annotations

import random
from collections.abc import Sequence
from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from schemas import Event
from services.runtime.batch import Inbound
from services.runtime.program_file import read_program
from services.segmenter.domain.days import day_of
from services.segmenter.domain.program import SegmenterProgram, load_program
from services.segmenter.domain.rfm import breakpoints, score
from services.segmenter.handlers import FoldResult, process, transition_event
from tests.unit.fakes import FakeAccountRepository
from tests.unit.segmenter_events import (
    at,
    cancel,
    key_action,
    login,
    onboarded,
    paid,
    seats,
    subscribed,
)

PROGRAM = load_program(read_program(None))


def inbound(events: Sequence[Event]) -> list[Inbound]:
    return [Inbound(e, "events.product", 0, i) for i, e in enumerate(events)]  # type: ignore[arg-type]


async def run(
    events: Sequence[Event],
    repo: FakeAccountRepository | None = None,
    program: SegmenterProgram = PROGRAM,
    chunks: Sequence[int] | None = None,
    now=None,
) -> tuple[FoldResult, FakeAccountRepository]:  # type: ignore[no-untyped-def]
    repo = repo or FakeAccountRepository()
    total = FoldResult()
    items = inbound(events)
    sizes = list(chunks or [len(items)])
    start = 0
    while start < len(items):
        size = sizes.pop(0) if sizes else len(items)
        result = await process(repo, program, items[start : start + size], now)
        total.transitions += result.transitions
        total.late += result.late
        start += size
    return total, repo


def moves(result: FoldResult, account: str) -> list[tuple[str, str, int]]:
    return [(t.kind, t.segment, t.as_of) for t in result.transitions if t.account == account]


def power_month(account: str, start: float = 0) -> list[Event]:
    """A month of heavy use: 2 key actions a day on 15 days."""
    out: list[Event] = [subscribed(account, at(start))]
    for d in range(15):
        out += [
            key_action(account, at(start + d * 2, 1)),
            key_action(account, at(start + d * 2, 2)),
        ]
    return out


async def test_a_silent_account_leaves_power_users_and_enters_at_risk_on_time() -> None:
    history = power_month("quiet") + power_month("busy")
    # only "busy" keeps sending events; time moves on for "quiet" all the same
    history += [login("busy", at(d, 3)) for d in range(30, 75)]
    result, repo = await run(history)
    quiet = moves(result, "quiet")
    assert any(k == "entered" and s == "power_users" for k, s, _ in quiet)
    last_activity = day_of(at(28))
    exits = [d for k, s, d in quiet if (k, s) == ("exited", "power_users")]
    enters = [d for k, s, d in quiet if (k, s) == ("entered", "at_risk")]
    assert len(exits) == 1 and len(enters) == 1
    assert enters[0] == last_activity + 30  # exactly 30 silent days, no event of its own
    assert exits[0] < enters[0]
    assert "at_risk" in repo.state("t", "quiet").segments
    assert "at_risk" not in repo.state("t", "busy").segments
    rollover_moves = [
        t for t in result.transitions if t.account == "quiet" and t.segment == "at_risk"
    ]
    assert rollover_moves[0].cause_id is None  # time alone did it


async def test_live_mode_moves_time_by_a_round_of_ticks_without_any_event() -> None:
    _, repo = await run(power_month("solo"))
    assert "power_users" in repo.state("t", "solo").segments
    # nothing arrives but a round of clock ticks, 40 days later
    transitions = (await process(repo, PROGRAM, [], now=at(70), rounds={"t": at(70)})).transitions
    assert ("entered", "at_risk", day_of(at(28)) + 30) in [
        (t.kind, t.segment, t.as_of) for t in transitions
    ]
    assert "power_users" not in repo.state("t", "solo").segments


async def test_late_events_within_lateness_count_later_ones_are_refused() -> None:
    first = login("a", at(10, 5))
    late_ok = key_action("a", at(10, 4.5))  # 30 min behind the watermark: fine (1h)
    too_late = key_action("a", at(10, 3.5))  # 90 min behind: refused
    result, repo = await run([first, late_ok, too_late])
    assert [item.event.id for item, _ in result.late] == [too_late.id]
    assert "allowed lateness 1:00:00" in result.late[0][1]
    f = repo.state("t", "a").features(day_of(at(10)), PROGRAM.rfm)
    assert f["key_actions_7d"] == 1


async def test_expansion_newly_activated_membership_and_tiers() -> None:
    history: list[Event] = [
        subscribed("a", at(0), seats=30),
        onboarded("a", at(1)),
        seats("a", at(2), 27),
        cancel("a", at(3)),
    ]
    result, repo = await run(history)
    entered = {s for k, s, _ in moves(result, "a") if k == "entered"}
    assert {"expansion_ready", "newly_activated", "member_new", "tier_gold", "at_risk"} <= entered
    result, repo = await run([login("a", at(45))], repo)
    gone = {s for k, s, _ in moves(result, "a") if k == "exited"}
    assert {"newly_activated", "member_new"} <= gone
    assert "member_active" in repo.state("t", "a").segments


async def test_rfm_scores_at_a_rollover_match_a_plain_computation() -> None:
    rnd = random.Random(3)
    history: list[Event] = []
    for i in range(12):
        acct = f"a{i:02d}"
        history.append(subscribed(acct, at(0), mrr=1000 * (i + 1)))
        for _ in range(rnd.randint(0, 15)):
            history.append(key_action(acct, at(rnd.uniform(0, 20))))
    history.sort(key=lambda e: e.time)
    history.append(login("a00", at(23)))  # rolls the tenant over to day 22/23
    result, repo = await run(history)
    as_of = repo.clocks["t"].stream_day
    assert as_of is not None
    values = {k[1]: repo.state(*k).rfm_values(as_of, PROGRAM.rfm) for k in repo.accounts}
    for dim in range(3):
        bps = breakpoints([v[dim] for v in values.values()])
        mine = {a: score(v[dim], bps) for a, v in values.items()}
        last = {t.account: t for t in result.transitions if t.as_of == as_of}
        for account, t in last.items():
            assert t.features[("r_score", "f_score", "m_score")[dim]] == mine[account]


# ------------------------------------------------------------------ replay = live


def histories() -> st.SearchStrategy[list[Event]]:
    accounts = [f"acct-{i}" for i in range(5)]

    def build(spec: list[tuple[int, int, int, int]]) -> list[Event]:
        events: list[Event] = [
            subscribed(a, at(0), seats=10 + 10 * i, mrr=5000 * (i + 1))
            for i, a in enumerate(accounts)
        ]
        for a_i, day, minute, kind in spec:
            a, t = accounts[a_i], at(day, minute / 60)
            events.append(
                [
                    login(a, t),
                    key_action(a, t),
                    seats(a, t, 5 + minute % 30),
                    paid(a, t, 5000),
                    key_action(a, t, key=False),
                ][kind]
            )
        events.sort(key=lambda e: e.time)
        # some events arrive a little late (within and beyond the allowed lateness)
        for i in range(0, len(events) - 3, 7):
            events[i], events[i + 2] = events[i + 2], events[i]
        return events

    return st.lists(
        st.tuples(st.integers(0, 4), st.integers(0, 80), st.integers(0, 1439), st.integers(0, 4)),
        max_size=80,
    ).map(build)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(histories(), st.lists(st.integers(1, 20), max_size=30))
async def test_replay_in_one_batch_equals_event_by_event_and_any_batching(
    history: list[Event], chunks: list[int]
) -> None:
    whole, repo_a = await run(history)
    single, repo_b = await run(history, chunks=[1] * len(history))
    mixed, repo_c = await run(history, chunks=chunks)
    expected = [transition_event(t).model_dump() for t in whole.transitions]
    for other in (single, mixed):
        assert [transition_event(t).model_dump() for t in other.transitions] == expected
        assert [i.event.id for i, _ in other.late] == [i.event.id for i, _ in whole.late]
    assert repo_a.accounts == repo_b.accounts == repo_c.accounts
    assert repo_a.clocks == repo_b.clocks == repo_c.clocks


async def test_one_batch_reads_and_writes_state_in_bulk() -> None:
    # 40 accounts: the last breakpoint draw (on doubling) was at 40, none is pending
    _, repo = await run([key_action(f"a{i}", at(0)) for i in range(40)])
    repo.round_trips = 0
    same_day = [login(f"a{i % 40}", at(0, i / 100)) for i in range(500)]
    _, repo = await run(same_day, repo)
    assert repo.round_trips == 3  # clocks, accounts, one write
    # moving RFM values makes the batch redraw breakpoints: one more read, once
    repo.round_trips = 0
    _, repo = await run([key_action(f"a{i % 50}", at(0, 5 + i / 100)) for i in range(500)], repo)
    assert repo.round_trips == 4
    # a batch crossing 30 stream days loads the rest of the tenant once, not daily
    repo.round_trips = 0
    _, repo = await run(power_month("a0") + power_month("a1"), repo)
    assert repo.round_trips == 4


def test_late_window_is_relative_to_the_watermark() -> None:
    assert PROGRAM.allowed_lateness == timedelta(hours=1)


async def test_live_mode_judges_lateness_on_arrival_not_on_our_backlog() -> None:
    on_time = key_action("a", at(10, 1))
    late = key_action("a", at(10, 2))
    items = [
        Inbound(on_time, "events.product", 0, 0, arrival=at(10, 1.5)),
        Inbound(late, "events.product", 0, 1, arrival=at(10, 3.5)),
    ]
    # processed long after both arrived (a backlog of ours): only the second is late
    result = await process(FakeAccountRepository(), PROGRAM, items, now=at(11, 6))
    assert [i.event.id for i, _ in result.late] == [late.id]
    assert "arrived at" in result.late[0][1]


async def test_live_mode_never_rolls_days_over_from_events() -> None:
    items = [Inbound(login("a", at(d)), "events.product", 0, d, arrival=at(d)) for d in range(5)]
    repo = FakeAccountRepository()
    result = await process(repo, PROGRAM, items[:1], now=at(0, 2))
    day0 = repo.clocks["t"].stream_day
    result = await process(repo, PROGRAM, items[1:], now=at(4, 2))
    assert repo.clocks["t"].stream_day == day0  # only a round of ticks moves it
    assert all(t.cause_id is not None for t in result.transitions)
    moved = (await process(repo, PROGRAM, [], now=at(4, 2), rounds={"t": at(4, 2)})).transitions
    assert repo.clocks["t"].stream_day == day_of(at(4))
    assert all(t.cause_id is None for t in moved)


async def test_a_growing_tenant_gets_spread_scores_without_waiting_for_midnight() -> None:
    events = [subscribed(f"a{i:02d}", at(0, i / 10), mrr=1000 * (i + 1)) for i in range(20)]
    _, repo = await run(events)
    m_scores = {a: view_of(repo, a)["m_score"] for _, a in repo.accounts}
    assert sorted(set(m_scores.values())) == [1, 2, 3, 4, 5]
    assert m_scores["a19"] == 5 and m_scores["a00"] == 1


def view_of(repo: FakeAccountRepository, account: str) -> dict[str, object]:
    from services.segmenter.domain.fold import account_view, full_view

    clock = repo.clocks["t"]
    assert clock.stream_day is not None
    return full_view(account_view(PROGRAM, clock, repo.state("t", account), clock.stream_day))
