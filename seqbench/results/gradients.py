"""Gradient flow over time, from the rows' ``grad_profile`` (:mod:`seqbench.worker.gradients`):
figures and tables that take the loaded frames (``profiles`` from
:func:`seqbench.results.load.load_grad_profiles`, ``rows`` from :func:`seqbench.results.load.load`
for the provenance caption).

- :func:`gradient_flow`: for one task and length, one panel per architecture (registry order,
  its registered colour): the gradient norm at each distance relative to its value at distance
  0, on a log axis, at initialisation (dashed) and after training (solid), with the memory
  horizon's threshold (``fraction``) as a grey line; the title gives the decay per step at init
  and after training (``init → trained``). An exponential decay is a straight line, its slope
  the decay per step.
- :func:`gradient_figures`: :func:`gradient_flow` for every (task, length) in the frame.
- :func:`gradient_table`: per (task, length, architecture), the decay per step, how
  exponential the decay is (R² of the straight line in log norm) and the memory horizon at init
  and after training, means over seeds (horizons: the median; ``None`` when
  at least half the seeds' norms never fell below the threshold within the sequence);
  :func:`table_text` formats it;
- :func:`write`: all of them for a results folder, as files; :func:`report_blocks`: the
  section ``seqbench report`` adds for rows with a profile.

Norms of several seeds are combined by their geometric mean (the mean of the log norms) at each
distance, the average that a log axis shows as the middle.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from seqbench.errors import SpecError
from seqbench.results.plots import finish, log_axis, new_figure

INIT, END = "init", "end"
POINT_STYLE: dict[str, dict[str, Any]] = {
    INIT: {"linestyle": "--", "alpha": 0.75, "linewidth": 1.3},
    END: {"linestyle": "-", "alpha": 1.0, "linewidth": 1.8}}
MAX_COLUMNS = 5


def with_points(profiles: pd.DataFrame) -> pd.DataFrame:
    """``profiles`` with a ``point`` column: ``init`` for the probe at step 0, ``end`` for each
    job's last probe after step 0; other probe points are left out."""
    if profiles.empty:
        return profiles.assign(point=pd.Series(dtype=str))
    last = profiles.groupby("job_id")["step"].transform("max")
    point = np.where(profiles["step"] == 0, INIT, np.where(profiles["step"] == last, END, ""))
    out = profiles.assign(point=point)
    return out[out["point"] != ""]


def _models(frame: pd.DataFrame) -> list[str]:
    from seqbench.catalog import MODELS

    return sorted(dict.fromkeys(frame["model"]), key=MODELS.order)


def _color(model: str) -> str:
    from seqbench.catalog import MODELS

    return MODELS[model].color if model in MODELS else "#333333"


def relative_profile(sub: pd.DataFrame) -> pd.DataFrame:
    """One probe point of one configuration: ``distance`` and the geometric mean over seeds of
    ``norm / norm(0)`` (distances where a seed's norm is zero or missing count only the others;
    a relative norm of exactly 0, a gradient that underflowed, is left out)."""
    zero = sub[sub["distance"] == 0].set_index("job_id")["norm"]
    rel = sub.assign(rel=sub["norm"] / sub["job_id"].map(zero))
    rel = rel[np.isfinite(rel["rel"]) & (rel["rel"] > 0)]
    out = rel.groupby("distance")["rel"].apply(lambda r: float(np.exp(np.log(r).mean())))
    return out.reset_index().sort_values("distance")


