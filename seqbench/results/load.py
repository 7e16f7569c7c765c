"""Load stored rows into one tidy pandas DataFrame: one row per job (per context position for
streaming rows), the columns of :mod:`seqbench.recording.schema` with their units in the names.

``load`` reads a results directory (``jobs/<job_id>.json`` + ``results.jsonl``), a ``.jsonl``
file, a ``.parquet`` file, or a list of those. It never merges what must stay apart:

* a truncated last JSONL line (a crash mid-append) is skipped and reported, not fatal;
* a job stored more than once in one run (a re-run) keeps its last row, and says so; the same
  job in two runs (two directories or files) keeps both rows, told apart by ``run``
  (:mod:`seqbench.results.identity` defines "the same job");
* a row with a poisoned value (a seed of 10^30, a number where a name belongs, a string where a
  number belongs, a non-finite number) is never fatal: a value that cannot be read is left
  empty, a row whose identity (job, configuration, task, model, length, seed, status) cannot be
  read is skipped, and either is said in a note;
* rows of different ``schema_version`` are refused with a clear error;
* rows with different ``config_hash`` are different experiments. Where two of them share a
  display key (task, model, seq_len) they get distinct ``variant`` labels (the job parameters
  that differ, e.g. ``d_model=128``) and a warning, so no table or plot averages them together.

Everything reported goes through :class:`ResultsWarning` and ``df.attrs["notes"]`` (the report
prints the notes).

Columns added to the stored fields:

``variant``  '' or what distinguishes this configuration from others of the same (kind, task,
             model), e.g. ``d_model=128``; ``bare`` first for a ``backbone: bare`` model
``label``    the model's display name from the registry, plus `` (variant)`` when there is one
``source``   the file the row was read from
``run``      the run the row belongs to: the results directory's name (a file's name without
             ``.jsonl``; ``results.jsonl`` names its directory), made unique over the paths
"""

from __future__ import annotations

import hashlib
import json
import math
import warnings
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, TypeAlias

import numpy as np
import pandas as pd

from seqbench.errors import SpecError
from seqbench.recording.reader import SUITE_FILE, read_rows, read_suite_file
from seqbench.recording.schema import FIELDS, PREFIXED, SCHEMA_VERSION
from seqbench.results.identity import job_key

ADDED_COLUMNS = {
    "variant": "'' or the job parameters that tell this configuration apart, e.g. d_model=128",
    "label": "model display name from the registry (+ ' (variant)')",
    "source": "file the row was read from",
    "run": "the results directory (or file) the row was read from, unique per loaded path",
}
# keys that vary along a sweep inside one configuration, or stay out of its config hash
# (timeout_s): they never name a variant
SWEEP_KEYS = frozenset({"seed", "seq_len", "input_len", "context_len", "timeout_s"})
_JSON_COLUMN_PREFIX = "seqbench_json:"  # parquet metadata marker for dict/list columns
_REQUIRED_TO_LOAD = ("schema_version", "job_id", "config_hash", "kind", "task", "model",
                     "seq_len", "status")
# a row whose value of one of these cannot be read cannot be placed in any table: skipped
_IDENTITY = frozenset({*_REQUIRED_TO_LOAD, "seed", "context_len"})
INT64 = 2**63


class ResultsWarning(UserWarning):
    """Something about the stored rows a reader of the results should know."""


class Notes(list):
    """What loading found worth telling a reader; each note is also a :class:`ResultsWarning`
    unless ``warn`` is False (the CLI prints them itself)."""

    def __init__(self, warn: bool = True) -> None:
        super().__init__()
        self.warn = warn

    def add(self, message: str) -> None:
        self.append(message)
        if self.warn:
            warnings.warn(message, ResultsWarning, stacklevel=3)


def _read_parquet(path: Path) -> list[dict[str, Any]]:
    import pyarrow.parquet as pq

    table = pq.read_table(path)
    json_columns = {k.decode()[len(_JSON_COLUMN_PREFIX):]
                    for k in (table.schema.metadata or {}) if k.decode().startswith(
                        _JSON_COLUMN_PREFIX)}
    frame = table.to_pandas()
    for col in json_columns & set(frame.columns):
        frame[col] = [json.loads(v) if isinstance(v, str) else v for v in frame[col]]
    return [{k: v for k, v in rec.items() if not _is_missing(v)}
            for rec in frame.to_dict("records")]


