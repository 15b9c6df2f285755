"""The doctor's report folder: a self-contained ``report.html`` (plots inline) and ``diagnosis.json``."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from rnnguard.diagnose.doctor import Diagnosis
from rnnguard.diagnose.verify import VerifyReport
from rnnguard.errors import require_extra
from rnnguard.utils.html import escape, image, page, table
from rnnguard.utils.io import atomic_write_text

__all__ = ["render_html", "write_report"]

_CSS = """
body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} .verdict{display:inline-block;padding:.2em .6em;margin:.1em;border-radius:4px;
color:#fff;font-weight:600} .healthy{background:#2e7d32} .vanishing{background:#1565c0}
.exploding{background:#c62828} .saturated{background:#ef6c00} .dead-units{background:#6a1b9a}
table{border-collapse:collapse;margin:.5em 0} td,th{border:1px solid #ccc;padding:.25em .6em;text-align:left}
code{background:#f4f4f4;padding:.1em .3em} img{max-width:100%;border:1px solid #eee;margin:.4em 0}
"""


def _fmt(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return "non-finite" if not math.isfinite(v) else f"{v:.4g}"
    return escape(str(v))


def _reach(h: Any) -> str:
    """A horizon in steps, or how far the measurement went without reaching it."""
    return _fmt(h.horizon) if h.horizon is not None else f"beyond {h.max_distance}"


def _factor(h: Any) -> str:
    """The fitted per-step gradient factor of a horizon curve."""
    return _fmt(math.exp(h.rate)) if math.isfinite(h.rate) else "-"


def _plots(d: Diagnosis, folder: Path, verify: VerifyReport | None) -> dict[str, Path]:
    from rnnguard.diagnose import plots

    out = {"horizon": plots.plot_horizon(d.horizons, folder / "horizon.png")}
    if d.spectra:
        out["sigma_max"] = plots.plot_sigma_max(d.spectra, folder / "sigma_max.png")
        out["lyapunov"] = plots.plot_lyapunov(d.spectra, folder / "lyapunov.png")
    if d.saturation:
        out["saturation"] = plots.plot_saturation(d.saturation, folder / "saturation.png")
    if d.history is not None and len(d.history.steps):
        out["history"] = plots.plot_history(d.history, folder / "history.png")
    if verify is not None:
        curves = {
            f"{a.label}: {a.recipe}": (a.steps, a.losses)
            for a in (verify.original, verify.prescribed)
        }
        out["verify"] = plots.plot_loss_curves(curves, folder / "verify_loss.png")
    return out


def render_html(d: Diagnosis, images: dict[str, Path], verify: VerifyReport | None = None) -> str:
    """The report as one HTML string with every image embedded."""
    e = escape
    rows: list[tuple[str, ...]]
    header: tuple[str, ...]
    parts = [
        "<h1>rnnguard doctor</h1>",
        f"<p>task <code>{e(str(d.task or 'batch'))}</code>, sequence length {d.length}, batch {d.batch_size}"
        + (f", recipe <code>{e(d.recipe)}</code>" if d.recipe else "")
        + f", {d.model_info.get('parameters', '?')} parameters</p>",
        "<p>" + "".join(f'<span class="verdict {e(v)}">{e(v)}</span>' for v in d.verdicts) + "</p>",
    ]
    if d.findings:
        parts.append("<h2>Evidence</h2>")
        for f in d.findings:
            parts.append(f"<h3>{e(f.verdict)}</h3><ul>")
            parts.extend(f"<li>{e(ev.text())}</li>" for ev in f.evidence)
            parts.append("</ul>")
    else:
        parts.append("<p>No measurement crossed a threshold (thresholds below).</p>")
    if d.prescriptions:
        rows = []
        for p in d.prescriptions:
            over = f" + {e(json.dumps(p.overrides))}" if p.overrides else ""
            rows.append(
                (
                    str(p.rank),
                    f"<code>{e(p.recipe)}</code>{over}",
                    e(p.reason),
                    e(p.settings),
                    f"<code>{e(p.command(d.task or 'adding', d.command_length, d.task_args))}</code>",
                )
            )
        parts.append(
            "<h2>Prescriptions</h2>" + table(("#", "recipe", "why", "settings", "run"), rows)
        )
    hz = d.horizons.input
    parts.append("<h2>Gradient horizon</h2>")
    parts.append(
        f"<p>input horizon: {_reach(hz)} steps; fitted per-step factor {_factor(hz)}; "
        f"normalised gradient at the first step {_fmt(hz.far_ratio)}</p>"
    )
    if d.horizons.hidden:
        parts.append(
            table(
                (
                    "hidden state",
                    "horizon",
                    "per-step factor",
                    "normalised gradient at the first step",
                ),
                [
                    (e(label), _reach(h), _factor(h), _fmt(h.far_ratio))
                    for label, h in d.horizons.hidden.items()
                ],
            )
        )
    parts.append(image(images["horizon"], "gradient horizon"))
    if d.spectra:
        rows = [
            (
                e(label),
                str(s.state_size),
                _fmt(float(s.sigma_max.mean())),
                ", ".join(_fmt(float(v)) for v in s.lyapunov),
                e(s.method),
            )
            for label, s in d.spectra.items()
        ]
        header = ("layer", "state size", "mean sigma_max", "Lyapunov exponents", "method")
        parts.append("<h2>Jacobian spectrum</h2>" + table(header, rows))
        parts.append(image(images["sigma_max"], "sigma max"))
        parts.append(image(images["lyapunov"], "Lyapunov spectrum"))
    if d.saturation:
        rows = [
            (
                e(label),
                _fmt(sat.forget_closed),
                _fmt(sat.sigmoid_saturated),
                _fmt(sat.tanh_saturated),
                _fmt(sat.dead_units),
            )
            for label, sat in d.saturation.items()
        ]
        header = ("layer", "closed forget", "flat sigmoid", "saturated tanh", "dead units")
        parts.append("<h2>Saturation</h2>" + table(header, rows))
        parts.append(image(images["saturation"], "saturation"))
    if "history" in images and d.history is not None:
        log = d.history
        parts.append(
            f"<h2>Training log</h2><p>{log.explosions} explosions, {len(log.skipped_steps)} skipped "
            f"steps of {log.total_steps}</p>" + image(images["history"], "explosion history")
        )
    if verify is not None:
        parts.append(f"<h2>Verification: {e(verify.verdict)}</h2>")
        parts.append(f"<p>{e(verify.statement)}</p>")
        rows = []
        for a in (verify.original, verify.prescribed):
            hb, ha = a.horizon_before.get("horizon"), a.horizon_after.get("horizon")
            rows.append(
                (
                    e(a.label),
                    f"<code>{e(a.recipe)}</code>",
                    f"step {a.solved_step}" if a.solved else f"no ({a.steps_run} steps)",
                    _fmt(a.final_loss),
                    f"{e(a.metric_name)} {_fmt(a.metric)}",
                    _fmt(hb) if hb is not None else "beyond sequence",
                    _fmt(ha) if ha is not None else "beyond sequence",
                    str(a.explosions),
                    _fmt(a.wall_time),
                )
            )
        header = (
            "run",
            "recipe",
            "solved",
            "final held-out loss",
            "metric",
            "horizon before",
            "horizon after",
            "explosions",
            "seconds",
        )
        parts.append(table(header, rows))
        parts.append(
            f"<p>Same task (T={verify.length}), seed {verify.seed} and batch {verify.batch_size}; "
            f"the prescription trained first, until solved or its share of the time budget, the "
            f"original for at most as many steps ({verify.steps}).</p>"
        )
        parts.append(image(images["verify"], "loss curves"))
    cfg = {k: v for k, v in d.to_dict()["config"].items() if k != "saturation"}
    parts.append(
        "<h2>Thresholds</h2>"
        + table(("threshold", "value"), [(e(k), _fmt(v)) for k, v in cfg.items()])
    )
    return page("rnnguard doctor", "\n".join(parts), _CSS)


def write_report(
    diagnosis: Diagnosis, out: str | os.PathLike[str], verify: VerifyReport | None = None
) -> Path:
    """Write ``report.html``, ``diagnosis.json`` and the PNGs (under ``plots/``) to ``out``.

    Returns the path of ``report.html``.
    """
    require_extra("matplotlib", "plot")
    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    images = _plots(diagnosis, folder / "plots", verify)
    data = json.loads(diagnosis.to_json())
    data["verify"] = verify.to_dict() if verify is not None else None
    atomic_write_text(folder / "diagnosis.json", json.dumps(data, indent=2) + "\n")
    return atomic_write_text(folder / "report.html", render_html(diagnosis, images, verify))