def gradient_flow(profiles: pd.DataFrame, rows: pd.DataFrame, *, task: str,
                  seq_len: int) -> Figure:
    """One panel per architecture: relative gradient norm vs distance, init and after
    training, for ``task`` at ``seq_len`` (see the module docstring). Lines have
    ``gid='series'`` and the threshold ``gid='fraction'``."""
    frame = with_points(profiles)
    frame = frame[(frame["task"] == task) & (frame["train_seq_len"] == seq_len)]
    if frame.empty:
        raise SpecError("grad_profile", f"{task} seq_len={seq_len}", "rows with a gradient "
                        "profile for this task and length")
    models = _models(frame)
    n_cols = min(MAX_COLUMNS, len(models))
    n_rows = math.ceil(len(models) / n_cols)
    input_len = frame["train_input_len"].dropna()
    length = f", input length {int(input_len.iloc[0]):,}" if len(input_len) else ""
    fig, axes = new_figure(n_rows, n_cols, f"Gradient flow over time: {task}, seq_len "
                                           f"{seq_len:,}{length}")
    fractions = frame["fraction"].dropna().unique()
    for ax, model in zip(axes.flat, models, strict=False):
        sub = frame[frame["model"] == model]
        decays = []
        for point in (INIT, END):
            part = sub[sub["point"] == point]
            if part.empty:
                continue
            curve = relative_profile(part)
            ax.plot(curve["distance"], curve["rel"], color=_color(model), gid="series",
                    **POINT_STYLE[point])
            decay = pd.to_numeric(part.drop_duplicates("job_id")["decay_per_step"],
                                  errors="coerce").mean()
            decays.append(f"{decay:+.3f}" if math.isfinite(decay) else "-")
        for fraction in fractions:
            ax.axhline(float(fraction), color="0.55", linewidth=0.9, linestyle=":",
                       gid="fraction", zorder=1)
        log_axis(ax)
        ax.set_title(f"{sub['label'].iloc[0]}: {' → '.join(decays)} /step", fontsize="medium")
        ax.set_xlabel("distance (tokens back)")
        ax.set_ylabel("grad norm / norm at 0")
    for ax in list(axes.flat)[len(models):]:
        ax.set_visible(False)
    extra = [Line2D([], [], color="0.25", label="at init", **POINT_STYLE[INIT]),
             Line2D([], [], color="0.25", label="after training", **POINT_STYLE[END])]
    if len(fractions):
        extra.append(Line2D([], [], color="0.55", linestyle=":", linewidth=0.9,
                            label="horizon threshold " + ", ".join(f"{f:g}" for f in fractions)))
    return finish(fig, rows, {}, extra)


def gradient_figures(profiles: pd.DataFrame, rows: pd.DataFrame
                     ) -> dict[tuple[str, int], Figure]:
    """:func:`gradient_flow` for every (task, training length) with profiles, in order."""
    keys = profiles[["task", "train_seq_len"]].drop_duplicates()
    return {(t, int(n)): gradient_flow(profiles, rows, task=t, seq_len=int(n))
            for t, n in keys.itertuples(index=False)}


def fit_r2(profile: pd.DataFrame) -> float | None:
    """How exponential one probe's decay is: R² of the least-squares line of ``ln norm``
    against distance over its stored distances ``>= 1`` with a finite positive norm (every
    distance below 64, then log-spaced ones); None with fewer than three or a flat profile."""
    ok = profile[(profile["distance"] >= 1) & np.isfinite(profile["norm"])
                 & (profile["norm"] > 0)]
    if len(ok) < 3:
        return None
    d, y = ok["distance"].to_numpy(float), np.log(ok["norm"].to_numpy(float))
    spread = float(((y - y.mean()) ** 2).sum())
    if spread == 0:
        return None
    slope, intercept = np.polyfit(d, y, 1)
    return 1.0 - float(((y - (slope * d + intercept)) ** 2).sum()) / spread


def gradient_table(profiles: pd.DataFrame) -> pd.DataFrame:
    """Per (task, seq_len, architecture): ``decay_init``, ``decay_end`` (per step, mean over
    seeds), ``r2_init``, ``r2_end`` (:func:`fit_r2`, mean over seeds), ``horizon_init``,
    ``horizon_end`` (median over seeds; None when at least half the seeds' norms never fell
    below ``fraction`` x norm(0) within the sequence), ``input_len``, ``fraction``, ``seeds``."""
    from seqbench.catalog import MODELS

    frame = with_points(profiles)
    r2 = {key: fit_r2(sub) for key, sub in frame.groupby(["job_id", "step"])}
    points = frame.drop_duplicates(["job_id", "step"])
    points = points.assign(r2=[r2[k] for k in zip(points["job_id"], points["step"],
                                                   strict=True)])
    records = []
    for (task, seq_len, model, label), sub in points.groupby(
            ["task", "train_seq_len", "model", "label"], sort=False):
        rec = {"task": task, "seq_len": int(seq_len), "model": model, "label": label,
               "input_len": sub["train_input_len"].iloc[0],
               "fraction": sub["fraction"].iloc[0], "seeds": sub["seed"].nunique()}
        for point in (INIT, END):
            part = sub[sub["point"] == point]
            decay = pd.to_numeric(part["decay_per_step"], errors="coerce").dropna()
            horizon = pd.to_numeric(part["horizon"], errors="coerce")
            rec[f"decay_{point}"] = float(decay.mean()) if len(decay) else None
            fits = pd.to_numeric(part["r2"], errors="coerce").dropna()
            rec[f"r2_{point}"] = float(fits.mean()) if len(fits) else None
            reached = len(horizon) and horizon.notna().sum() * 2 > len(horizon)
            rec[f"horizon_{point}"] = float(horizon.dropna().median()) if reached else None
        records.append(rec)
    table = pd.DataFrame(records)
    if table.empty:
        return table
    table["_order"] = table["model"].map(MODELS.order)
    return table.sort_values(["task", "seq_len", "_order"]).drop(columns="_order").reset_index(
        drop=True)


