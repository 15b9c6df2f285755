"""The reproduction suite's claims: sourced data, and judges that decide on recorded results."""

from __future__ import annotations

import re

import pytest

from rnnguard.bench.claims import (
    CLAIMS,
    Claim,
    ClaimJob,
    ClaimRun,
    claims_table,
    fails,
    fails_where_other_solves,
    lower_bpc,
    solves,
)
from rnnguard.errors import ConfigError
from rnnguard.tasks import list_tasks
from rnnguard.train.recipes import list_recipes


@pytest.mark.parametrize("claim", CLAIMS, ids=lambda c: c.key)
def test_every_claim_is_sourced_and_runnable(claim: Claim) -> None:
    if not claim.key.startswith("guide-"):  # the guide's own cells cite the guide
        assert re.search(r"(19|20)\d\d", claim.source), "a source names its year"
    assert re.search(r"(Table|Fig\.|Sec\.)", claim.source), "and where in it"
    for text in (
        claim.published_setting,
        claim.published_value,
        claim.our_setting,
        claim.paper_budget,
    ):
        assert text.strip()
    for run in claim.runs:
        assert run.recipe in list_recipes()
        assert run.task in list_tasks()
        spec = run.spec()
        assert spec.recipe == run.recipe and spec.steps == run.steps


def test_claim_keys_are_unique() -> None:
    keys = [c.key for c in CLAIMS]
    assert len(keys) == len(set(keys))


ADD = ClaimRun("indrnn-relu", "adding", 1000, steps=10)


def test_solves_judge() -> None:
    short, full = solves(ADD, full_budget=False), solves(ADD, full_budget=True)
    hit = {"metric": 0.004, "solved": True, "solved_step": 3100}
    miss = {"metric": 0.16, "solved": False, "steps": 10}
    assert short([hit]).outcome == full([hit]).outcome == "reproduced"
    assert "3100" in short([hit]).measured
    assert short([miss]).outcome == "inconclusive at this budget"
    assert full([miss]).outcome == "not reproduced"
    assert short([{"status": "error", "error": "boom"}]).outcome == "inconclusive at this budget"


def test_fails_judge_uses_the_task_baseline() -> None:
    judge = fails(ClaimRun("lstm", "copy", 100, steps=10))  # baseline 10 ln 8 / 120 = 0.173
    assert judge([{"metric": 0.17, "solved": False}]).outcome == "reproduced"
    assert judge([{"metric": 0.10, "solved": False}]).outcome == "inconclusive at this budget"
    assert judge([{"metric": 0.001, "solved": True}]).outcome == "not reproduced"
    assert judge([{"metric": float("nan"), "solved": False}]).outcome == "reproduced"


def test_lower_bpc_judge_needs_more_than_noise() -> None:
    a = ClaimRun("lstm-ln-clip", "ptb-char", 100, 10, kind="lm")
    b = ClaimRun("lstm", "ptb-char", 100, 10, kind="lm")
    judge = lower_bpc(a, b)
    assert judge([{"metric": 1.70}, {"metric": 1.80}]).outcome == "reproduced"
    assert judge([{"metric": 1.79}, {"metric": 1.80}]).outcome == "inconclusive at this budget"
    assert judge([{"metric": 1.90}, {"metric": 1.80}]).outcome == "not reproduced"


def test_claim_job_waits_for_every_run_then_renders_its_verdict() -> None:
    claim = next(c for c in CLAIMS if c.key == "layernorm-lstm-ptb")
    job = ClaimJob(claim)
    assert len(job.pending()) == 2 and job.verdict() is None
    assert "pending" in claims_table([job])
    first, second = job.pending()
    job.feed(first, {"metric": 1.7})
    assert job.pending() == [second] and job.verdict() is None
    job.feed(second, {"metric": 1.9})
    assert job.done
    verdict = job.verdict()
    assert verdict is not None and verdict.outcome == "reproduced"
    table = claims_table([job])
    assert "**reproduced**" in table and claim.source in table and "1.267 vs 1.312" in table


def test_a_claim_without_source_or_runs_is_refused() -> None:
    with pytest.raises(ConfigError, match="source"):
        Claim("k", "s", "", "p", "v", "o", "b", (ADD,), solves(ADD, False))
    with pytest.raises(ConfigError, match="runs"):
        Claim("k", "s", "Li 2018, Fig. 2", "p", "v", "o", "b", (), solves(ADD, False))


def test_the_guide_s_table_has_a_claim_per_cell() -> None:
    guide = [c for c in CLAIMS if c.key.startswith("guide-")]
    assert len(guide) == 4 * 3  # four rows x (effective length, BPC, explosions per epoch)
    assert all("guide" in c.source for c in guide)


