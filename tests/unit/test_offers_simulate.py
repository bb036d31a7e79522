"""``loyalty offers simulate``: answers for the default program on a synthetic
history, and refuses a bad program naming the rule and the field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from services.cli import main
from services.demo import write_history
from services.runtime.program_file import DEFAULT_PROGRAM


def test_the_simulator_answers_for_the_default_program(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    history = tmp_path / "history.jsonl"
    n = write_history(history, accounts=60, days=45, seed=3)
    assert main(["offers", "simulate", "--events", str(history)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"{n} events, 60 accounts")
    rows = {
        line.split()[0]: line.split()
        for line in out.splitlines()
        if line and line.split()[0] in ("seat_expansion_credit", "onboarding_feature_pass")
    }
    assert int(rows["seat_expansion_credit"][1]) > 0  # issued
    assert int(rows["onboarding_feature_pass"][1]) > 0
    assert "total discount-equivalent cost: " in out and "held out =" in out
    assert "contact policy" in out  # suppressions are reported with their reasons
    # no side effects: a second run gives the same answer (timings aside)
    assert main(["offers", "simulate", "--events", str(history)]) == 0
    again = capsys.readouterr().out
    assert again.splitlines()[1:] == out.splitlines()[1:]


def test_the_simulator_refuses_a_bad_program(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = yaml.safe_load(DEFAULT_PROGRAM.read_text())
    raw["offers"]["rules"]["renewal_credit"]["trigger"] = {"segment": "renewal_soon"}
    raw["offers"]["rules"]["streak_beta"]["reward"]["kind"] = "yacht"
    program = tmp_path / "program.yaml"
    program.write_text(yaml.safe_dump(raw))
    history = tmp_path / "history.jsonl"
    write_history(history, accounts=2, days=1)
    code = main(["offers", "simulate", "--program", str(program), "--events", str(history)])
    assert code == 2
    err = capsys.readouterr().err
    assert "rule 'renewal_credit', field 'trigger': unknown segment 'renewal_soon'" in err
    assert "rule 'streak_beta', field 'reward.kind': unknown reward 'yacht'" in err