def _decay_text(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:+.3f}"


def _r2_text(value: Any) -> str:
    return "-" if value is None or pd.isna(value) else f"{value:.3f}"


def _horizon_text(value: Any, input_len: Any) -> str:
    if value is not None and not pd.isna(value):
        return f"{int(value):,}"
    return f"> {int(input_len) - 1:,}" if input_len is not None and not pd.isna(input_len) else "-"


def table_text(table: pd.DataFrame) -> pd.DataFrame:
    """:func:`gradient_table` as display strings: decay per step, the R² of its straight-line
    fit, and horizons in tokens (``> L-1`` where the norm stayed above the threshold over the
    whole input)."""
    return pd.DataFrame({
        "task": table["task"], "seq_len": table["seq_len"].map("{:,}".format),
        "model": table["label"],
        "decay/step init": table["decay_init"].map(_decay_text),
        "decay/step trained": table["decay_end"].map(_decay_text),
        "R² init": table["r2_init"].map(_r2_text),
        "R² trained": table["r2_end"].map(_r2_text),
        "horizon init": [_horizon_text(h, n) for h, n in zip(table["horizon_init"],
                                                             table["input_len"], strict=True)],
        "horizon trained": [_horizon_text(h, n) for h, n in zip(table["horizon_end"],
                                                                table["input_len"],
                                                                strict=True)]})


def write(results_dir: str | Path, out: str | Path | None = None) -> list[Path]:
    """Every gradient-flow figure (png and pdf) and the table (csv and markdown) of a results
    folder, into ``out`` (default: ``<results_dir>/figures``); returns the files written."""
    from seqbench.results.load import load, load_grad_profiles
    from seqbench.results.plots import save, style
    from seqbench.results.writers import write_table

    results_dir = Path(results_dir)
    out = Path(out) if out is not None else results_dir / "figures"
    rows, profiles = load(results_dir, warn=False), load_grad_profiles(results_dir, warn=False)
    written: list[Path] = []
    with style():
        for (task, seq_len), fig in gradient_figures(profiles, rows).items():
            written += save(fig, out / f"gradients-{task}-{seq_len}", ("png", "pdf"))
    table = gradient_table(profiles)
    return [*written, *write_table(table, table_text(table), out, "gradients")]


REPORT_NOTE = (
    "The norm of the gradient of one scored item's loss with respect to the input "
    "representation (the embedding or input projection output) at each earlier position, "
    "against the distance back from the scored position, relative to its value at distance 0, "
    "on a probe batch of its own seeded stream (train.grad_probe). decay/step: the "
    "least-squares slope of ln norm against distance over distances 1 and up (distance 0 also "
    "holds the direct residual path); the norm shrinks by a factor e^slope per token back, so "
    "-0.69 halves it at every step, and a straight line on the figure's log axis is an "
    "exponential decay. R²: how well that straight line fits ln norm (1: exactly exponential; "
    "near 0 for a flat or irregular profile, where the slope says little). horizon: the first "
    "distance whose norm is below the threshold x norm(0); '> L-1': never within the input. "
    "Means over seeds (horizons: the median).")


def report_blocks(df: pd.DataFrame, out: Path, formats: Sequence[str],
                  figures: bool = True) -> list[Any]:
    """The report's section for rows with a ``grad_profile`` (none: ``[]``): each figure of
    :func:`gradient_figures` saved under ``out/figures``, the table, and
    ``out/gradients.csv``."""
    from seqbench.results.load import load_grad_profiles
    from seqbench.results.plots import save, style
    from seqbench.results.writers import Heading, Image, Paragraph, Table

    profiles = load_grad_profiles(df, warn=False)
    if profiles.empty:
        return []
    table = gradient_table(profiles)
    table.to_csv(out / "gradients.csv", index=False)
    blocks: list[Any] = [Heading("Gradient flow over time"), Paragraph(REPORT_NOTE)]
    if figures:
        with style():
            for (task, seq_len), fig in gradient_figures(profiles, df).items():
                name = f"gradients-{task}-{seq_len}"
                save(fig, out / "figures" / name, formats)
                blocks.append(Image(f"figures/{name}.png", f"{task}, seq_len {seq_len:,}: "
                                    "gradient norm vs distance, one panel per architecture; "
                                    "dashed at initialisation, solid after training; the "
                                    "title gives decay/step init → trained.",
                                    alt=str(fig.get_label()),
                                    width_px=round(fig.get_figwidth() * 96)))
    blocks.append(Table(table_text(table), "Decay per step and memory horizon "
                        "(gradients.csv: the same numbers unrounded)."))
    return blocks
