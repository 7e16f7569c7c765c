"""Results of searches and budgets: MAD- and zoology-style aggregates, learning curves with seed
bands, significance between models, and the report's "Search" section, as standalone
functions over the rows :func:`seqbench.results.load.load` returns.

* :func:`search_frame` marks every row with its ``search_role`` (``trial``, ``final`` or ''
  for a job outside any search) and its ``search_values``; :func:`report_rows` drops the
  trials (what the main tables should show for a search suite).
* :func:`choices` recomputes a search's selection from its rows and the suite's spec
  (``suite.json``), with the very function the run used (:func:`seqbench.config.search.select`).
* :func:`best_over_search`: MAD's "best over the search per setting": per task setting, length
  and model, the chosen configuration's validation score and its final runs' test statistics.
* :func:`mad_score`: the mean over a task family's settings of that best test score (Poli et
  al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures", the MAD score);
  :func:`best_vs` with :func:`plot_best_vs`: best validation score against model width or
  recurrent state size (Arora et al. 2023, "Zoology", Fig. 2's accuracy vs state size).
* :func:`plot_curves`: learning curves per model, the mean over seeds with the range of the
  seeds as a band.
* :func:`compare_models` and :func:`ranking`: :func:`seqbench.results.stats.difference` (Welch)
  and :func:`seqbench.results.stats.rank` (Welch, Holm) over a search's final seeds.
* :func:`budget_table` and :func:`search_section`: the report's blocks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqbench.config.search import describe_choice, values_text
from seqbench.errors import SpecError
from seqbench.results.stats import Difference, interval

SEARCH_FILE = "search.json"
MAD_FAMILIES = {"mad_": "mad"}  # task-name prefix -> family (MAD's six synthetic tasks)


# --- rows of a search -------------------------------------------------------------------------
def _mark(job: Any) -> dict[str, Any]:
    search = job.get("search") if isinstance(job, dict) else None
    return search if isinstance(search, dict) else {}


def search_frame(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with ``search_role`` (trial | final | '') and ``search_values`` (the searched
    values the job ran at, as ``path=value, ...``; '' outside a search)."""
    jobs = df["job"] if "job" in df else pd.Series([None] * len(df), index=df.index)
    marks = [_mark(j) for j in jobs]
    return df.assign(search_role=[str(m.get("role", "")) for m in marks],
                     search_values=[values_text(m.get("values") or {}) for m in marks])


def report_rows(df: pd.DataFrame) -> pd.DataFrame:
    """The rows a report's main tables show: everything but a search's trials, with the
    variant labels recomputed without them (a search's final runs are one configuration per
    model, labelled as the model alone)."""
    from seqbench.results.load import add_variants

    trial = search_frame(df)["search_role"] == "trial"
    if not trial.any():
        return df
    kept = add_variants(df[~trial]) if "config_hash" in df else df[~trial]
    kept.attrs = dict(df.attrs)
    return kept


def _suite_of(spec: dict[str, Any]) -> Any:
    from seqbench.config.spec import Suite

    suite = Suite.model_validate(spec, strict=False)
    if suite.search is None:
        raise SpecError("suite.json", spec.get("name"), "holds no search block")
    return suite


def choices(df: pd.DataFrame, spec: dict[str, Any]) -> list[Any]:
    """The search's selection, recomputed from the trial rows in ``df`` and the suite's spec
    (``suite.json``'s ``spec``): :func:`seqbench.config.search.select` over the stored trials
    (a trial without a row leaves its setting undecided)."""
    from seqbench.config.job import Job
    from seqbench.config.search import TrialPlan, configurations, select, targets, values_for

    suite = _suite_of(spec)
    plan = TrialPlan(suite, configurations(suite.search), targets(suite))
    rows = df.to_dict("records")
    for row in rows:
        if _mark(row.get("job")).get("role") != "trial":
            continue
        job = Job.parse(row["job"])
        assert job.search is not None
        if job.job_id in plan.stands_for:
            continue
        plan.jobs.append(job)
        plan.stands_for[job.job_id] = [i for i, c in enumerate(plan.configs)
                                       if values_for(job, c, plan.reach) == job.search.values]
    clean = [{k: v for k, v in r.items() if not _missing(v)} for r in rows]
    return select(plan, clean)


def _missing(v: Any) -> bool:
    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


