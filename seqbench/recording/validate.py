"""Checks stored rows against the row schema (:mod:`seqbench.recording.schema`):
``seqbench validate``.

A results directory (its ``results.jsonl`` and ``jobs/*.json``), a ``.jsonl`` file or one job's
``.json`` file is checked for:

* readable rows: every JSONL line a JSON object (a truncated last line is reported), no file
  behind a symlink; in a directory, its ``suite.json`` marker present and naming the suite of
  every row, and the JSONL and the job files holding the same jobs with the same rows (a metric
  edited in one copy only is reported);
* the schema version, and every required field (identity and provenance) present, with a
  non-empty value where provenance cannot be empty (versions, host, device, start time);
* identity: ``job_id`` is ``config_hash[:16]-s<seed>``, and ``config_hash`` is the hash of the
  row's own ``job``, so an edited row or a mislabelled one is caught;
* no duplicate (config hash, seed) pair (per context position, for streaming rows);
* types from the schema, and units: a quantity in bytes, seconds, tokens/s or FLOP is a finite
  number >= 0 (or null: not measured);
* statuses: one of ``STATUSES``, an error text on every row that is not ``ok`` and none on ``ok``
  rows, and no ``ok`` row with a NaN (null) or infinite metric.

``strict`` also reports fields the schema does not declare (units live in field names, so an
undeclared field is a quantity nobody documented).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from seqbench.errors import SpecError
from seqbench.recording.reader import JOBS_DIR, JSONL, Problem, read_dir, read_rows
from seqbench.recording.schema import FIELDS, PREFIXED, REQUIRED, SCHEMA_VERSION, STATUSES

BY_NAME = {f.name: f for f in FIELDS}
NON_EMPTY = ("seqbench_version", "python_version", "torch_version", "device", "dtype", "host",
             "started_at", "suite", "task", "model")
TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float),
                                      "bool": (bool,), "list": (list,), "dict": (dict,)}
HEX64 = re.compile(r"^[0-9a-f]{64}$")
HEX40 = re.compile(r"^[0-9a-f]{40}$")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _type_ok(field_type: str, value: Any) -> bool:
    if value is None:  # NaN is stored as null; any field may be "not measured"
        return field_type in ("float", "int")
    if field_type in ("int", "float") and isinstance(value, bool):
        return False
    return isinstance(value, TYPES[field_type])


def check_row(row: Any, strict: bool = False) -> list[str]:
    """The problems of one row, as messages."""
    if not isinstance(row, dict):
        return [f"a JSON {type(row).__name__}, not a row object"]
    out: list[str] = []
    version = row.get("schema_version")
    if "schema_version" in row and version != SCHEMA_VERSION:
        out.append(f"schema_version {version!r}: this seqbench writes and reads {SCHEMA_VERSION}")
    missing = [name for name in REQUIRED if name not in row]
    if missing:
        out.append(f"missing required fields: {', '.join(missing)}")
    out += _check_identity(row)
    out += _check_types_and_units(row, strict)
    out += _check_status(row)
    return out


def _check_identity(row: dict[str, Any]) -> list[str]:
    from seqbench.config.job import config_hash_of

    out = []
    chash, seed, jid = row.get("config_hash"), row.get("seed"), row.get("job_id")
    if isinstance(chash, str) and not HEX64.match(chash):
        out.append(f"config_hash {chash!r} is not a sha256 hex digest")
    elif isinstance(chash, str) and isinstance(jid, str) and jid != f"{chash[:16]}-s{seed}":
        out.append(f"job_id {jid!r} does not match config_hash and seed "
                   f"(expected {chash[:16]}-s{seed})")
    if _is_number(seed) and not (isinstance(seed, int) and 0 <= seed < 2**63):
        out.append(f"seed {_short(seed)} is not an integer in [0, 2^63)")
    job = row.get("job")
    if isinstance(job, dict) and isinstance(chash, str):
        if config_hash_of(job) != chash:
            out.append("config_hash is not the hash of the row's job (the row was edited, or "
                       "written by a different hashing rule)")
        if "seed" in job and job["seed"] != seed:
            out.append(f"seed {seed!r} differs from the job's seed {job['seed']!r}")
    for name in NON_EMPTY:
        if name in row and row[name] in ("", None):
            out.append(f"{name} is empty (required provenance)")
    sha = row.get("git_sha")
    if isinstance(sha, str) and sha and not HEX40.match(sha):
        out.append(f"git_sha {sha!r} is neither '' nor a 40-digit commit")
    started = row.get("started_at")
    if isinstance(started, str) and started:
        try:
            dt.datetime.fromisoformat(started)
        except ValueError:
            out.append(f"started_at {started!r} is not an ISO-8601 time")
    return out


def _check_types_and_units(row: dict[str, Any], strict: bool) -> list[str]:
    out = []
    for name, value in row.items():
        field = BY_NAME.get(name)
        if field is None:
            if name.startswith("higher_is_better_"):
                if not isinstance(value, bool):
                    out.append(f"{name} = {value!r}: must be true or false")
            elif name.startswith(("metric_", "baseline_")):
                if value is not None and not _is_number(value):
                    out.append(f"{name} = {value!r}: must be a number")
            elif strict and not name.startswith(PREFIXED):
                out.append(f"unknown field {name!r} (not declared in seqbench.recording.schema, "
                           "so its "
                           "unit and meaning are undocumented)")
            continue
        if not _type_ok(field.type, value):
            out.append(f"{name} = {_short(value)}: must be a {field.type}")
            continue
        if field.unit:
            values = value if isinstance(value, list) else [value]
            bad = [v for v in values
                   if v is not None and (not _is_number(v) or not math.isfinite(v) or v < 0)]
            if bad:
                out.append(f"{name} = {_short(bad[0])}: a quantity in {field.unit} must be a "
                           "finite number >= 0")
    return out


def _check_status(row: dict[str, Any]) -> list[str]:
    out = []
    status, error = row.get("status"), row.get("error")
    if "status" in row and status not in STATUSES:
        return [f"status {status!r}: must be one of {', '.join(STATUSES)}"]
    if status not in (None, "ok") and not error:
        out.append(f"status {status!r} without an error text")
    if status == "ok":
        if error:
            out.append(f"status 'ok' with an error text: {_short(error)}")
        for name, value in row.items():
            if name.startswith("metric_") and not (_is_number(value) and math.isfinite(value)):
                out.append(f"ok row with a NaN or infinite {name} ({_short(value)})")
        primary = row.get("primary_metric")
        if primary and f"metric_{primary}" not in row:
            out.append(f"ok row without its primary metric metric_{primary}")
    return out


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_rows(rows: Iterable[tuple[str, Any]], strict: bool = False,
               duplicates: bool = True) -> list[Problem]:
    """Problems of ``(where, row)`` pairs, duplicates across them included."""
    problems: list[Problem] = []
    keys: dict[tuple, list[str]] = defaultdict(list)
    for where, row in rows:
        jid = str(row.get("job_id", "")) if isinstance(row, dict) else ""
        problems += [Problem(where, jid, message) for message in check_row(row, strict)]
        if isinstance(row, dict) and "config_hash" in row and "seed" in row:
            key = (row["config_hash"], row["seed"], row.get("context_len"))
            keys[key].append(where)
    for (chash, seed, context), wheres in keys.items():
        if duplicates and len(wheres) > 1:
            at = f" at context_len {context}" if context is not None else ""
            problems.append(Problem(wheres[0], f"{str(chash)[:16]}-s{seed}",
                                    f"duplicate (config_hash, seed){at}: {len(wheres)} rows "
                                    f"({', '.join(wheres)})"))
    return problems


def validate_path(path: str | Path, strict: bool = False) -> tuple[int, list[Problem]]:
    """(rows checked, problems) for a results directory, a .jsonl file or a job's .json file.

    In a directory both copies of every row are checked, each against the schema and against
    each other, together with the suite marker."""
    path = Path(path)
    if not path.exists():
        raise SpecError("RESULTS", str(path), "does not exist")
    if not path.is_dir():
        if path.suffix not in (".jsonl", ".json"):
            raise SpecError("RESULTS", str(path),
                            "must be a results directory, a .jsonl file or a job's .json file")
        rows, problems = read_rows(path)
        return len(rows), problems + check_rows([(str(path), r) for r in rows], strict)
    found = read_dir(path)
    if not found.has_jsonl and not found.has_jobs_dir:
        raise SpecError("RESULTS", str(path), f"a results directory holds {JSONL} or {JOBS_DIR}/;"
                        " this one holds neither")
    problems = list(found.problems)
    jsonl = str(found.jsonl)
    if found.suite_problem:
        problems.append(Problem(str(path / "suite.json"), "", found.suite_problem))
    if not found.has_jsonl:
        problems.append(Problem(jsonl, "", "missing (`seqbench run` into this directory "
                                "restores it from jobs/)"))
    if not found.has_jobs_dir:
        problems.append(Problem(str(path / JOBS_DIR), "", "missing: the per-job copies of the "
                                "rows are gone (`seqbench run` into this directory restores "
                                "them from results.jsonl)"))
    for jid in found.only_in_jobs() if found.has_jsonl else []:
        problems.append(Problem(jsonl, jid, "in jobs/ but not in results.jsonl "
                                "(`seqbench run` into this directory repairs it)"))
    for jid in found.only_in_jsonl() if found.has_jobs_dir else []:
        problems.append(Problem(jsonl, jid, "in results.jsonl but has no file in jobs/"))
    for jid in found.conflicts():
        other = found.jsonl_latest[jid]
        fields = sorted(k for k in set(other) | set(found.job_rows[jid][1])
                        if other.get(k) != found.job_rows[jid][1].get(k))
        problems.append(Problem(jsonl, jid, "differs from its job file in "
                                f"{', '.join(fields[:5])} (one copy was edited)"))
    suite = (found.suite or {}).get("suite")
    in_jobs: list[tuple[str, Any]] = [(str(p), row) for p, row in found.job_rows.values()]
    in_jsonl: list[tuple[str, Any]] = [(f"{jsonl}:{n}", row) for n, row in found.jsonl_rows]
    if suite is not None:
        for where, row in in_jobs + in_jsonl:
            if row.get("suite") != suite:
                problems.append(Problem(where, str(row.get("job_id", "")),
                                        f"row of suite {row.get('suite')!r} in a results "
                                        f"directory of suite {suite!r}"))
    # each copy against the schema; duplicates looked for within the JSONL
    problems += check_rows(in_jobs, strict, duplicates=False) + check_rows(in_jsonl, strict)
    return len(found.rows()), problems
