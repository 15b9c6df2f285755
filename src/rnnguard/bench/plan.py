"""Plan a benchmark: the jobs of a preset (effective-length searches, language-model and single
runs) and the manifest that describes them, from which a stored benchmark's plan is rebuilt."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rnnguard.bench.claims import CLAIMS, ClaimJob
from rnnguard.bench.effective import Job, LengthSearch, SingleRuns
from rnnguard.bench.grid import LMSettings, Preset, RunSpec, SingleSettings
from rnnguard.errors import ConfigError, DataError

__all__ = ["BenchPlan", "plan_from_manifest", "plan_preset"]


class BenchPlan:
    """The jobs of one benchmark invocation and what they stand for."""

    def __init__(self, preset: Preset, searches: list[LengthSearch], lm_runs: SingleRuns | None,
                 lm_task: str | None, lm_note: str, single_runs: SingleRuns | None = None,
                 single_notes: tuple[str, ...] = (), claim_jobs: Sequence[ClaimJob] = (),
                 claim_notes: tuple[str, ...] = ()) -> None:  # fmt: skip
        self.preset = preset
        self.claim_jobs = list(claim_jobs)
        self.claim_notes = claim_notes
        self.searches = searches
        self.lm_runs = lm_runs
        self.lm_task = lm_task
        self.lm_note = lm_note
        self.single_runs = single_runs
        self.single_notes = single_notes

    @property
    def jobs(self) -> list[Job]:
        extra = [j for j in (self.lm_runs, self.single_runs) if j is not None]
        return [*self.searches, *extra, *self.claim_jobs]

    @property
    def lm_specs(self) -> list[RunSpec]:
        """The language-model runs (none when the plan has no language-model job)."""
        return list(self.lm_runs.specs) if self.lm_runs else []

    @property
    def single_specs(self) -> list[RunSpec]:
        """The single runs at a fixed length (MNIST)."""
        return list(self.single_runs.specs) if self.single_runs else []

    @property
    def recipes(self) -> list[str]:
        names = [s.recipe for s in self.searches]
        names += [s.recipe for s in self.lm_specs + self.single_specs]
        return list(dict.fromkeys(names))

    def to_manifest(self) -> dict[str, Any]:
        """JSON description of the plan, enough to rebuild it from the result store alone."""
        searches = []
        for s in self.searches:
            template = s.make_spec(s.lengths[0], s.seeds[0]).to_dict()
            searches.append({"recipe": s.recipe, "task": s.task, "lengths": list(s.lengths),
                             "seeds": list(s.seeds), "template": template})  # fmt: skip
        return {
            "preset": self.preset.name,
            "description": self.preset.description,
            "searches": searches,
            "lm": {
                "task": self.lm_task,
                "note": self.lm_note,
                "specs": [sp.to_dict() for sp in self.lm_specs],
            },
            "single": {
                "notes": list(self.single_notes),
                "specs": [sp.to_dict() for sp in self.single_specs],
            },
            "claims": {
                "keys": [j.claim.key for j in self.claim_jobs],
                "notes": list(self.claim_notes),
                "task_kwargs": self._claim_task_kwargs(),
            },
        }

    def _claim_task_kwargs(self) -> dict[str, Any]:
        for job in self.claim_jobs:
            for spec in job.specs:
                if "data_dir" in dict(spec.task_kwargs):
                    return {"data_dir": dict(spec.task_kwargs)["data_dir"]}
        return {}


def plan_from_manifest(manifest: dict[str, Any]) -> BenchPlan:
    """Rebuild the jobs of a benchmark from its manifest (for re-rendering a report)."""
    from rnnguard.bench.grid import PRESETS

    if "searches" not in manifest:
        raise ConfigError(
            "manifest must come from `rnnguard bench` (bench.json), got no 'searches'"
        )
    searches = []
    for s in manifest["searches"]:
        template = dict(s["template"])

        def make(length: int, seed: int, _t: dict[str, Any] = template) -> RunSpec:
            return RunSpec.from_dict({**_t, "length": length, "seed": seed})

        searches.append(
            LengthSearch(s["recipe"], s["task"], tuple(s["lengths"]), make, tuple(s["seeds"]))
        )
    lm = manifest.get("lm") or {}
    specs = [RunSpec.from_dict(d) for d in lm.get("specs", [])]
    preset = PRESETS.get(manifest.get("preset", ""))
    if preset is None:
        preset = Preset(str(manifest.get("preset", "custom")), str(manifest.get("description", "")),
                        (), LMSettings())  # fmt: skip
    single = manifest.get("single") or {}
    singles = [RunSpec.from_dict(d) for d in single.get("specs", [])]
    claims = manifest.get("claims") or {}
    by_key = {c.key: c for c in CLAIMS}
    device = preset.device if preset.device != "auto" else "cpu"
    claim_jobs = [ClaimJob(by_key[k], device, claims.get("task_kwargs"))
                  for k in claims.get("keys", []) if k in by_key]  # fmt: skip
    return BenchPlan(preset, searches, SingleRuns(specs) if specs else None, lm.get("task"),
                     str(lm.get("note", "")), SingleRuns(singles) if singles else None,
                     tuple(single.get("notes", [])), claim_jobs,
                     tuple(claims.get("notes", [])))  # fmt: skip


def _check_names(kind: str, names: Sequence[str], known: Sequence[str]) -> list[str]:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ConfigError(f"{kind} must be among {sorted(known)}, got unknown {unknown}")
    return list(names)


def plan_preset(
    preset: Preset,
    *,
    recipes: Sequence[str] | None = None,
    tasks: Sequence[str] | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    text: str | os.PathLike[str] | None = None,
    known_recipes: Sequence[str] | None = None,
) -> BenchPlan:
    """Jobs for ``preset``: one effective-length search per (recipe, synthetic task) and one
    language-model run per recipe: the preset's language (PTB-char, or the built-in synthlang
    where PTB-char's files are not found and it was not asked for by name), or ``text``."""
    if preset.extra.get("claims"):
        return _plan_claims(preset, data_dir)
    if known_recipes is None:
        from rnnguard.train.recipes import list_recipes

        known_recipes = list(list_recipes())
    chosen = list(recipes) if recipes else list(preset.recipes or known_recipes)
    _check_names("recipes", chosen, known_recipes)
    length_names = [s.task for s in preset.length_tasks]
    lm_names = ["ptb-char", "text", "synthlang"]
    default_lm = "text" if text else (preset.lm.task if preset.lm else "ptb-char")
    single_names = [s.task for s in preset.single_tasks]
    mnist_names = sorted({*single_names, "smnist", "pmnist"})
    wanted = list(tasks) if tasks else [*length_names, default_lm, *single_names]
    _check_names("tasks", wanted, [*length_names, *lm_names, *mnist_names])
    if "text" in wanted and text is None:
        raise ConfigError("tasks includes 'text' but no text file was given (--text FILE)")
    h, nl = preset.hidden_size, preset.num_layers
    searches = []
    for settings in preset.length_tasks:
        if settings.task not in wanted:
            continue
        for recipe in chosen:

            def make(length: int, seed: int, _r: str = recipe, _s: Any = settings) -> RunSpec:
                return RunSpec(
                    _r, _s.task, length, seed, steps=_s.steps, batch_size=_s.batch_size,
                    kind="length", hidden_size=h, num_layers=nl, eval_every=_s.eval_every,
                    eval_batches=_s.eval_batches, device=preset.device,
                    horizon_length=max(_s.lengths),
                )  # fmt: skip

            lengths = settings.lengths_for(recipe)
            if lengths:
                searches.append(LengthSearch(recipe, settings.task, lengths, make, preset.seeds))
    lm_runs, lm_task, note = None, None, ""
    lm = preset.lm
    lm_wanted = [t for t in wanted if t in lm_names]
    if lm is not None and lm_wanted:
        lm_task = lm_wanted[0]
        kwargs: dict[str, Any] = {}
        if lm_task == "ptb-char":
            from rnnguard.tasks.text import find_ptb_dir

            try:
                kwargs["data_dir"] = str(find_ptb_dir(data_dir))
            except DataError as exc:
                if tasks and "ptb-char" in tasks:
                    raise  # asked for explicitly: say why it cannot run
                # The column stays filled: the built-in language needs no data.
                lm_task = "synthlang"
                note = f"PTB-char not found, the built-in synthlang language instead: {exc}"
        elif lm_task == "text":
            kwargs["path"] = str(Path(text).resolve()) if text else None
        if lm_task == "synthlang" and lm.task == "synthlang":
            kwargs.update(dict(lm.task_kwargs))
        if lm_task is not None:
            for key in ("train_tokens", "eval_tokens"):
                if getattr(lm, key) is not None:
                    kwargs[key] = getattr(lm, key)
            specs = _runs_per_recipe(
                chosen, lm_task, lm, "lm", preset, kwargs,
                hidden_size=preset.lm_hidden_size or h, num_layers=preset.lm_num_layers or nl,
                steps_per_epoch=lm.steps_per_epoch,
            )  # fmt: skip
            lm_runs = SingleRuns(specs)
            if (lm.train_tokens or lm.eval_tokens) and lm_task != "synthlang":
                note = (
                    f"{lm_task}: a slice ({lm.train_tokens or 'all'} training tokens, "
                    f"{lm.eval_tokens or 'all'} valid/test tokens), not the full benchmark"
                )
    single_specs, notes = [], []
    settings_by_task = {s.task: s for s in preset.single_tasks}
    for task in [t for t in wanted if t in mnist_names]:
        from rnnguard.tasks.mnist import find_mnist_dir

        cfg = settings_by_task.get(task) or SingleSettings(task, 784, steps=2000, eval_limit=2000)
        try:
            folder = str(find_mnist_dir(data_dir))
        except DataError as exc:
            if tasks and task in tasks:
                raise
            notes.append(f"{task} skipped: {exc}")
            continue
        kw: dict[str, Any] = {"data_dir": folder}
        if cfg.eval_limit is not None:
            kw["eval_limit"] = cfg.eval_limit
        single_specs += _runs_per_recipe(
            chosen, task, cfg, "single", preset, kw, hidden_size=cfg.hidden_size or h, num_layers=nl
        )
    singles = SingleRuns(single_specs) if single_specs else None
    return BenchPlan(preset, searches, lm_runs, lm_task, note, singles, tuple(notes))


