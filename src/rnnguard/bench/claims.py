"""Published claims as data: the runs that test each one and the rule that judges it.

Each :class:`Claim` names its source, the published setting and value, the setting we run (scaled
down where a 2-core machine needs it, saying how), both budgets, and a judge that turns our run
results into a :class:`Verdict`: *reproduced*, *not reproduced*, or *inconclusive at this budget*.
A claim that a recipe *solves* a task can only be refuted on a budget at least the paper's; short
of that, a miss is inconclusive. A claim that a recipe *fails* is reproduced when our run stays near
the task's trivial baseline, refuted when it solves, and inconclusive in between.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rnnguard.bench.effective import Job
from rnnguard.bench.grid import RunSpec
from rnnguard.errors import ConfigError

__all__ = [
    "CLAIMS",
    "Claim",
    "ClaimJob",
    "ClaimRun",
    "Verdict",
    "claims_table",
]

Outcome = Literal["reproduced", "not reproduced", "inconclusive at this budget"]
OUTCOMES: tuple[Outcome, ...] = ("reproduced", "not reproduced", "inconclusive at this budget")
# "Stays at the baseline" = within this fraction of the trivial baseline (as for "failed" in the
# task definitions of the reference results).
AT_BASELINE = 0.9
# Two BPCs closer than this are not told apart by one seed each.
BPC_NOISE = 0.02


@dataclass(frozen=True)
class ClaimRun:
    """One training run a claim needs (the benchmark's :class:`RunSpec` fields)."""

    recipe: str
    task: str
    length: int
    steps: int
    batch_size: int = 50
    hidden_size: int | None = 128
    num_layers: int | None = None
    seed: int = 0
    kind: str = "length"
    task_kwargs: tuple[tuple[str, Any], ...] = ()

    def spec(self, device: str = "cpu") -> RunSpec:
        return RunSpec(
            self.recipe, self.task, self.length, self.seed, steps=self.steps,
            batch_size=self.batch_size, kind=self.kind, hidden_size=self.hidden_size,
            num_layers=self.num_layers, eval_every=100, eval_batches=4, horizon=False,
            task_kwargs=self.task_kwargs, device=device,
        )  # fmt: skip


@dataclass(frozen=True)
class Verdict:
    """What we measured for a claim, the outcome, and the reason in one line."""

    measured: str
    outcome: Outcome
    why: str


Judge = Callable[[Sequence[Mapping[str, Any]]], Verdict]


@dataclass(frozen=True)
class Claim:
    """A published (or the guide's) claim and how this benchmark tests it."""

    key: str
    statement: str
    source: str
    """Paper (authors, year) and where in it: table, figure or section."""
    published_setting: str
    published_value: str
    our_setting: str
    """Our setting and how it differs from the published one (size, optimiser, data)."""
    paper_budget: str
    runs: tuple[ClaimRun, ...]
    judge: Judge
    """Turns the results of ``runs`` (same order) into the verdict."""

    def __post_init__(self) -> None:
        for name in ("key", "statement", "source", "published_value", "our_setting"):
            if not str(getattr(self, name)).strip():
                raise ConfigError(f"claim {self.key!r}: {name} must be non-empty")
        if not self.runs:
            raise ConfigError(f"claim {self.key!r}: runs must name at least one run")

    def budget(self) -> str:
        steps = "/".join(sorted({f"{r.steps}" for r in self.runs}))
        return f"ours {steps} steps; paper {self.paper_budget}"


# ---------------------------------------------------------------------------------- judges
def _metric(result: Mapping[str, Any]) -> float:
    value = result.get("metric")
    return float(value) if isinstance(value, (int, float)) else math.nan


def _baseline(result: Mapping[str, Any], task: str, length: int) -> float:
    if isinstance(result.get("baseline"), (int, float)):
        return float(result["baseline"])
    if task == "adding":
        return 1.0 / 6.0
    if task == "copy":
        return 10 * math.log(8) / (length + 20)
    raise ConfigError(f"no trivial baseline known for task {task!r}")


def _failed_run(result: Mapping[str, Any]) -> Verdict | None:
    if result.get("status") == "error" or result.get("error"):
        return Verdict("error", "inconclusive at this budget", f"run failed: {result.get('error')}")
    return None


def solves(run: ClaimRun, full_budget: bool) -> Judge:
    """Reproduced when the run solves its task; a miss refutes only on the paper's budget."""

    def judge(results: Sequence[Mapping[str, Any]]) -> Verdict:
        (r,) = results
        if (bad := _failed_run(r)) is not None:
            return bad
        m, base = _metric(r), _baseline(r, run.task, run.length)
        measured = f"{m:.3g} at step {r.get('solved_step') or r.get('steps', run.steps)}"
        if r.get("solved"):
            return Verdict(measured, "reproduced", f"solved (baseline {base:.3g})")
        if full_budget:
            return Verdict(measured, "not reproduced", "not solved on the paper's budget")
        return Verdict(
            measured,
            "inconclusive at this budget",
            "not solved within our budget, which is below the paper's",
        )

    return judge


def fails(run: ClaimRun) -> Judge:
    """Reproduced when the run stays at the trivial baseline; refuted when it solves."""

    def judge(results: Sequence[Mapping[str, Any]]) -> Verdict:
        (r,) = results
        if (bad := _failed_run(r)) is not None:
            return bad
        m, base = _metric(r), _baseline(r, run.task, run.length)
        measured = f"{m:.3g} (baseline {base:.3g})"
        if r.get("solved"):
            return Verdict(measured, "not reproduced", "solved")
        if m >= AT_BASELINE * base or not math.isfinite(m):
            return Verdict(measured, "reproduced", f"within {1 - AT_BASELINE:.0%} of the baseline")
        return Verdict(measured, "inconclusive at this budget", "below the baseline, not solved")

    return judge


def fails_where_other_solves(run: ClaimRun, other: ClaimRun) -> Judge:
    """Reproduced when ``run`` stays at the baseline over at least the steps ``other`` needed to
    solve the same task; undecided when ``other`` did not solve it or ``run`` had fewer steps."""
    alone = fails(run)

    def judge(results: Sequence[Mapping[str, Any]]) -> Verdict:
        r, o = results
        verdict = alone([r])
        if verdict.outcome != "reproduced":
            return verdict
        if (bad := _failed_run(o)) is not None:
            return bad
        if not o.get("solved"):
            return Verdict(verdict.measured, "inconclusive at this budget",
                           f"{other.recipe} did not solve it either")  # fmt: skip
        needed, spent = int(o.get("solved_step") or 0), int(r.get("steps", run.steps))
        measured = f"{verdict.measured}; {other.recipe} solved it at step {needed}"
        if spent < needed:
            return Verdict(measured, "inconclusive at this budget",
                           f"{spent} steps, fewer than {other.recipe} needed")  # fmt: skip
        return Verdict(measured, "reproduced",
                       f"at the baseline after {spent} steps, >= {other.recipe}'s {needed}")  # fmt: skip

    return judge


def lower_bpc(first: ClaimRun, second: ClaimRun) -> Judge:
    """Reproduced when the first run's BPC is below the second's by more than the noise."""

    def judge(results: Sequence[Mapping[str, Any]]) -> Verdict:
        a, b = results
        for r in (a, b):
            if (bad := _failed_run(r)) is not None:
                return bad
        ma, mb = _metric(a), _metric(b)
        measured = f"{first.recipe} {ma:.3f} vs {second.recipe} {mb:.3f}"
        if ma < mb - BPC_NOISE:
            return Verdict(measured, "reproduced", f"lower by {mb - ma:.3f}")
        if ma > mb + BPC_NOISE:
            return Verdict(measured, "not reproduced", f"higher by {ma - mb:.3f}")
        return Verdict(measured, "inconclusive at this budget", f"within {BPC_NOISE} BPC")

    return judge


def effective_length_is(at: ClaimRun, beyond: ClaimRun) -> Judge:
    """The guide's effective length L: reproduced when L is solved and the next grid length is
    not; a miss at L on our shorter budget is inconclusive, solving beyond L refutes."""

    def judge(results: Sequence[Mapping[str, Any]]) -> Verdict:
        r_at, r_beyond = results
        for r in (r_at, r_beyond):
            if (bad := _failed_run(r)) is not None:
                return bad
        solved_at, solved_beyond = bool(r_at.get("solved")), bool(r_beyond.get("solved"))
        measured = (
            f"T={at.length} {'solved' if solved_at else 'not solved'}, "
            f"T={beyond.length} {'solved' if solved_beyond else 'not solved'}"
        )
        if solved_beyond:
            return Verdict(measured, "not reproduced", f"solves beyond the claimed T={at.length}")
        if solved_at:
            return Verdict(measured, "reproduced", f"solves T={at.length}, not T={beyond.length}")
        return Verdict(measured, "inconclusive at this budget", f"T={at.length} not solved")

    return judge


def bpc_at_most(run: ClaimRun, claimed: float) -> Judge:
    """The guide's BPC: reproduced at or below it; above it on a far smaller budget, undecided."""

    def judge(results: Sequence[Mapping[str, Any]]) -> Verdict:
        (r,) = results
        if (bad := _failed_run(r)) is not None:
            return bad
        m = _metric(r)
        if m <= claimed:
            return Verdict(f"{m:.3f}", "reproduced", f"at or below {claimed}")
        return Verdict(
            f"{m:.3f}",
            "inconclusive at this budget",
            "above the claim; the guide gives no size or budget to match",
        )

    return judge


def explosions_about(run: ClaimRun, claimed: float) -> Judge:
    """The guide's explosions per epoch: reproduced within a factor of 4 (0 means below 0.5)."""

    def judge(results: Sequence[Mapping[str, Any]]) -> Verdict:
        (r,) = results
        if (bad := _failed_run(r)) is not None:
            return bad
        value = r.get("explosions_per_epoch")
        ours = float(value) if isinstance(value, (int, float)) else math.nan
        measured = f"{ours:.2g} per epoch"
        if not math.isfinite(ours):
            return Verdict(measured, "inconclusive at this budget", "not measured")
        same = ours < 0.5 if claimed == 0 else claimed / 4 <= ours <= claimed * 4
        why = "0 means below 0.5" if claimed == 0 else "within a factor of 4"
        if same:
            return Verdict(measured, "reproduced", why)
        return Verdict(measured, "not reproduced", f"not {why.replace('means', 'meaning')}")

    return judge


# ---------------------------------------------------------------------------------- the claims
# Budgets sized so the whole suite fits in about 1.5 h with two workers on a 2-core CPU (measured
# per step, 1 thread, width 128, batch 50: LSTM about 0.75 ms per time step, the LayerNorm-LSTM
# 1.1 ms, the 2-layer IndRNN 0.3 ms). A run that must solve stops once solved; a run that must
# fail spends its whole budget, so the failing lengths get the common one, except the LSTM at
# T=1000, which must fail on the budget IndRNN solves in.
ADDING_STEPS = 2000
_INDRNN_1000 = ClaimRun("indrnn-relu", "adding", 1000, steps=4000)  # stops once solved
_LSTM_200 = ClaimRun("lstm", "adding", 200, steps=ADDING_STEPS)
_LSTM_1000 = ClaimRun("lstm", "adding", 1000, steps=4000)  # IndRNN's whole budget
_TANH_150 = ClaimRun("vanilla", "adding", 150, steps=ADDING_STEPS)
_LSTM_COPY = ClaimRun("lstm", "copy", 100, steps=ADDING_STEPS, batch_size=64)
# The guide's rows reuse a published claim's run where it is the same recipe, task and length.
_SHARED = {(r.recipe, r.task, r.length): r for r in (_INDRNN_1000, _LSTM_200, _LSTM_1000)}
_PTB = (("train_tokens", None), ("eval_tokens", 50_000))
_LN_PTB = ClaimRun("lstm-ln-clip", "ptb-char", 100, 2000, 32, 128, 1, kind="lm", task_kwargs=_PTB)
_LSTM_PTB = ClaimRun("lstm", "ptb-char", 100, 2000, 32, 128, 1, kind="lm", task_kwargs=_PTB)

# The guide's table (section 5), one claim per cell. Its numbers have no stated setup or source.
_GUIDE_ROWS = (
    ("vanilla", 20, 50, 1.57, 47.0),
    ("lstm", 200, 500, 1.20, 0.0),
    ("lstm-ln-clip", 500, 1000, 1.15, 0.0),
    ("indrnn-relu", 1000, 2000, 1.18, 2.0),
)
_GUIDE_SOURCE = "the guide's benchmark table (Sec. 5); it gives no setup or source"


def _guide_claims() -> tuple[Claim, ...]:
    claims = []
    for recipe, length, beyond, bpc, explosions in _GUIDE_ROWS:
        at = _SHARED.get((recipe, "adding", length)) or ClaimRun(
            recipe, "adding", length, steps=ADDING_STEPS
        )
        past = _SHARED.get((recipe, "adding", beyond)) or ClaimRun(
            recipe, "adding", beyond, steps=ADDING_STEPS
        )
        lm = ClaimRun(recipe, "ptb-char", 100, 2000, 32, 128, 1, kind="lm", task_kwargs=_PTB)
        common = {"source": _GUIDE_SOURCE, "paper_budget": "not stated",
                  "published_setting": "not stated"}  # fmt: skip
        claims += [
            Claim(
                key=f"guide-{recipe}-effective-length",
                statement=f"{recipe}: effective length {length} (adding problem)",
                published_value=f"{length}",
                our_setting=f"recipe {recipe} at width 128, batch 50, T={length} and T={beyond}",
                runs=(at, past),
                judge=effective_length_is(at, past),
                **common,
            ),
            Claim(
                key=f"guide-{recipe}-bpc",
                statement=f"{recipe}: PTB-char BPC {bpc}",
                published_value=f"{bpc}",
                our_setting="width 128, one layer, BPTT 100, batch 32, 2000 steps",
                runs=(lm,),
                judge=bpc_at_most(lm, bpc),
                **common,
            ),
            Claim(
                key=f"guide-{recipe}-explosions",
                statement=f"{recipe}: {explosions:g} gradient explosions per epoch",
                published_value=f"{explosions:g}",
                our_setting="GradientGuard's count in the PTB-char run above",
                runs=(lm,),
                judge=explosions_about(lm, explosions),
                **common,
            ),
        ]
    return tuple(claims)


CLAIMS: tuple[Claim, ...] = (
    Claim(
        key="indrnn-adding-1000",
        statement="IndRNN solves the adding problem at T=1000",
        source="Li et al., CVPR 2018, Sec. 4.1 and Fig. 2",
        published_setting="2-layer IndRNN, 128 units, ReLU, Adam lr 2e-4, batch 50",
        published_value="MSE near 0 at T=1000 (and T=5000)",
        our_setting="recipe indrnn-relu at width 128, batch 50, the recipe's own lr and schedule",
        paper_budget="until convergence (tens of thousands of steps)",
        runs=(_INDRNN_1000,),
        judge=solves(_INDRNN_1000, full_budget=False),
    ),
    Claim(
        key="tanh-adding-150",
        statement="The tanh RNN stays at the baseline on the adding problem from T~100-150",
        source="Le, Jaitly & Hinton 2015, Fig. 2; Li et al., CVPR 2018, Fig. 2",
        published_setting="1-layer tanh RNN, 100-128 units, SGD/Adam",
        published_value="MSE ~0.17 (the baseline) at T=150",
        our_setting="recipe vanilla at width 128, batch 50",
        paper_budget="until convergence",
        runs=(_TANH_150,),
        judge=fails(_TANH_150),
    ),
    Claim(
        key="lstm-adding-200",
        statement="The LSTM solves the adding problem at moderate lengths",
        source="Arjovsky et al., ICML 2016 (uRNN), Fig. 2; Li et al., CVPR 2018, Fig. 2",
        published_setting="1-layer LSTM, 128 units",
        published_value="solved up to T~400",
        our_setting="recipe lstm at width 128, batch 50, T=200",
        paper_budget="until convergence",
        runs=(_LSTM_200,),
        judge=solves(_LSTM_200, full_budget=False),
    ),
    Claim(
        key="lstm-adding-1000",
        statement="The LSTM fails the adding problem at T=1000 on the budget IndRNN solves it in",
        source="Li et al., CVPR 2018, Fig. 2",
        published_setting="1-layer LSTM, 128 units, Adam lr 2e-3, batch 50",
        published_value="MSE stays at the baseline at T=1000",
        our_setting=(
            "recipe lstm at width 128, batch 50, 4000 steps (the IndRNN row's budget); judged "
            "against the step at which IndRNN solved it"
        ),
        paper_budget="until convergence",
        runs=(_LSTM_1000, _INDRNN_1000),
        judge=fails_where_other_solves(_LSTM_1000, _INDRNN_1000),
    ),
    Claim(
        key="lstm-copy-100",
        statement="The LSTM stays near the memoryless baseline on the copy task at T=100",
        source="Arjovsky et al., ICML 2016 (uRNN), Fig. 1",
        published_setting="LSTM, 128 units, RMSProp, batch 20",
        published_value="cross-entropy at the memoryless baseline 0.173 for thousands of steps",
        our_setting="recipe lstm at width 128, batch 64",
        paper_budget="10,000 steps",
        runs=(_LSTM_COPY,),
        judge=fails(_LSTM_COPY),
    ),
    Claim(
        key="layernorm-lstm-ptb",
        statement="LayerNorm lowers the LSTM's PTB-char BPC at equal size and budget",
        source="Ha et al., ICLR 2017 (HyperNetworks), Table 3; Ba et al. 2016",
        published_setting="1x1000 LSTM vs LayerNorm LSTM, full PTB-char, many epochs",
        published_value="1.267 vs 1.312 test BPC",
        our_setting="width 128, one layer, BPTT 100, batch 32; valid BPC on the first 50k characters",
        paper_budget="many epochs of the full data",
        runs=(_LN_PTB, _LSTM_PTB),
        judge=lower_bpc(_LN_PTB, _LSTM_PTB),
    ),
    *_guide_claims(),
)


class ClaimJob(Job):
    """The benchmark job of one claim: its runs, then its verdict."""

    def __init__(
        self, claim: Claim, device: str = "cpu", task_kwargs: Mapping[str, Any] | None = None
    ) -> None:
        self.claim = claim
        self.specs = [run.spec(device) for run in claim.runs]
        if task_kwargs:  # e.g. where PTB-char lives (not part of a run's identity)
            self.specs = [
                dataclasses.replace(
                    s, task_kwargs=tuple(sorted({**dict(s.task_kwargs), **task_kwargs}.items()))
                )
                if _takes(s.task, task_kwargs)
                else s
                for s in self.specs
            ]
        self.results: dict[str, dict[str, Any]] = {}

    def pending(self) -> list[RunSpec]:
        return [s for s in self.specs if s.key() not in self.results]

    def feed(self, spec: RunSpec, result: dict[str, Any]) -> None:
        self.results[spec.key()] = result

    def verdict(self) -> Verdict | None:
        """The verdict once every run is in (None before)."""
        if self.pending():
            return None
        return self.claim.judge([self.results[s.key()] for s in self.specs])


def _takes(task: str, kwargs: Mapping[str, Any]) -> bool:
    """Whether task ``task`` takes every argument in ``kwargs`` (a data folder: only text tasks)."""
    from rnnguard.tasks.registry import TASKS

    params = inspect.signature(TASKS.get(task)).parameters
    return all(name in params for name in kwargs)


def claims_table(jobs: Sequence[ClaimJob]) -> str:
    """Markdown: one row per claim with its source, settings, budgets, values and verdict."""
    head = (
        "| claim | source | published setting | our setting | budget | published | ours | verdict |\n"
        "|---|---|---|---|---|---|---|---|"
    )
    rows = [head]
    for job in jobs:
        c, v = job.claim, job.verdict()
        ours = v.measured if v else "pending"
        verdict = f"**{v.outcome}** ({v.why})" if v else "pending"
        rows.append(
            f"| {c.statement} | {c.source} | {c.published_setting} | {c.our_setting} | "
            f"{c.budget()} | {c.published_value} | {ours} | {verdict} |"
        )
    return "\n".join(rows)