# --- significance (built on seqbench.results.stats) -----------------------------------------
def _metric_column(df: pd.DataFrame, metric: str) -> str:
    column = metric if metric.startswith("metric_") else f"metric_{metric}"
    if column not in df:
        have = sorted(c[7:] for c in df.columns if c.startswith("metric_"))
        raise SpecError("metric", metric, f"one of {', '.join(have) or 'no metrics'}")
    return column


def _direction(df: pd.DataFrame, column: str) -> bool | None:
    flag = f"higher_is_better_{column[7:]}"
    values = df[flag].dropna() if flag in df else pd.Series([], dtype=object)
    return bool(values.iloc[0]) if len(values) else None


def seed_values(df: pd.DataFrame, model: str, length: int, metric: str,
                task: str | None = None) -> np.ndarray:
    """The metric over the ok seeds of one model at one length: a search's final runs (on the
    test split) when the rows hold a search, never its trials; SpecError when the rows name
    no single task or configuration."""
    column = _metric_column(df, metric)
    rows = search_frame(df[(df["kind"] == "train") & (df["model"] == model)
                           & (df["seq_len"] == length)])
    if task is not None:
        rows = rows[rows["task"] == task]
    if (rows["search_role"] != "").any():
        rows = rows[rows["search_role"] == "final"]
    if rows["task"].nunique() > 1:
        raise SpecError("task", None, f"these rows hold {', '.join(rows['task'].unique())}; "
                        "name one")
    if rows["config_hash"].nunique() > 1:
        raise SpecError("rows", model, f"hold {rows['config_hash'].nunique()} configurations of "
                        f"{model} at length {length}; select one first")
    ok = rows[rows["status"] == "ok"][column].dropna()
    return ok.to_numpy(dtype=float)


def final_samples(df: pd.DataFrame, length: int, metric: str, *,
                  task: str | None = None) -> tuple[dict[str, np.ndarray], bool | None]:
    """Per model (in the rows' order) its ok final seeds at one length (:func:`seed_values`),
    and the metric's direction: the input of :func:`seqbench.results.stats.rank`,
    :func:`~seqbench.results.stats.best_marks` and :func:`~seqbench.results.stats.difference`."""
    column = _metric_column(df, metric)
    rows = df[(df["kind"] == "train") & (df["seq_len"] == length)]
    if task is not None:
        rows = rows[rows["task"] == task]
    samples = {str(m): seed_values(rows, str(m), length, column, task)
               for m in dict.fromkeys(rows["model"])}
    return samples, _direction(rows, column)


def compare_models(df: pd.DataFrame, a: str, b: str, length: int, metric: str, *,
                   task: str | None = None) -> Difference:
    """Model ``a`` against ``b`` on their final seeds: :func:`seqbench.results.stats.difference`
    (Welch's two-sided t-test and the Welch interval of ``mean_a - mean_b``)."""
    from seqbench.results.stats import difference

    column = _metric_column(df, metric)
    return difference(seed_values(df, a, length, column, task),
                      seed_values(df, b, length, column, task))


def ranking(df: pd.DataFrame, length: int, metric: str, *, task: str | None = None,
            alpha: float = 0.05) -> pd.DataFrame:
    """Models at one length ranked on their final seeds with the uncertainty shown:
    :func:`seqbench.results.stats.rank` (Welch, Holm over all pairs; ``rank_best`` ..
    ``rank_worst`` the ranks a model could hold)."""
    from seqbench.results.stats import rank

    samples, higher = final_samples(df, length, metric, task=task)
    return rank(samples, True if higher is None else higher, alpha)


# --- MAD and zoology aggregates ---------------------------------------------------------------
def _params_text(job: Any) -> str:
    task = job.get("task") if isinstance(job, dict) else None
    params = task.get("params") if isinstance(task, dict) else None
    return json.dumps(params or {}, sort_keys=True)