def _runs_per_recipe(
    chosen: Sequence[str],
    task: str,
    settings: LMSettings | SingleSettings,
    kind: str,
    preset: Preset,
    task_kwargs: dict[str, Any],
    **fields: Any,
) -> list[RunSpec]:
    """One run per chosen recipe of a task trained once (first seed, one eval batch)."""
    return [
        RunSpec(
            recipe,
            task,
            settings.length,
            preset.seeds[0],
            steps=settings.steps,
            batch_size=settings.batch_size,
            kind=kind,
            eval_every=settings.eval_every,
            eval_batches=1,
            task_kwargs=tuple(sorted(task_kwargs.items())),
            device=preset.device,
            **fields,
        )
        for recipe in chosen
    ]


def _plan_claims(preset: Preset, data_dir: str | os.PathLike[str] | None) -> BenchPlan:
    """The reproduction suite: one job per claim; PTB-char claims only where its data is."""
    from rnnguard.tasks.text import find_ptb_dir

    device = preset.device if preset.device != "auto" else "cpu"
    kwargs: dict[str, Any] = {}
    notes: list[str] = []
    try:
        kwargs["data_dir"] = str(find_ptb_dir(data_dir))
    except DataError as exc:
        notes.append(f"PTB-char claims skipped: {exc}")
    jobs = [
        ClaimJob(claim, device, kwargs)
        for claim in CLAIMS
        if kwargs or all(run.task != "ptb-char" for run in claim.runs)
    ]
    return BenchPlan(preset, [], None, None, "", None, (), jobs, tuple(notes))
