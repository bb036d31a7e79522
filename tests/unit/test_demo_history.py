"""``loyalty demo history``: a deterministic synthetic SaaS history whose base
dynamics look like SaaS (baskets that differ, churn, expansion, contraction,
moves to annual plans) and whose planted effects show in the raw events."""

from __future__ import annotations

import itertools
import json
import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from services.cli import main
from services.demo import FEATURES, HISTORY_START, Plant, write_history
from services.offers.domain.engine import in_holdout
from services.segmenter.backfill import read_history

DAYS = 180
END = HISTORY_START + timedelta(days=DAYS)
SEQUENCE = ("exports", "automations", 20.0, 0.4)
PAIR = ("api", "sso")
PLANT = Plant(
    tenant="acme",
    holdout_percent=50,  # two even arms: a tighter check of the retention plant
    retention_points=20,
    cohort=2000,
    sequence=SEQUENCE,
    pair=PAIR,
)


@dataclass
class Account:
    events: list[dict[str, Any]] = field(default_factory=list)
    adopted: dict[str, datetime] = field(default_factory=dict)  # first use of each feature
    subscriptions: list[tuple[datetime, dict[str, Any]]] = field(default_factory=list)

    @property
    def canceled_at(self) -> datetime | None:
        for t, data in self.subscriptions:
            if data["status"] == "canceled":
                return t
        return None


def parse(path: Path) -> dict[str, Account]:
    accounts: dict[str, Account] = defaultdict(Account)
    for line in path.open():
        e = json.loads(line)
        e["time"] = datetime.fromisoformat(e["time"])
        a = accounts[e["subject"]]
        a.events.append(e)
        if e["type"] == "product.feature_used":
            a.adopted.setdefault(e["data"]["feature"], e["time"])
        elif e["type"] == "billing.subscription_updated":
            a.subscriptions.append((e["time"], e["data"]))
    return dict(accounts)


def days_between(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds() / 86_400


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Account]]:
    path = tmp_path_factory.mktemp("history") / "planted.jsonl"
    write_history(path, accounts=1200, days=DAYS, seed=11, plant=PLANT)
    return path, parse(path)


def base(accounts: dict[str, Account]) -> dict[str, Account]:
    return {k: a for k, a in accounts.items() if k.startswith("acct-")}


def test_the_same_seed_writes_the_same_bytes(tmp_path: Path) -> None:
    plant = Plant(retention_points=15, cohort=30, sequence=("reports", "api", 10, 0.5), pair=PAIR)
    one, two, other = tmp_path / "one.jsonl", tmp_path / "two.jsonl", tmp_path / "other.jsonl"
    n = write_history(one, accounts=40, days=140, seed=4, plant=plant)
    assert write_history(two, accounts=40, days=140, seed=4, plant=plant) == n
    assert one.read_bytes() == two.read_bytes()
    assert len(one.read_text().splitlines()) == n
    write_history(other, accounts=40, days=140, seed=5, plant=plant)
    assert other.read_bytes() != one.read_bytes()
    # no plant at all is the same as the empty plant
    write_history(one, accounts=40, days=60, seed=4)
    write_history(two, accounts=40, days=60, seed=4, plant=Plant())
    assert one.read_bytes() == two.read_bytes()


def test_every_event_passes_the_contracts(tmp_path: Path) -> None:
    path = tmp_path / "small.jsonl"
    n = write_history(path, accounts=150, days=140, seed=2, plant=Plant(cohort=100))
    events = read_history(path, "demo")
    assert len(events) == n and len({e.id for e in events}) == n
    types = {e.type for e in events}
    assert {"billing.cancellation_requested", "support.ticket_closed"} <= types


def test_the_history_is_ordered_and_honest(planted: tuple[Path, dict[str, Account]]) -> None:
    path, accounts = planted
    times = [datetime.fromisoformat(json.loads(line)["time"]) for line in path.open()]
    assert times == sorted(times)  # the file itself is in time order
    assert len(base(accounts)) == 1200
    assert len([k for k in accounts if k.startswith("churn-")]) == PLANT.cohort
    for a in accounts.values():
        first = a.events[0]
        assert first["type"] == "billing.subscription_updated"  # subscribed before anything
        assert first["time"].date() == HISTORY_START.date()
        gone = a.canceled_at
        if gone is None:
            continue
        after = [e for e in a.events if e["time"] > gone]
        assert not [e for e in after if e["type"].startswith("billing.")]
        assert {e["type"] for e in after} <= {"product.login"}  # little product use
        assert len(after) <= 8  # a login on 3 % of the 30 days after