def test_guide_judges() -> None:
    from rnnguard.bench.claims import bpc_at_most, effective_length_is, explosions_about

    at, past = ClaimRun("lstm", "adding", 200, 10), ClaimRun("lstm", "adding", 500, 10)
    judge = effective_length_is(at, past)
    assert judge([{"solved": True}, {"solved": False}]).outcome == "reproduced"
    assert judge([{"solved": True}, {"solved": True}]).outcome == "not reproduced"
    assert judge([{"solved": False}, {"solved": False}]).outcome == "inconclusive at this budget"
    lm = ClaimRun("lstm", "ptb-char", 100, 10, kind="lm")
    assert bpc_at_most(lm, 1.2)([{"metric": 1.19}]).outcome == "reproduced"
    assert bpc_at_most(lm, 1.2)([{"metric": 1.8}]).outcome == "inconclusive at this budget"
    assert explosions_about(lm, 0)([{"explosions_per_epoch": 0.2}]).outcome == "reproduced"
    assert explosions_about(lm, 0)([{"explosions_per_epoch": 3}]).outcome == "not reproduced"
    assert explosions_about(lm, 47)([{"explosions_per_epoch": 20}]).outcome == "reproduced"
    assert explosions_about(lm, 47)([{"explosions_per_epoch": 5}]).outcome == "not reproduced"


def test_reproduce_preset_end_to_end_on_a_fake_trainer(tmp_path, monkeypatch) -> None:
    from rnnguard.bench.benchmark import run_benchmark
    from rnnguard.bench.report import render_report

    monkeypatch.delenv("RNNGUARD_DATA", raising=False)  # PTB-char claims are left out, with a note

    def fake(spec):  # IndRNN solves everything; every other recipe fails
        solved = spec.recipe == "indrnn-relu"
        return {"solved": solved, "solved_step": 900 if solved else None,
                "metric": 0.001 if solved else 0.17, "steps": spec.steps}  # fmt: skip

    lines: list[str] = []
    summary = run_benchmark("reproduce", out=tmp_path, train_fn=fake, workers=1, log=lines.append)
    assert re.search(r"preset reproduce, \d+ claims \(\d+ runs\), 1 worker\(s\)", lines[0]), lines[
        0
    ]
    claims = {c["key"]: c for c in summary["claims"]}
    assert not any(k.endswith(("-bpc", "-explosions")) or "ptb" in k for k in claims)
    assert claims["indrnn-adding-1000"]["verdict"] == "reproduced"
    assert claims["tanh-adding-150"]["verdict"] == "reproduced"
    assert claims["lstm-adding-200"]["verdict"] == "inconclusive at this budget"
    assert (
        claims["guide-indrnn-relu-effective-length"]["verdict"] == "not reproduced"
    )  # solves 2000
    assert summary["complete"] and any(
        "PTB-char claims skipped" in n for n in summary["claim_notes"]
    )
    report = (tmp_path / "report.md").read_text()
    assert "## Published claims" in report and "**reproduced**" in report
    brief = "| IndRNN solves the adding problem at T=1000 | MSE near 0 at T=1000 (and T=5000) | "
    assert brief in report and "| claim | published | ours | verdict |" in report
    again = render_report(tmp_path)  # re-rendered from the store alone
    assert again["claims"] == summary["claims"]
    assert "Published claims" in (tmp_path / "report.html").read_text()


def test_reproduce_with_a_data_folder_gives_it_only_to_the_text_tasks(tmp_path) -> None:  # type: ignore[no-untyped-def]
    # The data folder reaches PTB-char's runs only: the adding and copy tasks take no data_dir.
    from rnnguard.bench.grid import get_preset
    from rnnguard.bench.plan import plan_preset
    from rnnguard.tasks import create_task

    folder = tmp_path / "ptb-char"
    folder.mkdir()
    for name in ("train.txt", "valid.txt", "test.txt"):
        (folder / name).write_text(" a b _ c a \n b _ < u n k > \n" * 40, encoding="utf-8")
    plan = plan_preset(get_preset("reproduce"), data_dir=tmp_path)
    specs = [s for job in plan.claim_jobs for s in job.specs]
    assert {s.task for s in specs} == {"adding", "copy", "ptb-char"}
    for spec in specs:
        kwargs = dict(spec.task_kwargs)
        assert ("data_dir" in kwargs) == (spec.task == "ptb-char"), spec.label()
        if spec.task != "ptb-char":
            create_task(spec.task, spec.length, **kwargs)  # what a worker does first


def test_failing_where_another_recipe_solves_needs_at_least_its_steps() -> None:
    lstm = ClaimRun("lstm", "adding", 1000, steps=4000)
    indrnn = ClaimRun("indrnn-relu", "adding", 1000, steps=4000)
    judge = fails_where_other_solves(lstm, indrnn)
    stuck = {"solved": False, "metric": 0.168, "baseline": 1 / 6, "steps": 4000}
    solved = {"solved": True, "solved_step": 3100, "metric": 0.007}
    ok = judge([stuck, solved])
    assert ok.outcome == "reproduced" and "solved it at step 3100" in ok.measured
    assert judge([{**stuck, "steps": 2000}, solved]).outcome == "inconclusive at this budget"
    assert judge([stuck, {"solved": False, "metric": 0.16}]).outcome == (
        "inconclusive at this budget"
    )
    assert judge([{"solved": True, "metric": 0.01, "steps": 900}, solved]).outcome == (
        "not reproduced"
    )
