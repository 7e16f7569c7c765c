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
* :func:`compare_models` and :func:`ranking`: Welch's t-test between two models' seeds (and a
  bootstrap interval of the difference once both have at least ``bootstrap_min_n`` seeds), and
  models ranked by mean with 95% t-intervals, from :mod:`scipy.stats`.
* :func:`budget_table` and :func:`search_section`: the report's blocks.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from seqbench.config.search import describe_choice, values_text
from seqbench.errors import SpecError

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
    """The rows a report's main tables show: everything but a search's trials."""
    return df[search_frame(df)["search_role"] != "trial"]


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


# --- statistics (scipy.stats) -----------------------------------------------------------------
def t_interval(values: np.ndarray, level: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean; (nan, nan) below two values."""
    from scipy import stats

    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return math.nan, math.nan
    low, high = stats.t.interval(level, len(x) - 1, loc=x.mean(), scale=stats.sem(x))
    return float(low), float(high)


@dataclass(frozen=True)
class Comparison:
    """Model ``a`` against model ``b`` on one metric at one length: the means over ok seeds,
    their difference (a - b), Welch's t-test (statistic, degrees of freedom, two-sided p) with
    its interval of the difference, and a percentile bootstrap interval of the difference when
    both have at least ``bootstrap_min_n`` seeds (else NaN). ``better``: the model whose mean
    is better in the task's direction when p < alpha, else ''."""

    a: str
    b: str
    metric: str
    seq_len: int
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: float
    t: float
    df: float
    p_value: float
    ci_low: float
    ci_high: float
    boot_low: float
    boot_high: float
    bootstrap_min_n: int
    higher_is_better: bool | None
    alpha: float
    better: str

    def dump(self) -> dict[str, Any]:
        return asdict(self)


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
    """The metric over the ok seeds of one model at one length (a search's final runs when
    the rows hold a search); SpecError when the rows name no single configuration."""
    column = _metric_column(df, metric)
    rows = search_frame(df[(df["kind"] == "train") & (df["model"] == model)
                           & (df["seq_len"] == length)])
    if task is not None:
        rows = rows[rows["task"] == task]
    if (rows["search_role"] == "final").any():
        rows = rows[rows["search_role"] == "final"]
    if rows["task"].nunique() > 1:
        raise SpecError("task", None, f"these rows hold {', '.join(rows['task'].unique())}; "
                        "name one")
    if rows["config_hash"].nunique() > 1:
        raise SpecError("rows", model, f"hold {rows['config_hash'].nunique()} configurations of "
                        f"{model} at length {length}; select one first")
    ok = rows[rows["status"] == "ok"][column].dropna()
    return ok.to_numpy(dtype=float)


def compare_models(df: pd.DataFrame, a: str, b: str, length: int, metric: str, *,
                   task: str | None = None, alpha: float = 0.05, bootstrap_min_n: int = 8,
                   n_boot: int = 9999, seed: int = 0) -> Comparison:
    """Model ``a`` vs ``b`` (see :class:`Comparison`): :func:`scipy.stats.ttest_ind` with
    ``equal_var=False`` (Welch) and :func:`scipy.stats.bootstrap` of the difference of means
    (percentile, ``n_boot`` resamples, seeded)."""
    from scipy import stats

    column = _metric_column(df, metric)
    x, y = (seed_values(df, m, length, column, task) for m in (a, b))
    if len(x) < 2 or len(y) < 2:
        raise SpecError("seeds", {a: len(x), b: len(y)}, "a comparison needs at least 2 ok "
                        "seeds of each model")
    test = stats.ttest_ind(x, y, equal_var=False)
    ci = test.confidence_interval(1 - alpha)
    boot_low = boot_high = math.nan
    if min(len(x), len(y)) >= bootstrap_min_n:
        res = stats.bootstrap((x, y), lambda u, v, axis=-1: u.mean(axis) - v.mean(axis),
                              n_resamples=n_boot, confidence_level=1 - alpha,
                              method="percentile", random_state=np.random.default_rng(seed))
        boot_low, boot_high = float(res.confidence_interval.low), float(
            res.confidence_interval.high)
    higher = _direction(df, column)
    diff = float(x.mean() - y.mean())
    better = ""
    if higher is not None and float(test.pvalue) < alpha and diff != 0:
        better = a if (diff > 0) == higher else b
    return Comparison(a, b, column[7:], length, len(x), len(y), float(x.mean()),
                      float(y.mean()), diff, float(test.statistic), float(test.df),
                      float(test.pvalue), float(ci.low), float(ci.high), boot_low, boot_high,
                      bootstrap_min_n, higher, alpha, better)


def ranking(df: pd.DataFrame, length: int, metric: str, *, task: str | None = None,
            alpha: float = 0.05) -> pd.DataFrame:
    """Models at one length ranked by mean (best first, in the task's direction), each with
    its 95% t-interval, n, and Welch's p-value against the best model; ``tied_with_best``
    where that p-value is not below ``alpha``."""
    from scipy import stats

    column = _metric_column(df, metric)
    rows = df[(df["kind"] == "train") & (df["seq_len"] == length)]
    if task is not None:
        rows = rows[rows["task"] == task]
    higher = _direction(rows, column)
    out = []
    for model in dict.fromkeys(rows["model"]):
        values = seed_values(rows, model, length, column, task)
        low, high = t_interval(values)
        out.append({"model": model, "n": len(values),
                    "mean": values.mean() if len(values) else math.nan,
                    "ci_low": low, "ci_high": high, "values": values})
    table = pd.DataFrame(out)
    if table.empty:
        return table
    sign = -1.0 if higher in (True, None) else 1.0
    table = table.assign(_key=sign * table["mean"]).sort_values("_key", kind="stable",
                                                                na_position="last")
    best = table.iloc[0]["values"]
    p_values = []
    for values in table["values"]:
        if len(values) < 2 or len(best) < 2 or values is best:
            p_values.append(math.nan if values is not best else 1.0)
        else:
            p_values.append(float(stats.ttest_ind(values, best, equal_var=False).pvalue))
    table = table.assign(p_vs_best=p_values, rank=range(1, len(table) + 1))
    table["tied_with_best"] = table["p_vs_best"].ge(alpha).fillna(False)
    return table.drop(columns=["_key", "values"]).reset_index(drop=True)[
        ["rank", "model", "mean", "ci_low", "ci_high", "n", "p_vs_best", "tied_with_best"]]


# --- MAD and zoology aggregates ---------------------------------------------------------------
def _params_text(job: Any) -> str:
    task = job.get("task") if isinstance(job, dict) else None
    params = task.get("params") if isinstance(task, dict) else None
    return json.dumps(params or {}, sort_keys=True)


def best_over_search(df: pd.DataFrame, spec: dict[str, Any]) -> pd.DataFrame:
    """One row per (task, task params, length, model[, per: suite: every model]): the chosen
    configuration, its validation score over the trial seeds (``val_score``), how many
    configurations competed, and its final runs on the test split: ``test_mean``,
    ``test_std``, ``test_n``, ``test_ci_low``/``test_ci_high`` (t-interval) and the failed
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
            low, high = t_interval(values)
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
                "test_n": len(values), "test_ci_low": low, "test_ci_high": high,
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
        ax.set_xlabel(labels.get(x, x))
        ax.set_ylabel(f"best {sub['metric'].iloc[0]} (validation)")
        extra = "" if params == "{}" else f" {params}"
        ax.set_title(f"{task}{extra} L={seq_len}", fontsize=10)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title or f"best over the search vs {labels.get(x, x)}", fontsize=11)
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
    fig.suptitle("learning curves: mean over seeds, band = range of the seeds", fontsize=11)
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
    from seqbench.results.writers import Heading, Image, Paragraph, Table

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
        best = best_over_search(df, spec)
        if len(best):
            shown = best[["task", "seq_len", "model", "chosen", "val_score", "test_mean",
                          "test_ci_low", "test_ci_high", "test_n"]].map(_fmt)
            blocks.append(Table(shown, "Best over the search per setting: validation score of "
                                       "the chosen configuration, test mean and 95% t-interval "
                                       "over the final seeds"))
            scores = mad_score(best)
            if len(scores):
                blocks.append(Table(scores.map(_fmt), "Mean over each task family's settings "
                                    "of the best test score (the MAD score); a model missing a "
                                    "setting has none"))
        figures = out / "figures"
        figures.mkdir(parents=True, exist_ok=True)
        for x, name in (("d_model", "search_best_vs_width"),
                        ("state_size_bytes", "search_best_vs_state")):
            points = best_vs(df, x)
            if points[x].nunique() < 2 if len(points) else True:
                continue
            fig = plot_best_vs(points, x)
            for fmt in formats:
                fig.savefig(figures / f"{name}.{fmt}", dpi=150)
            blocks.append(Image(f"figures/{name}.png", f"Best validation score over the search "
                                f"against {x} (zoology style)"))
        if curves is not None and len(curves):
            metric_name = next((m for m in df["primary_metric"] if m), None)
            if metric_name:
                fig = plot_curves(curves, metric_name, rows=df)
                for fmt in formats:
                    fig.savefig(figures / f"search_curves.{fmt}", dpi=150)
                blocks.append(Image("figures/search_curves.png", "Learning curves of the final "
                                    "runs (validation), mean over seeds with their range"))
    budgets = budget_table(df)
    if len(budgets):
        blocks += [Heading("Budgets"), Table(budgets, "Each budgeted model: the budget, the "
                                             "value achieved, whether it is within the "
                                             "tolerance below it, and what the sizing set")]
    return blocks


def _searched(search: Any) -> list[str]:
    parts = [f"{p} in {{{', '.join(map(str, v))}}}" for p, v in search.grid.items()]
    if search.random is not None:
        parts.append(f"{search.random.samples} random samples of "
                     f"{', '.join(search.random.space)} (seed {search.random.seed})")
    return parts