def test_accounts_adopt_features_one_at_a_time_and_baskets_differ(
    planted: tuple[Path, dict[str, Account]],
) -> None:
    _, accounts = planted
    fleet = base(accounts)
    start = HISTORY_START
    # one feature on day 0, often a second within two weeks
    day_0 = [sum(days_between(start, t) < 1 for t in a.adopted.values()) for a in fleet.values()]
    assert set(day_0) <= {1, 2}  # two: the planted pair, adopted the same day
    by_day_15 = [
        sum(days_between(start, t) < 15 for t in a.adopted.values()) for a in fleet.values()
    ]
    assert statistics.mean(by_day_15) < 2.2
    sizes = [len(a.adopted) for a in fleet.values()]
    assert statistics.mean(sizes) < 3.5  # nobody is made to use everything
    assert sizes.count(len(FEATURES)) < 0.1 * len(fleet)
    baskets = {frozenset(a.adopted) for a in fleet.values()}
    assert len(baskets) >= 30
    # later adoptions: a few percent a week (the planted ones aside)
    later = sum(
        1
        for a in fleet.values()
        for f, t in a.adopted.items()
        if days_between(start, t) >= 15 and f not in (*PAIR, SEQUENCE[1])
    )
    weekly = later / len(fleet) / ((DAYS - 15) / 7)
    assert 0.01 < weekly < 0.05
    # the cohort uses no feature: it leaves baskets and sequences alone
    assert not [k for k, a in accounts.items() if k.startswith("churn-") and a.adopted]


def test_the_base_fleet_churns_grows_shrinks_and_moves_to_annual(
    planted: tuple[Path, dict[str, Account]],
) -> None:
    _, accounts = planted
    fleet = base(accounts)
    months = DAYS / 30
    churned = sum(a.canceled_at is not None for a in fleet.values())
    assert 0.005 < churned / len(fleet) / months < 0.02  # 1-2 % a month
    more = fewer = annual = 0
    for a in fleet.values():
        for (_, before), (t, after) in itertools.pairwise(a.subscriptions):
            more += after["seats_purchased"] > before["seats_purchased"]
            fewer += after["seats_purchased"] < before["seats_purchased"]
            if before["interval"] == "month" and after["interval"] == "year":
                annual += 1
                assert after["mrr"] == before["mrr"]
                renewal = date.fromisoformat(after["renewal_date"])
                assert (renewal - t.date()).days == 365
    assert 0.01 < more / len(fleet) / months < 0.08
    assert 0.003 < fewer / len(fleet) / months < 0.03
    assert 0.003 < annual / len(fleet) / months < 0.03
    # monthly plans pay every 30 days and stay current: the renewal date moves on
    for a in fleet.values():
        if a.canceled_at is None:
            assert date.fromisoformat(a.subscriptions[-1][1]["renewal_date"]) >= END.date()


def test_the_retention_plant_shows_in_the_raw_history(
    planted: tuple[Path, dict[str, Account]],
) -> None:
    _, accounts = planted
    program = PLANT.program()
    assert program.holdout_percent == 50
    churned: dict[bool, list[bool]] = {True: [], False: []}
    first, last = PLANT.request_days(DAYS)
    for k, a in accounts.items():
        if not k.startswith("churn-"):
            continue
        subs = a.subscriptions
        assert subs[0][1]["interval"] == "month" and subs[0][1]["status"] == "active"
        requests = [e for e in a.events if e["type"] == "billing.cancellation_requested"]
        assert len(requests) == 1
        asked = requests[0]["time"]
        assert first <= days_between(HISTORY_START, asked) < last + 1
        gone = a.canceled_at
        if gone is not None:
            assert 1 <= (gone.date() - asked.date()).days <= 20
            # every exposure matures: churn is in well before the horizon's end
            assert days_between(asked, gone) < PLANT.horizon_days
        else:  # retained: still paying, still active
            assert subs[-1][1]["status"] == "active"
            paid = [e for e in a.events if e["type"] == "billing.invoice_paid"]
            assert days_between(paid[-1]["time"], END) <= 30
        churned[in_holdout(program, PLANT.tenant, k)].append(gone is not None)
    held, treated = churned[True], churned[False]
    assert 0.4 < len(held) / PLANT.cohort < 0.6
    held_rate, treated_rate = sum(held) / len(held), sum(treated) / len(treated)
    assert held_rate == pytest.approx(1 - PLANT.base_retention, abs=0.05)
    assert held_rate - treated_rate == pytest.approx(PLANT.retention_points / 100, abs=0.07)