def best_over_search(df: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """One row per (task, task params, length, model[, per: suite: every model]): the chosen
    configuration, its validation score over the trial seeds (``val_score``), how many
    configurations competed, and its final runs on the test split: ``test_mean``,
    ``test_std``, ``test_n``, ``test_ci_low``/``test_ci_high`` (:func:`seqbench.results.stats
    .interval`: none below 3 seeds) and the failed
    final seeds."""
    from seqbench.config.job import canonical_json

    marked = search_frame(df)
    finals = marked[marked["search_role"] == "final"]
    out = []
    for choice in choices(df, spec):
        models = [choice.model] if choice.model is not None else list(dict.fromkeys(
            marked.loc[marked["search_role"] == "trial", "model"]))
        column = f"metric_{choice.metric}" if choice.metric else None
        for model in models:
            rows = finals[(finals["model"] == model) & (finals["task"] == choice.task)
                          & (finals["seq_len"] == choice.seq_len)
                          & (finals["job"].map(_params_text)
                             == json.dumps(choice.task_params, sort_keys=True))]
            if choice.best is not None:
                rows = rows[rows["job"].map(lambda j: canonical_json(_mark(j).get("values")))
                            == canonical_json(_reaching(choice, model, spec))]
            ok = rows[rows["status"] == "ok"]
            values = (ok[column].dropna().to_numpy(dtype=float)
                      if column is not None and column in ok else np.array([]))
            ci = interval(values)
            out.append({
                "task": choice.task, "task_params": json.dumps(choice.task_params,
                                                               sort_keys=True),
                "seq_len": choice.seq_len, "model": model, "metric": choice.metric,
                "higher_is_better": choice.higher_is_better,
                "n_configs": len(choice.candidates),
                "chosen": values_text(choice.best.values) if choice.best else "",
                "val_score": choice.best.score if choice.best else math.nan,
                "test_mean": values.mean() if len(values) else math.nan,
                "test_std": values.std(ddof=1) if len(values) > 1 else math.nan,
                "test_n": len(values), "test_ci_low": ci.low, "test_ci_high": ci.high,
                "test_failed": int((rows["status"] != "ok").sum()),
                "reason": choice.reason})
    return _ordered(pd.DataFrame(out))


def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
    """Tasks as they first appear, then length, then models in registry order."""
    from seqbench.catalog import MODELS

    if frame.empty:
        return frame
    tasks = {t: i for i, t in enumerate(dict.fromkeys(frame["task"]))}
    keyed = frame.assign(_t=frame["task"].map(tasks), _m=frame["model"].map(MODELS.order))
    return keyed.sort_values(["_t", "task_params", "seq_len", "_m"], kind="stable").drop(
        columns=["_t", "_m"]).reset_index(drop=True)


def _reaching(choice: Any, model: str, spec: dict[str, Any]) -> dict[str, Any]:
    """The chosen values as a final job of ``model`` carries them (per suite: a path naming
    another model does not reach it)."""
    from seqbench.config.search import targets

    assert choice.best is not None
    reach = targets(_suite_of(spec))
    return {p: v for p, v in choice.best.values.items() if reach[p].model in (None, model)}


def family_of(task: str, families: dict[str, str] | None = None) -> str:
    """A task's family: the first matching name prefix of ``families`` (default: MAD's
    ``mad_`` tasks form ``mad``), else the task itself."""
    for prefix, family in (families or MAD_FAMILIES).items():
        if task.startswith(prefix):
            return family
    return task


def mad_score(best: pd.DataFrame, families: dict[str, str] | None = None) -> pd.DataFrame:
    """Per (family, model): the mean over the family's settings (task, params, length) of the
    best configuration's test mean (the MAD score), how many settings it covers and how many
    the family has (a model missing a setting gets no score: ``complete`` False)."""
    if best.empty:
        return pd.DataFrame(columns=["family", "model", "metric", "score", "n_settings",
                                     "of_settings", "complete"])
    best = best.assign(family=best["task"].map(lambda t: family_of(t, families)))
    settings = best.groupby("family")[["task", "task_params", "seq_len"]].apply(
        lambda g: len(g.drop_duplicates()))
    out = []
    for (family, model), group in best.groupby(["family", "model"], sort=False):
        scored = group["test_mean"].dropna()
        complete = len(scored) == settings[family]
        out.append({"family": family, "model": model,
                    "metric": ", ".join(dict.fromkeys(group["metric"].astype(str))),
                    "score": scored.mean() if complete else math.nan,
                    "n_settings": len(scored), "of_settings": int(settings[family]),
                    "complete": complete})
    return pd.DataFrame(out)


def best_vs(df: pd.DataFrame, x: str, metric: str | None = None) -> pd.DataFrame:
    """Zoology's points: per (task, task params, length, model, ``x``), the best configuration
    over the search's other values on the **validation** split (the trials' mean over seeds
    of each configuration, the best of them), with ``x`` a row column: ``d_model`` (width) or
    ``state_size_bytes`` (the mixers' recurrent state per sequence). Rows outside a search
    count as one configuration each."""
    marked = search_frame(df)
    marked = marked[(marked["kind"] == "train") & (marked["search_role"] != "final")]
    if x not in marked:
        raise SpecError("x", x, "a row column such as d_model or state_size_bytes")
    out = []
    keys = ["task", "_params", "seq_len", "model", x]
    marked = marked.assign(_params=marked["job"].map(_params_text))
    for key, group in marked.groupby(keys, sort=False, dropna=True):
        name = metric or next((m for m in group["primary_metric"] if m), None)
        if not name:
            continue
        column = _metric_column(group, name)
        higher = _direction(group, column)
        ok = group[group["status"] == "ok"]
        means = ok.groupby("config_hash")[column].mean().dropna()
        if means.empty:
            continue
        best = means.max() if higher in (True, None) else means.min()
        out.append({**dict(zip(["task", "task_params", "seq_len", "model", x], key,
                               strict=True)),
                    "metric": name, "best": float(best), "n_configs": int(
                        group["config_hash"].nunique()), "higher_is_better": higher})
    return pd.DataFrame(out)


# --- figures ----------------------------------------------------------------------------------
def _style(model: str) -> dict[str, Any]:
    from seqbench.catalog import MODELS

    entry = MODELS[model] if model in MODELS else None
    return {"color": entry.color if entry else "#333333",
            "marker": entry.marker if entry else "o",
            "linestyle": entry.linestyle if entry else "-",
            "label": (entry.display or model) if entry else model}


def plot_best_vs(points: pd.DataFrame, x: str, *, title: str | None = None) -> Any:
    """Best validation score against ``x`` (log axis), one line per model, one panel per
    (task, params, length): the zoology figure."""
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    if points.empty:
        raise SpecError("rows", x, "hold no ok training rows with that column")
    panels = list(dict.fromkeys(zip(points["task"], points["task_params"],
                                    points["seq_len"], strict=True)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    labels = {"d_model": "model width (d_model)",
              "state_size_bytes": "recurrent state per sequence (bytes)"}
    for ax, (task, params, seq_len) in zip(axes[0], panels, strict=True):
        sub = points[(points["task"] == task) & (points["task_params"] == params)
                     & (points["seq_len"] == seq_len)]
        for model, line in sub.groupby("model", sort=False):
            line = line.sort_values(x)
            ax.plot(line[x].astype(float), line["best"], **_style(str(model)))
        ax.set_xscale("log")
        ticks = sorted({float(v) for v in sub[x]})  # the values themselves, no minor labels
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xticks(ticks, [f"{v:,.0f}" for v in ticks], fontsize=8)
        ax.set_xlabel(labels.get(x, x))
        ax.set_ylabel(f"best {sub['metric'].iloc[0]} (validation)")
        extra = "" if params == "{}" else f" {params}"
        ax.set_title(f"{task}{extra} L={seq_len}", fontsize=10)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or f"best over the search vs\n{labels.get(x, x)}", fontsize=10)
    fig.tight_layout()
    return fig


def plot_curves(curves: pd.DataFrame, metric: str, *, roles: Sequence[str] = ("final", ""),
                rows: pd.DataFrame | None = None, x: str = "step") -> Any:
    """Learning curves (from :func:`seqbench.results.load.load_curves`): per model, the mean
    over seeds of the validation ``metric`` at each point, with the seeds' range (min to max)
    as a band; one panel per (task, length). ``rows`` (the loaded rows) restricts the curves
    to jobs of the given search ``roles`` (default: final runs and jobs outside a search)."""
    import matplotlib.pyplot as plt

    column = _metric_column(curves, metric)
    if rows is not None:
        marked = search_frame(rows)
        keep = set(marked.loc[marked["search_role"].isin(list(roles)), "job_id"])
        curves = curves[curves["job_id"].isin(keep)]
    if curves.empty:
        raise SpecError("curves", metric, "no learning-curve points (train.eval_every > 0)")
    panels = list(dict.fromkeys(zip(curves["task"], curves["train_seq_len"], strict=True)))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (task, seq_len) in zip(axes[0], panels, strict=True):
        sub = curves[(curves["task"] == task) & (curves["train_seq_len"] == seq_len)]
        for (model, _), line in sub.groupby(["model", "config_hash"], sort=False):
            stats = line.groupby(x)[column].agg(["mean", "min", "max", "count"]).reset_index()
            style = _style(str(model))
            n = int(line["seed"].nunique())
            ax.plot(stats[x], stats["mean"], **{**style, "label": f"{style['label']} ({n})",
                                                "marker": None})
            ax.fill_between(stats[x], stats["min"], stats["max"], color=style["color"],
                            alpha=0.2, linewidth=0)
        ax.set_xlabel("training step" if x == "step" else x)
        ax.set_ylabel(f"{column[7:]} (validation)")
        ax.set_title(f"{task} L={seq_len}", fontsize=10)
    axes[0][0].legend(fontsize=8, title="model (seeds)", title_fontsize=8)
    fig.suptitle("learning curves: mean over seeds,\nband = range of the seeds", fontsize=10)
    fig.tight_layout()
    return fig


# --- the report's section ---------------------------------------------------------------------
BUDGET_COLUMNS = ["model", "task", "seq_len", "budget_kind", "budget_target", "budget_achieved",
                  "budget_ratio", "budget_matched", "budget_adjusted", "budget_note"]


def budget_table(df: pd.DataFrame) -> pd.DataFrame:
    """One line per budgeted configuration: the budget, what was achieved, whether it is
    matched, what the sizing adjusted and why a budget is not matched."""
    if "budget_kind" not in df or not df["budget_kind"].astype(str).str.len().gt(0).any():
        return pd.DataFrame(columns=BUDGET_COLUMNS)
    rows = df[df["budget_kind"].astype(str).str.len() > 0].copy()
    rows["budget_adjusted"] = rows["budget_adjusted"].map(
        lambda a: values_text(a) if isinstance(a, dict) else "")
    return rows[BUDGET_COLUMNS].astype(str).drop_duplicates().reset_index(drop=True)


def _fmt(x: Any) -> str:
    if isinstance(x, float):
        return "" if math.isnan(x) else f"{x:.4g}"
    return str(x)


def read_search_file(path: str | Path) -> dict[str, Any] | None:
    """The ``search.json`` a search run wrote next to its rows, or None."""
    target = Path(path) / SEARCH_FILE
    return json.loads(target.read_text(encoding="utf-8")) if target.is_file() else None


def search_section(df: pd.DataFrame, spec: dict[str, Any] | None, out: Path,
                   curves: pd.DataFrame | None = None, formats: Sequence[str] = ("png",)
                   ) -> list[Any]:
    """The report's blocks (:mod:`seqbench.results.writers`) for a search and its budgets:
    what was searched and how the choice was made, one line per choice, the best over the
    search with its test statistics, the MAD score per family, the zoology figures (best vs
    width and vs state size), the learning curves and the budget table. Figures go to
    ``out/figures``. ``spec``: the suite's spec (``suite.json``); None for rows outside a
    search (then only the budget table)."""
    from seqbench.results.writers import Heading, Paragraph, Table

    blocks: list[Any] = []
    if spec is not None and spec.get("search"):
        suite = _suite_of(spec)
        search = suite.search
        picked = choices(df, spec)
        n_trials = int((search_frame(df)["search_role"] == "trial").sum())
        metric = search.metric or "each task's primary metric"
        blocks += [Heading("Search"), Paragraph(
            f"Searched {', '.join(_searched(search))} ({n_trials} trial rows on "
            f"{len(search.seeds or suite.seeds)} trial seed(s)); each configuration scored by "
            f"the {search.rule} of {metric} over its trial seeds on the validation split, "
            f"chosen per {'model' if search.per == 'model' else 'suite (one for all models)'} "
            "and setting (configurations whose trials all finished ok first); the chosen one "
            f"rerun on {len(suite.seeds)} seed(s) and reported on the test split.")]
        lines = pd.DataFrame([{"task": c.task, "seq_len": str(c.seq_len),
                               "model": c.model or "every model",
                               "selection": describe_choice(c, len(suite.seeds))} for c in picked])
        if len(lines):
            blocks.append(Table(lines, "How each configuration was chosen"))
        trials = trial_table(picked)
        if len(trials):
            blocks.append(Table(trials.map(_fmt), f"Every trial: validation {metric} per seed "
                                "and the candidate's score under the rule; chosen: the "
                                "configuration the final runs use"))
        best = best_over_search(df, spec)
        if len(best):
            shown = best[["task", "seq_len", "model", "chosen", "val_score", "test_mean",
                          "test_ci_low", "test_ci_high", "test_n"]].map(_fmt)
            blocks.append(Table(shown, "Best over the search per setting: validation score of "
                                       "the chosen configuration, test mean and 95% interval "
                                       "over the final seeds (Student t from 3 seeds, none below)"))
            scores = mad_score(best)
            if len(scores):
                blocks.append(Table(scores.map(_fmt), "Mean over each task family's settings "
                                    "of the best test score (the MAD score); a model missing a "
                                    "setting has none"))
        if "png" in formats:
            blocks += _figure_blocks(df, out / "figures", curves, formats)
    budgets = budget_table(df)
    if len(budgets):
        blocks += [Heading("Budgets"), Table(budgets, "Each budgeted model: the budget, the "
                                             "value achieved, whether it is within the "
                                             "tolerance below it, and what the sizing set")]
    return blocks


def _save(fig: Any, path: Path, formats: Sequence[str]) -> None:
    import matplotlib.pyplot as plt

    for fmt in formats:
        fig.savefig(path.with_suffix(f".{fmt}"), dpi=150)
    plt.close(fig)


def _figure_blocks(df: pd.DataFrame, figures: Path, curves: pd.DataFrame | None,
                   formats: Sequence[str]) -> list[Any]:
    """The zoology figures (best vs width, vs state size; where the rows hold two or more
    values) and the final runs' learning curves, saved under ``figures``."""
    from seqbench.results.writers import Image

    figures.mkdir(parents=True, exist_ok=True)
    blocks: list[Any] = []
    for x, name in (("d_model", "search_best_vs_width"),
                    ("state_size_bytes", "search_best_vs_state")):
        points = best_vs(df, x) if x in df else pd.DataFrame()
        if len(points) == 0 or points[x].nunique() < 2:
            continue
        _save(plot_best_vs(points, x), figures / name, formats)
        blocks.append(Image(f"figures/{name}.png", "Best validation score over the search "
                            f"against {x} (zoology style)"))
    metric = next((m for m in df["primary_metric"] if m), None)
    if curves is not None and len(curves) and metric and f"metric_{metric}" in curves:
        try:
            fig = plot_curves(curves, metric, rows=df)
        except SpecError:  # no final runs with curve points
            return blocks
        _save(fig, figures / "search_curves", formats)
        blocks.append(Image("figures/search_curves.png", "Learning curves of the final runs "
                            "(validation split), mean over seeds with their range as a band"))
    return blocks


def trial_table(picked: list[Any]) -> pd.DataFrame:
    """One line per trial of every choice: task, length, model, the searched values, seed,
    status, its validation value, its candidate's score and whether that candidate was
    chosen."""
    out = []
    for choice in picked:
        for i, cand in enumerate(choice.candidates):
            for trial in cand.trials:
                out.append({"task": choice.task, "seq_len": choice.seq_len,
                            "model": trial["model"], "values": values_text(cand.values),
                            "seed": trial["seed"], "status": trial["status"] or "not run",
                            "value": math.nan if trial["value"] is None else trial["value"],
                            "score": cand.score,
                            "chosen": "yes" if i == choice.chosen else ""})
    return pd.DataFrame(out)


def _searched(search: Any) -> list[str]:
    parts = [f"{p} in {{{', '.join(map(str, v))}}}" for p, v in search.grid.items()]
    if search.random is not None:
        parts.append(f"{search.random.samples} random samples of "
                     f"{', '.join(search.random.space)} (seed {search.random.seed})")
    return parts


def curves_of(df: pd.DataFrame) -> pd.DataFrame:
    """The learning-curve points of the rows in ``df`` (training rows' ``curve`` lists), one
    record per point with the job's identity: what :func:`plot_curves` takes."""
    records = []
    for rec in df[df["kind"] == "train"].to_dict("records"):
        curve = rec.get("curve")
        for point in curve if isinstance(curve, list) else []:
            if isinstance(point, dict):
                records.append({"job_id": rec.get("job_id"), "model": rec.get("model"),
                                "config_hash": rec.get("config_hash"), "seed": rec.get("seed"),
                                "task": rec.get("task"), "train_seq_len": rec.get("seq_len"),
                                **point})
    frame = pd.DataFrame(records)
    for col in frame.columns:
        if col.startswith("metric_"):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    return frame


def search_blocks(df: pd.DataFrame, suites: Sequence[dict[str, Any]] | None, out: Path,
                  formats: Sequence[str] = ("png",)) -> list[Any]:
    """The report's "Search" and "Budgets" sections (:func:`search_section`) for rows that
    hold a search (the first suite.json in ``suites`` whose spec has a ``search`` block) or a
    budget; [] otherwise. Only a figure-less report (``formats`` empty) skips the figures."""
    spec = next((s.get("spec") for s in suites or []
                 if isinstance(s.get("spec"), dict) and s["spec"].get("search")), None)
    if spec is not None:
        df = df[df["suite"].astype(str) == str(spec.get("name"))]
    return search_section(df, spec, out, curves_of(df) if spec is not None else None,
                          formats=formats)