def _is_missing(value: Any) -> bool:
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):  # lists, dicts, arrays
        return False


def _read_path(path: Path, notes: Notes) -> list[dict[str, Any]]:
    """Rows of one path (through :mod:`seqbench.recording.reader`, which reconciles a
    directory's two copies), each with its ``source``."""
    if path.suffix == ".parquet" and path.is_file():
        return [{**r, "source": str(path)} for r in _read_parquet(path)]
    rows, problems = read_rows(path)
    for problem in problems:
        notes.add(f"skipped: {problem}")
    bad = sum(not isinstance(r, dict) for r in rows)
    if bad:
        notes.add(f"skipped {bad} row(s) of {path} that are not JSON objects")
    return [{**r, "source": str(path)} for r in rows if isinstance(r, dict)]


def run_name(path: Path) -> str:
    """The run a path holds: a directory's name; a file's name without its suffix, except
    ``results.jsonl``, which names its directory."""
    path = Path(path)
    if path.is_dir():
        return path.resolve().name
    if path.name == "results.jsonl":
        return path.resolve().parent.name
    return path.stem


def run_names(paths: Sequence[Path]) -> list[str]:
    """:func:`run_name` of each path, with the paths as given where two names collide."""
    names = [run_name(p) for p in paths]
    return [str(p) if names.count(n) > 1 else n for p, n in zip(paths, names, strict=True)]


def _canonical(row: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in row.items() if k != "source"}, sort_keys=True,
                      default=str)


def _dedupe(rows: list[dict[str, Any]], notes: Notes) -> list[dict[str, Any]]:
    """Within each run keep the last row of each job (:func:`~seqbench.results.identity.job_key`);
    report jobs stored with different rows. Runs are never merged."""
    latest: dict[tuple, dict[str, Any]] = {}
    versions: dict[tuple, set[str]] = {}
    for row in rows:
        key = (row.get("run"), *job_key(row))
        latest.pop(key, None)  # re-insert, so the kept row takes the newest position
        latest[key] = row
        versions.setdefault(key, set()).add(_canonical(row))
    rerun = sorted({str(latest[k].get("job_id")) for k, v in versions.items() if len(v) > 1})
    if rerun:
        shown = ", ".join(rerun[:5]) + (", ..." if len(rerun) > 5 else "")
        notes.add(f"{len(rerun)} job(s) stored more than once in one run (re-runs); kept the "
                  f"last row of each: {shown}")
    return list(latest.values())


_TYPES = {f.name: f.type for f in FIELDS}


def _bad_value(name: str, value: Any) -> tuple[Any, str]:
    """``(clean value, '')`` or ``(None, why it cannot be read)`` for one stored value."""
    kind = _TYPES.get(name)
    if name.startswith(PREFIXED[:2]):
        kind = "float"
    elif name.startswith(PREFIXED[2]):
        kind = "bool"
    if value is None or kind is None:
        return value, ""
    if isinstance(value, np.generic):  # numpy scalars (rows read back from Parquet)
        value = value.item()
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"not an integer ({type(value).__name__})"
        if isinstance(value, float):
            if value != value:  # NaN: missing
                return None, ""
            if not value.is_integer():
                return None, "not an integer"
        if not -INT64 <= value < INT64:
            return None, "outside the 64-bit integer range"
        return int(value), ""
    if kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, f"not a number ({type(value).__name__})"
        if isinstance(value, int) and not -2**1023 < value < 2**1023:
            return None, "too large for a float"
        number = float(value)
        if number != number:
            return None, ""
        if number in (math.inf, -math.inf):
            return None, "not finite"
        return number, ""
    if kind == "str":
        return (value, "") if isinstance(value, str) else (None, f"not a string "
                                                                 f"({type(value).__name__})")
    if kind == "bool":
        return (value, "") if isinstance(value, bool) else (None, "not true/false")
    if kind == "dict":
        return (value, "") if isinstance(value, dict) else (None, "not an object")
    if kind == "list":
        return (value, "") if isinstance(value, list) else (None, "not a list")
    return value, ""