def test_the_sequence_plant_shows_in_the_raw_history(
    planted: tuple[Path, dict[str, Account]],
) -> None:
    _, accounts = planted
    a_, b_, delay, share = SEQUENCE
    end = max(e["time"] for a in accounts.values() for e in a.events)
    eligible = [
        a
        for a in base(accounts).values()
        if a_ in a.adopted
        and (b_ not in a.adopted or a.adopted[b_] > a.adopted[a_])
        and days_between(a.adopted[a_], end) > delay + 3
        and (a.canceled_at is None or days_between(a.adopted[a_], a.canceled_at) > delay + 3)
    ]
    assert len(eligible) > 200
    delays = [days_between(a.adopted[a_], a.adopted[b_]) for a in eligible if b_ in a.adopted]
    on_time = [d for d in delays if delay - 3 <= d <= delay + 3]
    assert len(on_time) / len(eligible) == pytest.approx(share, abs=0.07)
    assert statistics.median(on_time) == pytest.approx(delay, abs=1.0)
    assert len(delays) - len(on_time) < 0.04 * len(eligible)  # otherwise B is rare


def test_the_planted_pair_is_the_strongest_pair(
    planted: tuple[Path, dict[str, Account]],
) -> None:
    _, accounts = planted
    baskets = [a.adopted for a in base(accounts).values()]

    def jaccard(x: str, y: str) -> float:
        either = sum(x in b or y in b for b in baskets)
        return sum(x in b and y in b for b in baskets) / either

    def together(x: str, y: str) -> float:
        """Of the accounts with both, the share that adopted them within 2 days."""
        both = [b for b in baskets if x in b and y in b]
        return sum(abs(days_between(b[x], b[y])) <= 2 for b in both) / len(both)

    scores = {pair: jaccard(*pair) for pair in itertools.combinations(FEATURES, 2)}
    planted_score = scores.pop(PAIR)
    assert planted_score > 0.7 and planted_score > max(scores.values()) + 0.2
    assert together(*PAIR) > 0.8
    assert max(together(*pair) for pair in scores) < 0.6


def test_the_cli_writes_the_same_history(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "cli.jsonl"
    argv = ["demo", "history", "--out", str(out), "--accounts", "20", "--days", "140"]
    argv += ["--seed", "3", "--tenant", "acme", "--plant-retention", "20"]
    argv += ["--plant-cohort", "10", "--plant-sequence", "reports:api:10:0.5"]
    argv += ["--plant-pair", "sso:exports"]
    assert main(argv) == 0
    assert "for 20 accounts and a cohort of 10 over 140 days" in capsys.readouterr().out
    plant = Plant(
        tenant="acme",
        retention_points=20,
        cohort=10,
        sequence=("reports", "api", 10.0, 0.5),
        pair=("sso", "exports"),
    )
    again = tmp_path / "api.jsonl"
    write_history(again, 20, 140, 3, plant=plant)
    assert out.read_bytes() == again.read_bytes()


def test_the_cli_refuses_bad_plants(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "x.jsonl")
    assert main(["demo", "history", "--out", out, "--days", "100", "--plant-cohort", "5"]) == 2
    assert "a cohort needs 130 days or more" in capsys.readouterr().err
    for bad in (["--plant-pair", "api:yacht"], ["--plant-sequence", "api:sso:7"]):
        with pytest.raises(SystemExit) as exc:
            main(["demo", "history", "--out", out, *bad])
        assert exc.value.code == 2
    assert "unknown feature 'yacht'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="retention_points"):
        Plant(retention_points=60)