def _clean(rows: list[dict[str, Any]], notes: Notes) -> list[dict[str, Any]]:
    """Rows whose every value has its declared type. A value that cannot be read is left empty;
    a row lacking a field it needs to be placed, or whose identity cannot be read, is skipped;
    each case becomes one note (with a count and up to three examples)."""
    kept: list[dict[str, Any]] = []
    problems: dict[str, list[str]] = {}

    def say(what: str, row: dict[str, Any]) -> None:
        problems.setdefault(what, []).append(str(row.get("job_id", "?"))[:40])

    for row in rows:
        missing = [f for f in _REQUIRED_TO_LOAD if f not in row]
        if missing:
            say(f"skipped: lacks field(s) {', '.join(missing)}", row)
            continue
        clean, skip = dict(row), ""
        for name, value in row.items():
            fixed, why = _bad_value(name, value)
            if not why:
                clean[name] = fixed
                continue
            shown = repr(value) if len(repr(value)) <= 24 else repr(value)[:21] + "..."
            if name in _IDENTITY:
                skip = f"skipped: {name}={shown} is {why}"
                break
            clean[name] = None
            say(f"{name} {why}: left empty", row)
        if skip:
            say(skip, row)
            continue
        kept.append(clean)
    for what, ids in problems.items():
        notes.add(f"{len(ids)} row(s): {what} (e.g. {', '.join(ids[:3])})")
    return kept


def _check_rows(rows: list[dict[str, Any]]) -> None:
    found = sorted({row["schema_version"] for row in rows}, key=str)
    if len(found) > 1:
        raise SpecError("schema_version", found, "rows of different schema versions are not "
                        "merged; load each version on its own")
    if found and found[0] != SCHEMA_VERSION:
        raise SpecError("schema_version", found[0], f"this seqbench reads version "
                        f"{SCHEMA_VERSION}; use the seqbench release that wrote these rows")


def _flatten(prefix: str, value: Any, out: dict[str, str]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flatten(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif prefix.rsplit(".", 1)[-1] not in SWEEP_KEYS:
        out[prefix] = json.dumps(value, sort_keys=True, default=str)


def _config_of(job: Any) -> dict[str, str]:
    """A job's parameters without the ones a sweep varies (seed, lengths): its configuration."""
    out: dict[str, str] = {}
    if isinstance(job, dict):
        _flatten("", job, out)
    return out


def _variant_labels(configs: list[dict[str, str]]) -> list[str]:
    """Short, distinct labels naming the parameters in which ``configs`` differ."""
    keys = sorted({k for c in configs for k in c if len({c.get(k) for c in configs}) > 1})
    short = {k: k.rsplit(".", 1)[-1] for k in keys}
    if len(set(short.values())) < len(keys):  # two params share a last name: use full paths
        short = {k: k for k in keys}
    labels = []
    for config in configs:
        parts = [f"{short[k]}={json.loads(config[k]) if k in config else '-'}" for k in keys]
        label = ", ".join(parts[:2]) + (", ..." if len(parts) > 2 else "")
        labels.append(label)
    if len(set(labels)) < len(labels) or not all(labels):
        labels = ["config " + hashlib.sha256(json.dumps(c, sort_keys=True).encode())
                  .hexdigest()[:6] for c in configs]
    return labels


def model_display(model: str) -> str:
    from seqbench.catalog import display_name

    return display_name(model)


def _backbones(df: pd.DataFrame) -> pd.Series:
    """Each row's backbone: the row field, else the job's model params (rows recorded before
    the field existed are ``shared``)."""
    jobs = df["job"] if "job" in df else pd.Series(None, index=df.index, dtype=object)
    recorded = df["backbone"] if "backbone" in df else pd.Series(None, index=df.index,
                                                                 dtype=object)

    def one(value: Any, job: Any) -> str:
        if isinstance(value, str):
            return value
        model = job.get("model") if isinstance(job, dict) else None
        params = model.get("params") if isinstance(model, dict) else None
        found = params.get("backbone") if isinstance(params, dict) else None
        return found if isinstance(found, str) else "shared"

    return pd.Series([one(v, j) for v, j in zip(recorded, jobs, strict=True)], index=df.index,
                     dtype=object)


def add_variants(df: pd.DataFrame, notes: Notes | None = None) -> pd.DataFrame:
    """Add ``variant`` and ``label`` columns, warning where configurations share a display key.
    A configuration found in several runs gets the run in its label: ``LSTM [run-b]``.

    Configurations are compared within (kind, task, model, backbone) after dropping the sweep
    keys, so a model swept over lengths is one variant, and the same model with another width
    is another; a ``backbone: bare`` model's variant starts with ``bare`` (``LSTM (bare)``).
    """
    notes = Notes() if notes is None else notes
    df = df.copy()
    df["variant"] = ""
    bare = _backbones(df) == "bare"  # a bare model's variant starts with "bare": LSTM (bare)
    for _, group in df.groupby(["kind", "task", "model", bare], sort=False):
        jobs = group["job"] if "job" in group else pd.Series(None, index=group.index)
        by_hash: dict[str, str] = {}  # one fingerprint per configuration, from its first row
        for config_hash, job in zip(group["config_hash"], jobs, strict=True):
            by_hash.setdefault(config_hash, json.dumps(_config_of(job), sort_keys=True))
        fp = group["config_hash"].map(by_hash)
        per_key = group.groupby([group["seq_len"], group["context_len"].fillna(-1), fp]
                                )["config_hash"].nunique()
        if per_key.max() > 1:  # the job dicts cannot tell these configurations apart
            df.loc[group.index, "variant"] = "config " + group["config_hash"].str[:8]
        elif fp.nunique() > 1:
            distinct = list(dict.fromkeys(fp))
            labels = _variant_labels([json.loads(d) for d in distinct])
            df.loc[group.index, "variant"] = fp.map(dict(zip(distinct, labels, strict=True)))
    df.loc[bare, "variant"] = ["bare" + (f", {v}" if v else "") for v in df.loc[bare, "variant"]]
    key = ["kind", "task", "model", "seq_len", "context_len"]
    shared = df.groupby([*key, bare], dropna=False, sort=False)["config_hash"].nunique()
    for (kind, task, model, seq_len, context_len, is_bare), _ in shared[shared > 1].items():
        rows = df[(df.kind == kind) & (df.task == task) & (df.model == model)
                  & (df.seq_len == seq_len) & (bare == is_bare)]
        variants = " | ".join(sorted(rows["variant"].unique()))
        where = f"kind={kind} task={task} model={model} seq_len={seq_len}"
        if not pd.isna(context_len):
            where += f" context_len={context_len}"
        notes.add(f"{where}: {rows['config_hash'].nunique()} configurations share this key; "
                     f"kept apart as variants {variants}")
    df["label"] = [model_display(m) + (f" ({v})" if v else "")
                   for m, v in zip(df["model"], df["variant"], strict=True)]
    if "run" in df.columns and df["run"].nunique() > 1:  # one configuration in several runs
        several = df.groupby(["kind", "task", "model", "variant"])["run"].transform("nunique") > 1
        df.loc[several, "label"] = df.loc[several, "label"] + " [" + df.loc[several, "run"] + "]"
    return df


def _typed(df: pd.DataFrame) -> pd.DataFrame:
    for f in FIELDS:
        if f.name not in df.columns:
            df[f.name] = pd.Series([None] * len(df), index=df.index, dtype=object)
        if f.type == "int":
            df[f.name] = pd.to_numeric(df[f.name], errors="coerce").astype("Int64")
        elif f.type == "float":
            df[f.name] = pd.to_numeric(df[f.name], errors="coerce").astype("float64")
        elif f.type == "str":
            df[f.name] = df[f.name].astype(object).where(df[f.name].notna(), "").astype(str)
    for col in df.columns:
        if col.startswith(("metric_", "baseline_")):
            df[col] = pd.to_numeric(df[col], errors="coerce").astype("float64")
        elif col.startswith("higher_is_better_"):
            df[col] = df[col].astype("boolean")
    df["run"] = df["run"].fillna("").astype(str) if "run" in df.columns else ""
    return df


def load(path_or_paths: str | Path | Sequence[str | Path], *, warn: bool = True) -> pd.DataFrame:
    """Stored rows as a tidy DataFrame (see the module docstring for what is reported).

    Rows keep their storage order; of a job stored twice in one run the later one is kept; the
    same job in several paths keeps a row per path (``run`` tells them apart). The schema's
    columns are always present (missing values are NaN / NA / ''), plus ``metric_<name>``,
    ``baseline_<name>``, ``higher_is_better_<name>`` per task metric and :data:`ADDED_COLUMNS`.
    ``df.attrs["notes"]`` lists what was reported while loading (as :class:`ResultsWarning`
    too, unless ``warn`` is False).
    """
    paths: Iterable[str | Path] = (
        [path_or_paths] if isinstance(path_or_paths, (str, Path)) else path_or_paths)
    notes = Notes(warn)
    rows: list[dict[str, Any]] = []
    path_list = [Path(p) for p in paths]
    for p, run in zip(path_list, run_names(path_list), strict=True):
        found = _read_path(p, notes)
        rows += [{**r, "run": r["run"] if p.suffix == ".parquet" and isinstance(
            r.get("run"), str) and r["run"] else run} for r in found]
    where = [str(p) for p in path_list] if not isinstance(path_or_paths, (str, Path)) else str(
        path_or_paths)
    if not rows:
        raise SpecError("results", where, "holds no rows")
    rows = _clean(rows, notes)
    if not rows:
        raise SpecError("results", where, "holds no readable rows: " + "; ".join(notes))
    _check_rows(rows)
    rows = _dedupe(rows, notes)
    df = _typed(pd.DataFrame(rows))
    df = add_variants(df, notes)
    df.attrs["notes"] = list(notes)
    return df.reset_index(drop=True)


def select(df: pd.DataFrame, filters: Sequence[str]) -> pd.DataFrame:
    """Rows matching every ``column=value`` (``value`` may list alternatives: ``a,b``)."""
    for text in filters:
        column, sep, value = text.partition("=")
        column = column.strip()
        if not sep or not column or not value:
            raise SpecError("filter", text, "write COLUMN=VALUE or COLUMN=V1,V2")
        if column not in df.columns:
            raise SpecError("filter", text, f"no column {column!r}; e.g. task, model, seq_len, "
                                            "kind, variant, status, device, seed")
        wanted = [v.strip() for v in value.split(",")]
        mask = df[column].astype(str).isin(wanted)
        if pd.api.types.is_numeric_dtype(df[column]):
            numbers = pd.to_numeric(pd.Series(wanted), errors="coerce").dropna()
            mask |= df[column].isin(numbers.tolist())
        if not mask.any():
            known = ", ".join(map(str, list(dict.fromkeys(df[column].dropna()))[:12]))
            raise SpecError("filter", text, f"matches no rows; {column} takes {known}")
        df = df[mask]
    return df


def describe() -> pd.DataFrame:
    """The documented columns: name, type, unit and description (the schema plus added ones)."""
    rows = [(f.name, f.type, f.unit, f.description) for f in FIELDS]
    rows += [("metric_<name>", "float", "", "task metric on held-out data"),
             ("baseline_<name>", "float", "", "the task's trivial baseline for that metric"),
             ("higher_is_better_<name>", "bool", "", "direction of that metric")]
    rows += [(k, "str", "", v) for k, v in ADDED_COLUMNS.items()]
    return pd.DataFrame(rows, columns=["column", "type", "unit", "description"])


def to_parquet(df: pd.DataFrame, path: str | Path) -> Path:
    """Write ``df`` as Parquet; :func:`load` reads it back (dict columns travel as JSON)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path)
    out = df.drop(columns=[c for c in ("variant", "label", "source") if c in df.columns])
    # dict and list columns (evals, curve, slices: lists of dicts, some of them empty, which
    # Parquet cannot store as structs) travel as JSON
    dict_columns = [c for c in out.columns
                    if out[c].map(lambda v: isinstance(v, (dict, list))).any()]
    for col in dict_columns:
        out[col] = [json.dumps(v, sort_keys=True) if isinstance(v, (dict, list)) else None
                    for v in out[col]]
    table = pa.Table.from_pandas(out, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta.update({f"{_JSON_COLUMN_PREFIX}{c}".encode(): b"1" for c in dict_columns})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(meta), path)
    return path


def suite_info(path: str | Path) -> dict[str, Any] | None:
    """The ``suite.json`` of a results directory (name, spec hash, spec), or None."""
    root = Path(path)
    if not (root / SUITE_FILE).exists():
        return None
    return read_suite_file(root)[0]


# --- tidy records of the training protocol ----------------------------------------------------
# One record per (job, evaluation setting), per (job, curve point), per (job, setting, slice)
# and per (job, probe point, distance), each with the job's identity, read through :func:`load`
# (so the same reader, reconciliation, de-duplication and variant labels apply).

IDENTITY_COLUMNS = ("job_id", "config_hash", "suite", "kind", "task", "model", "label",
                    "variant", "seed", "device", "dtype", "param_count", "d_model",
                    "primary_metric", "eval_split", "train_steps", "stop_reason", "source")


# what the tidy loaders read: paths, as for load, or a frame load returned
RowsSource: TypeAlias = str | Path | Sequence[str | Path] | pd.DataFrame


def _train_records(path_or_paths: RowsSource, warn: bool) -> list[dict[str, Any]]:
    df = path_or_paths if isinstance(path_or_paths, pd.DataFrame) else load(path_or_paths,
                                                                            warn=warn)
    return df[df["kind"] == "train"].to_dict("records")


def _identity(rec: dict[str, Any]) -> dict[str, Any]:
    """The job's identity columns, its status and its training lengths side by side."""
    lengths = rec.get("train_lengths")
    lengths = lengths if isinstance(lengths, dict) else {}
    return {**{k: rec.get(k) for k in IDENTITY_COLUMNS}, "job_status": rec.get("status"),
            "train_seq_len": rec.get("seq_len"), "train_input_len": rec.get("input_len"),
            "train_len_min": lengths.get("min", rec.get("seq_len")),
            "train_len_max": lengths.get("max", rec.get("seq_len"))}


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _frame(records: list[dict[str, Any]], first: Sequence[str]) -> pd.DataFrame:
    frame = pd.DataFrame(records)
    for col in frame.columns:
        if col.startswith(("metric_", "baseline_")):
            frame[col] = pd.to_numeric(frame[col], errors="coerce").astype("float64")
    front = [c for c in first if c in frame.columns]
    return frame[front + [c for c in frame.columns if c not in front]]


def _task_params(rec: dict[str, Any]) -> dict[str, Any]:
    job = rec.get("job")
    task = job.get("task") if isinstance(job, dict) else None
    params = task.get("params") if isinstance(task, dict) else None
    return dict(params) if isinstance(params, dict) else {}


def _settings(rec: dict[str, Any]) -> list[dict[str, Any]]:
    """The main evaluation and each evaluation setting of one row, as flat records."""
    prefixed = {k: v for k, v in rec.items()
                if k.startswith(("metric_", "baseline_")) and not _is_missing(v)}
    main = {"setting": "main", "eval_seq_len": rec.get("seq_len"),
            "eval_input_len": rec.get("input_len"), "eval_params": {},
            "status": rec.get("status"), "error": rec.get("error"), "eval_s": None,
            "slices": rec.get("slices") if isinstance(rec.get("slices"), dict) else {},
            **prefixed}
    out = [main]
    for entry in _listed(rec.get("evals")):
        if not isinstance(entry, dict):
            continue
        out.append({"setting": "eval", "eval_seq_len": entry.get("seq_len"),
                    "eval_input_len": entry.get("input_len"),
                    "eval_params": entry.get("params") or {},
                    **{k: v for k, v in entry.items()
                       if k not in ("seq_len", "input_len", "params")}})
    return out


EVAL_COLUMNS = ("setting", "train_seq_len", "eval_seq_len", "train_input_len", "eval_input_len",
                "train_len_min", "train_len_max", "eval_params", "status", "error")


def load_evals(path_or_paths: RowsSource, *,
               warn: bool = True) -> pd.DataFrame:
    """One record per (training job, evaluation setting): the main evaluation (``setting`` =
    ``main``, at the job's own length) and every entry of the row's ``evals`` (``eval``), with
    the training length and the evaluation length side by side (``train_seq_len``,
    ``eval_seq_len``, their input lengths, ``train_len_min``/``train_len_max`` for variable
    training lengths), ``eval_params`` (the overrides), one ``param_<name>`` column per task
    param with its value in effect (the job's params with the overrides applied), the
    setting's ``status``/``error`` (``job_status`` is the row's), ``metric_*``, ``baseline_*``
    and ``slices``, plus the job's identity columns (:data:`IDENTITY_COLUMNS`). A frame that
    :func:`load` returned is taken as it is."""
    records = []
    for rec in _train_records(path_or_paths, warn):
        base, params = _identity(rec), _task_params(rec)
        for setting in _settings(rec):
            effective = {**params, **(setting.get("eval_params") or {})}
            records.append({**base, **setting,
                            **{f"param_{k}": v for k, v in effective.items()}})
    return _frame(records, (*IDENTITY_COLUMNS, *EVAL_COLUMNS))


def load_slices(path_or_paths: str | Path | Sequence[str | Path], *,
                warn: bool = True) -> pd.DataFrame:
    """One record per (training job, evaluation setting, slice): ``slice`` (e.g.
    ``query_distance:8-15``), its ``dimension``, ``lo`` and ``hi`` (both included) and one
    ``metric_<name>`` column per metric, with the setting's columns of :func:`load_evals`."""
    records = []
    for rec in _train_records(path_or_paths, warn):
        base = _identity(rec)
        for setting in _settings(rec):
            keep = {k: setting.get(k) for k in ("setting", "eval_seq_len", "eval_input_len",
                                                "eval_params", "status")}
            slices = setting.get("slices")
            for name, metrics in (slices.items() if isinstance(slices, dict) else []):
                dimension, _, span = str(name).partition(":")
                lo, _, hi = span.partition("-")
                records.append({**base, **keep, "slice": name, "dimension": dimension,
                                "lo": pd.to_numeric(lo, errors="coerce"),
                                "hi": pd.to_numeric(hi, errors="coerce"),
                                **{f"metric_{m}": v for m, v in (metrics or {}).items()}})
    return _frame(records, (*IDENTITY_COLUMNS, "setting", "train_seq_len", "eval_seq_len",
                            "slice", "dimension", "lo", "hi"))


def load_curves(path_or_paths: str | Path | Sequence[str | Path], *,
                warn: bool = True) -> pd.DataFrame:
    """One record per (training job, learning-curve point): ``step``, ``train_time_s``,
    ``wall_s``, ``train_loss`` and the validation ``metric_*``, with the job's identity."""
    records = [{**_identity(rec), **point} for rec in _train_records(path_or_paths, warn)
               for point in _listed(rec.get("curve")) if isinstance(point, dict)]
    return _frame(records, (*IDENTITY_COLUMNS, "train_seq_len", "step", "train_time_s",
                            "wall_s", "train_loss"))


def load_grad_profiles(path_or_paths: RowsSource, *, warn: bool = True) -> pd.DataFrame:
    """One record per (training job, probe point, stored distance): ``step``, ``distance``,
    ``norm``, and the point's ``decay_per_step`` and ``horizon``, with the job's identity
    (``path_or_paths``: what :func:`load` reads, or a frame it returned)."""
    records = []
    for rec in _train_records(path_or_paths, warn):
        base = _identity(rec)
        for point in _listed(rec.get("grad_profile")):
            if not isinstance(point, dict):
                continue
            summary = {k: point.get(k) for k in ("step", "decay_per_step", "horizon",
                                                 "fraction", "examples")}
            for d, norm in zip(_listed(point.get("distances")), _listed(point.get("norms")),
                               strict=False):
                records.append({**base, **summary, "distance": d,
                                "norm": float("nan") if norm is None else norm})
    return _frame(records, (*IDENTITY_COLUMNS, "train_seq_len", "step", "distance", "norm",
                            "decay_per_step", "horizon"))
