"""The hostile-input battery of issue 19: malformed specs, flags and results folders, damage
to a results folder, and signals to a running sweep, measured against any seqbench version
that has the ``seqbench`` command line (``seqbench.cli.main``).

    python -m seqbench.bench.hostile [--pythonpath DIR] [--json OUT] [--no-signals]

``--pythonpath`` runs the battery against the seqbench found there (an older checkout, say);
the default is the one this interpreter imports. Every command line case runs through
``seqbench.cli.main`` in one interpreter (per-case stderr captured at the descriptor, a
per-case alarm turns a hang into a result); the signal trials run the command in processes of
their own. What is counted:

* ``refuse`` cases (bad input): rejected cleanly means exit 2, one ``seqbench: error:`` line
  and not one file created, changed or deleted;
* ``ok`` cases (a damaged or odd results folder a run must cope with): survived means exit 0
  and the case's own check (no recorded row lost, the damage moved aside, never through a
  link);
* ``detect`` cases (damage ``seqbench validate`` must report): detected means exit 1;
* for every case: a traceback or a hang, and files changed outside the results folder;
* signal trials: Ctrl-C and SIGTERM at ``--workers 2`` with both jobs running (exit within
  10 s, both running jobs recorded as ``interrupted``, no process or temporary folder left,
  one line on stderr), and a driver killed with SIGKILL then rerun (no finished row rewritten,
  every job recorded, no temporary folder of the dead driver left).

The cases are plain data and file edits, so the same battery runs against every version;
``tests/test_hostile.py`` runs it against this one and asserts each outcome.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import itertools
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

TINY: dict[str, Any] = {
    "name": "tiny",
    "seeds": [0, 1],
    "device": "cpu",
    "models": [{"name": "gru", "params": {"d_model": 8}}],
    "tasks": [{"name": "adding", "seq_lens": [6]}],
    "train": {"steps": 4, "batch_size": 4, "eval_examples": 8, "eval_batch_size": 8},
    "measure": {"warmup_steps": 1, "fwd_min_repeats": 1, "fwd_max_repeats": 2,
                "fwd_budget_s": 0.02},
    "timeout_s": 120,
}
OTHER = {**TINY, "name": "other", "seeds": [2]}
LONG = {**TINY, "name": "long", "train": {**TINY["train"], "steps": 10**7}, "timeout_s": 40}
RUN = ["run", "spec.yaml", "-o", "out", "--no-report"]
VALIDATE = ["validate", "out"]
VICTIM = "victim\n"
CASE_TIMEOUT_S = 40
TMP_PREFIX = "seqbench-job-"


def edit(path: str, value: Any, base: dict[str, Any] = TINY) -> dict[str, Any]:
    """A deep copy of ``base`` with ``value`` at the dotted ``path`` (missing keys added)."""
    spec = copy.deepcopy(base)
    *parents, last = path.split(".")
    node: Any = spec
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    node[int(last) if last.isdigit() else last] = value
    return spec


def dump(spec: dict[str, Any]) -> str:
    return yaml.safe_dump(spec, sort_keys=False)


TINY_YAML = dump(TINY)


# --- what a case does to its folder ---------------------------------------------------------

Setup = Callable[[Path, Path], None]  # (case folder, workspace)
Post = Callable[[Path, Path], list[str]]  # (case folder, workspace) -> what went wrong


@dataclass
class Case:
    id: str
    point: str  # the item (1-10) or "extra"
    expect: str  # refuse | ok | detect
    argv: list[str]
    setup: list[Setup] = field(default_factory=list)
    post: list[Post] = field(default_factory=list)
    spec: str | bytes | None = TINY_YAML  # written to spec.yaml (None: none written)
    must_not_say: tuple[str, ...] = ()  # fragments a clean refusal must not hold
    says: str = ""  # a fragment the refusal must hold (what it is about), from SAYS
    slow: bool = False  # runs more than a second or two (a report)


def results(name: str = "pristine") -> Setup:
    """``out`` is a copy of a finished run's results folder."""
    def setup(case: Path, ws: Path) -> None:
        shutil.copytree(ws / name, case / "out", symlinks=True)
    return setup


def do(fn: Callable[[Path], Any]) -> Setup:
    """Apply ``fn`` to the case folder."""
    return lambda case, ws: fn(case)


def write(rel: str, data: str | bytes) -> Setup:
    def fn(case: Path) -> None:
        path = case / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data.encode() if isinstance(data, str) else data)
    return do(fn)


def remove(rel: str) -> Setup:
    def fn(case: Path) -> None:
        path = case / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    return do(fn)


def link(rel: str, target: str) -> Setup:
    """Replace ``rel`` with a symlink to ``target`` (relative to the link's folder)."""
    def fn(case: Path) -> None:
        path = case / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()
        path.symlink_to(target)
    return do(fn)


def move(rel: str, to: str) -> Setup:
    return do(lambda case: (case / rel).rename(case / to))


def fifo(rel: str) -> Setup:
    def fn(case: Path) -> None:
        path = case / rel
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif os.path.lexists(path):
            path.unlink()
        os.mkfifo(path)
    return do(fn)


def jsonl_rows(path: Path) -> list[dict[str, Any]]:
    out = []
    for line in path.read_bytes().split(b"\n"):
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            out.append(row)
    return out


def job_ids(ws: Path, name: str = "pristine") -> list[str]:
    return sorted(r["job_id"] for r in jsonl_rows(ws / name / "results.jsonl"))


def edit_row(where: str, index: int, change: dict[str, Any]) -> Setup:
    """Change fields of the ``index``-th row in one copy only: ``jsonl`` or ``job``."""
    def setup(case: Path, ws: Path) -> None:
        out = case / "out"
        jid = job_ids(ws)[index]
        if where == "job":
            path = out / "jobs" / f"{jid}.json"
            path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
            return
        lines = (out / "results.jsonl").read_text().splitlines()
        rows = [json.loads(line) for line in lines]
        rows = [{**r, **change} if r["job_id"] == jid else r for r in rows]
        (out / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return setup


def drop_job_file(index: int) -> Setup:
    return lambda case, ws: (case / "out" / "jobs" / f"{job_ids(ws)[index]}.json").unlink()


def append_line(data: bytes) -> Setup:
    def fn(case: Path) -> None:
        with open(case / "out" / "results.jsonl", "ab") as f:
            f.write(data)
    return do(fn)


def foreign_row(case: Path, ws: Path) -> None:
    """A genuine row of another suite, in both copies."""
    row = jsonl_rows(ws / "pristine-other" / "results.jsonl")[0]
    (case / "out" / "jobs" / f"{row['job_id']}.json").write_text(json.dumps(row))
    with open(case / "out" / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def absurd_seed_row(case: Path, ws: Path) -> None:
    """A row whose seed is 10^30, its job id and job made consistent with it."""
    row = jsonl_rows(ws / "pristine" / "results.jsonl")[0]
    seed = 10**30
    row = {**row, "seed": seed, "job_id": f"{row['config_hash'][:16]}-s{seed}"}
    if isinstance(row.get("job"), dict) and "seed" in row["job"]:
        row["job"] = {**row["job"], "seed": seed}
    (case / "out" / "jobs" / f"{row['job_id']}.json").write_text(json.dumps(row))
    with open(case / "out" / "results.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


# --- what a case must leave behind ----------------------------------------------------------

def rows_kept(case: Path, ws: Path) -> list[str]:
    """Every row of the original folder is still there, unchanged, in both copies."""
    out = case / "out"
    problems = []
    original = {r["job_id"]: r for r in jsonl_rows(ws / "pristine" / "results.jsonl")}
    in_jsonl = {r.get("job_id"): r for r in jsonl_rows(out / "results.jsonl")} \
        if (out / "results.jsonl").is_file() else {}
    for jid, row in original.items():
        path = out / "jobs" / f"{jid}.json"
        try:
            on_file = json.loads(path.read_text())
        except (OSError, ValueError):
            on_file = None
        if on_file != row:
            problems.append(f"job file of {jid} lost or rewritten")
        if in_jsonl.get(jid) != row:
            problems.append(f"results.jsonl row of {jid} lost or rewritten")
    return problems


def unchanged(rel: str, content: bytes) -> Post:
    def post(case: Path, ws: Path) -> list[str]:
        path = case / rel
        try:
            now = path.read_bytes()
        except OSError:
            return [f"{rel} is gone"]
        return [] if now == content else [f"{rel} was changed"]
    return post


def kept_aside(fragment: bytes) -> Post:
    """The damaged bytes are kept somewhere in the folder, not dropped."""
    def post(case: Path, ws: Path) -> list[str]:
        for path in (case / "out").rglob("*"):
            if path.is_file() and not path.is_symlink() and fragment in path.read_bytes():
                return []
        return [f"the damaged bytes {fragment[:20]!r} were dropped"]
    return post


# --- the cases --------------------------------------------------------------------------------

def bomb(levels: int) -> str:
    """A "billion laughs" in YAML flow style: ``levels`` levels of nine aliases each (nine
    levels: 387 million strings from 324 bytes)."""
    names = "abcdefghijklmnop"[:levels]
    return ('[&a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'
            + "".join(f", &{b} [" + ",".join([f"*{a}"] * 9) + "]"
                      for a, b in itertools.pairwise(names)) + "]")


MAMBA = edit("models", [{"name": "mamba", "params": {"d_model": 8}}])


def _bomb_at(key_path: str, levels: int = 9, base: dict[str, Any] = TINY) -> str:
    """``base`` as YAML with an alias bomb as the value at ``key_path``."""
    return dump(edit(key_path, "__BOMB__", base)).replace("__BOMB__", bomb(levels))


def spec_case(case_id: str, point: str, spec: str | bytes, argv: list[str] | None = None,
              must_not_say: tuple[str, ...] = ()) -> Case:
    return Case(case_id, point, "refuse", argv or RUN, spec=spec, must_not_say=must_not_say)


def bad_value(case_id: str, point: str, path: str, value: Any,
              must_not_say: tuple[str, ...] = ()) -> Case:
    return spec_case(case_id, point, dump(edit(path, value)), must_not_say=must_not_say)


def yaml_with(line_from: str, line_to: str) -> str:
    """TINY's YAML with one line replaced textually (for YAML-only notation)."""
    assert line_from in TINY_YAML, line_from
    return TINY_YAML.replace(line_from, line_to, 1)


NESTED = "name: tiny\nx: " + "[" * 5000 + "]" * 5000 + "\n"


def cases() -> list[Case]:
    p = "pristine"
    jsonl, lock = "out/results.jsonl", "out/.lock"
    out: list[Case] = []
    add = out.append
    # 1. data loss
    add(Case("jobs-dir-removed-then-run", "1", "ok", RUN, [results(p), remove("out/jobs")],
             [rows_kept]))
    add(Case("row-only-in-jsonl-then-run", "1", "ok", RUN, [results(p), drop_job_file(1)],
             [rows_kept]))
    add(Case("jobs-dir-removed-validate", "1", "detect", VALIDATE,
             [results(p), remove("out/jobs")]))
    add(Case("row-only-in-jsonl-validate", "1", "detect", VALIDATE,
             [results(p), drop_job_file(1)]))
    # 2. symlinks
    victim = [write("victim.txt", VICTIM)]
    keep_victim = [unchanged("victim.txt", VICTIM.encode())]
    add(Case("lock-links-to-victim", "2", "refuse", RUN,
             [results(p), *victim, link(lock, "../victim.txt")], keep_victim))
    add(Case("lock-dangling-link", "2", "refuse", RUN,
             [results(p), link(lock, "../created-by-seqbench.txt")]))
    add(Case("jsonl-links-outside", "2", "refuse", RUN,
             [results(p), drop_job_file(1), move(jsonl, "outside.jsonl"),
              link(jsonl, "../outside.jsonl")]))
    add(Case("jobs-dir-links-outside", "2", "refuse", RUN,
             [results(p), drop_job_file(1), move("out/jobs", "outside-jobs"),
              link("out/jobs", "../outside-jobs")]))
    add(Case("suite-json-links-outside", "2", "refuse", RUN,
             [results(p), move("out/suite.json", "outside-suite.json"),
              link("out/suite.json", "../outside-suite.json")]))
    add(Case("job-file-links-to-victim", "2", "refuse", RUN,
             [results(p), *victim, lambda c, w: link(
                 f"out/jobs/{job_ids(w)[0]}.json", "../../victim.txt")(c, w)], keep_victim))
    add(Case("job-file-links-to-etc-passwd", "2", "refuse", RUN,
             [results(p), lambda c, w: link(f"out/jobs/{job_ids(w)[0]}.json",
                                            "/etc/passwd")(c, w)]))
    add(Case("damaged-side-file-links-to-victim", "2", "refuse", RUN,
             [results(p), *victim, append_line(b'{"schema_version": 1, "job_i'),
              link("out/results.jsonl.damaged", "../victim.txt")], keep_victim))
    add(Case("stale-tmp-name-links-to-victim", "2", "ok", RUN,
             [results(p), *victim, link("out/jobs/.x.json.abc123.tmp", "../../victim.txt")],
             [*keep_victim, rows_kept]))
    add(Case("job-file-link-validate", "2", "detect", VALIDATE,
             [results(p), *victim, lambda c, w: link(
                 f"out/jobs/{job_ids(w)[0]}.json", "../../victim.txt")(c, w)]))
    # 3. folders that are not this suite's
    foreign = [write("out/jobs/data.tmp", "mine\n"), write("out/jobs/.cache.x.tmp", "mine\n"),
               write("out/jobs/notes.json", '{"mine": 1}'), write("out/readme.txt", "mine\n")]
    add(Case("foreign-folder-with-jobs-subfolder", "3", "refuse", RUN, foreign))
    add(Case("foreign-folder-tmp-files-only", "3", "refuse", RUN,
             [write("out/.data.csv.abc.tmp", "mine\n")]))
    add(spec_case("spec-name-dotdot", "3", dump(edit("name", "..")), ["run", "spec.yaml",
                                                                     "--no-report"]))
    add(spec_case("spec-name-dot", "3", dump(edit("name", ".")), ["run", "spec.yaml",
                                                                 "--no-report"]))
    add(spec_case("spec-name-slash", "3", dump(edit("name", "a/../../x")),
                  ["run", "spec.yaml", "--no-report"]))
    add(spec_case("set-name-dotdot", "3", TINY_YAML, ["run", "spec.yaml", "--no-report",
                                                      "--set", "name=.."]))
    add(Case("out-is-a-job-file-of-another-folder", "3", "refuse",
             ["run", "spec.yaml", "-o", "other/jobs/x.json", "--no-report"],
             [results("pristine-other"), move("out", "other"),
              write("other/jobs/x.json", "{}")]))
    add(Case("out-is-jobs-of-another-folder", "3", "refuse",
             ["run", "spec.yaml", "-o", "other/jobs", "--no-report"],
             [results("pristine-other"), move("out", "other")]))
    add(Case("out-inside-another-results-folder", "3", "refuse",
             ["run", "spec.yaml", "-o", "other/jobs/new", "--no-report"],
             [results("pristine-other"), move("out", "other")]))
    add(Case("out-of-another-suite", "3", "refuse", RUN, [results("pristine-other")]))
    add(Case("suite-json-garbage", "3", "refuse", RUN,
             [results(p), write("out/suite.json", "{garbage")]))
    add(Case("suite-json-a-list", "3", "refuse", RUN,
             [results(p), write("out/suite.json", "[1, 2]")]))
    add(Case("suite-json-a-directory", "3", "refuse", RUN,
             [results(p), remove("out/suite.json"), do(lambda c: (c / "out/suite.json").mkdir())]))
    add(Case("suite-json-huge", "3", "refuse", RUN,
             [results(p), write("out/suite.json", b'{"suite": "tiny", "x": "'
                                + b"x" * (70 << 20) + b'"}')]))
    # 5. size
    add(spec_case("alias-bomb-in-conv-bias", "5",
                  _bomb_at("models.0.params.conv_bias", 6, MAMBA)))
    add(spec_case("alias-bomb-9-levels-in-conv-bias", "5",
                  _bomb_at("models.0.params.conv_bias", 9, MAMBA)))
    add(spec_case("alias-bomb-in-description", "5", _bomb_at("description")))
    add(spec_case("alias-bomb-in-task-params", "5", _bomb_at("tasks.0.params.x")))
    add(spec_case("aliases-of-a-long-string", "5",
                  "s: &s " + "x" * 10000 + "\n" + dump(TINY) + "description: ["
                  + ", ".join(["*s"] * 20000) + "]\n"))
    add(spec_case("recursive-alias", "5", TINY_YAML + "description: &d [*d]\n"))
    add(spec_case("set-value-alias-bomb", "5", TINY_YAML,
                  [*RUN, "--set", f"description={bomb(9)}"]))
    add(spec_case("set-value-of-2-mb", "5", TINY_YAML, [*RUN, "--set",
                                                        "description=" + "x" * (2 << 20)]))
    add(spec_case("spec-of-100-mb-one-line", "5", b"name: " + b"x" * (100 << 20)))
    # 7. poisoned results
    add(Case("absurd-seed-row-then-run", "7", "ok", RUN, [results(p), absurd_seed_row],
             [rows_kept]))
    add(Case("absurd-seed-row-validate", "7", "detect", VALIDATE,
             [results(p), absurd_seed_row]))
    junk = b"\xff\xfe not json \x80\n"
    add(Case("non-utf8-job-file-then-run-with-report", "7", "ok",
             ["run", "spec.yaml", "-o", "out"], [results(p), write("out/jobs/junk.json", junk)],
             [rows_kept, unchanged("out/jobs/junk.json", junk)], slow=True))
    add(Case("non-utf8-job-file-validate", "7", "detect", VALIDATE,
             [results(p), write("out/jobs/junk.json", junk)]))
    # 8. tracebacks and hangs
    add(bad_value("forecast-series-a-list", "8", "tasks",
                  [{"name": "forecast", "seq_lens": [16], "params": {"series": [1]}}]))
    add(bad_value("ucr-val-fraction-a-string", "8", "tasks",
                  [{"name": "ucr", "seq_lens": [150], "params": {"val_fraction": "0.5"}}]))
    add(bad_value("ucr-dataset-a-list", "8", "tasks",
                  [{"name": "ucr", "seq_lens": [150], "params": {"dataset": ["GunPoint"]}}]))
    add(spec_case("nested-5000-brackets", "8", NESTED))
    add(spec_case("nested-5000-mappings", "8",
                  "name: tiny\nx: " + "{a: " * 5000 + "1" + "}" * 5000 + "\n"))
    add(Case("spec-is-a-fifo", "8", "refuse", RUN, [fifo("spec.yaml")], spec=None))
    add(spec_case("spec-is-dev-zero", "8", TINY_YAML, ["run", "/dev/zero", "-o", "out",
                                                       "--no-report"]))
    add(Case("spec-is-a-directory", "8", "refuse", RUN,
             [do(lambda c: (c / "spec.yaml").mkdir())], spec=None))
    add(Case("spec-links-to-a-fifo", "8", "refuse", RUN,
             [fifo("real.fifo"), link("spec.yaml", "real.fifo")], spec=None))
    add(Case("jsonl-is-a-directory", "8", "refuse", RUN,
             [results(p), remove(jsonl), do(lambda c: (c / jsonl).mkdir())]))
    add(Case("jobs-is-a-file", "8", "refuse", RUN,
             [results(p), remove("out/jobs"), write("out/jobs", "a file\n")]))
    add(Case("non-utf8-line-in-jsonl-then-run", "8", "ok", RUN,
             [results(p), append_line(b"\xff\xfe\x80 garbage\n")],
             [rows_kept, kept_aside(b"\xff\xfe\x80 garbage")]))
    add(Case("non-utf8-line-in-jsonl-validate", "8", "detect", VALIDATE,
             [results(p), append_line(b"\xff\xfe\x80 garbage\n")]))
    # 9. silently coerced or recorded as rows
    add(bad_value("param-budget-10", "9", "models.0.params", {"param_budget": 10}))
    add(bad_value("d-model-8.0", "9", "models.0.params.d_model", 8.0))
    add(bad_value("d-model-true", "9", "models.0.params.d_model", True))
    add(bad_value("n-layers-2.5", "9", "models.0.params.n_layers", 2.5))
    add(spec_case("mlp-ratio-nan", "9", yaml_with("d_model: 8", "d_model: 8\n    mlp_ratio: .nan")))
    add(bad_value("d-state-1.5", "9", "models", [{"name": "s4d",
                                                  "params": {"d_model": 8, "d_state": 1.5}}]))
    add(bad_value("betas-0.9-2.0", "9", "train.betas", [0.9, 2.0]))
    add(bad_value("seq-lens-1-for-adding", "9", "tasks.0.seq_lens", [1]))
    add(bad_value("n-heads-true", "9", "models", [{"name": "transformer",
                                                   "params": {"d_model": 8, "n_heads": True}}]))
    add(bad_value("lr-true", "9", "train.lr", True))
    add(spec_case("lr-a-string", "9", yaml_with("steps: 4", 'steps: 4\n  lr: "3e-3"')))
    add(spec_case("timeout-a-string", "9", yaml_with("timeout_s: 120", 'timeout_s: "20"')))
    add(bad_value("conv-bias-no", "9", "models", [{"name": "mamba",
                                                   "params": {"d_model": 8, "conv_bias": "no"}}]))
    add(spec_case("duplicate-key", "9", TINY_YAML + "timeout_s: 60\n"))
    add(spec_case("duplicate-models", "9",
                  TINY_YAML + "models:\n- name: lstm\n  params:\n    d_model: 8\n"))
    add(bad_value("warmup-steps-above-steps", "9", "train.warmup_steps", 10))
    add(spec_case("d-model-nan-message", "9", yaml_with("d_model: 8", "d_model: .nan"),
                  must_not_say=("multiple of",)))
    add(spec_case("yaml-1.2-float-message", "9", yaml_with("steps: 4", "steps: 1.0e6"),
                  must_not_say=("'1.0e6'",)))
    # 10. damage validate must report
    add(Case("clean-folder-validates", "10", "ok", VALIDATE, [results(p)]))
    add(Case("metric-edited-in-jsonl-only", "10", "detect", VALIDATE,
             [results(p), edit_row("jsonl", 0, {"metric_mse": 0.001})]))
    add(Case("metric-edited-in-job-file-only", "10", "detect", VALIDATE,
             [results(p), edit_row("job", 0, {"metric_mse": 0.001})]))
    add(Case("bogus-status-in-job-file", "10", "detect", VALIDATE,
             [results(p), edit_row("job", 0, {"status": "finished"})]))
    add(Case("null-metric-in-job-file", "10", "detect", VALIDATE,
             [results(p), edit_row("job", 0, {"metric_mse": None})]))
    add(Case("row-of-another-suite", "10", "detect", VALIDATE, [results(p), foreign_row]))
    add(Case("suite-json-deleted", "10", "detect", VALIDATE,
             [results(p), remove("out/suite.json")]))
    add(Case("suite-json-garbage-validate", "10", "detect", VALIDATE,
             [results(p), write("out/suite.json", "{garbage")]))
    add(Case("suite-json-names-another-suite", "10", "detect", VALIDATE,
             [results(p), write("out/suite.json", '{"format": "seqbench-results/1", '
                                '"suite": "other"}')]))
    add(Case("jsonl-deleted", "10", "detect", VALIDATE, [results(p), remove(jsonl)]))
    add(Case("duplicate-jsonl-line", "10", "detect", VALIDATE,
             [results(p), lambda c, w: append_line(
                 (c / jsonl).read_bytes().split(b"\n")[0] + b"\n")(c, w)]))
    add(Case("job-file-holds-another-job", "10", "detect", VALIDATE,
             [results(p), lambda c, w: write("out/jobs/0123456789abcdef-s0.json", (
                 c / "out" / "jobs" / f"{job_ids(w)[0]}.json").read_bytes())(c, w)]))
    # extra: what a careful reviewer tries next
    add(Case("jsonl-is-a-fifo", "extra", "refuse", RUN, [results(p), fifo(jsonl)]))
    add(Case("jsonl-is-a-fifo-validate", "extra", "detect", VALIDATE, [results(p), fifo(jsonl)]))
    add(Case("lock-is-a-fifo", "extra", "refuse", RUN, [results(p), fifo(lock)]))
    add(Case("lock-is-a-directory", "extra", "refuse", RUN,
             [results(p), remove(lock), do(lambda c: (c / lock).mkdir())]))
    add(Case("job-file-is-a-directory", "extra", "refuse", RUN,
             [results(p), lambda c, w: remove(f"out/jobs/{job_ids(w)[0]}.json")(c, w),
              lambda c, w: (c / "out" / "jobs" / f"{job_ids(w)[0]}.json").mkdir()]))
    add(Case("job-file-is-a-fifo", "extra", "refuse", RUN,
             [results(p), lambda c, w: fifo(f"out/jobs/{job_ids(w)[0]}.json")(c, w)]))
    deep = b"[" * 200_000 + b"]" * 200_000 + b"\n"
    add(Case("deep-json-line-then-run", "extra", "ok", RUN,
             [results(p), append_line(deep)], [rows_kept, kept_aside(b"[" * 1000)]))
    add(Case("deep-json-line-validate", "extra", "detect", VALIDATE,
             [results(p), append_line(deep)]))
    big = b'{"job_id": "x", "pad": "' + b"x" * (100 << 20) + b'"}'
    add(Case("job-file-of-100-mb-validate", "extra", "detect", VALIDATE,
             [results(p), lambda c, w: write(f"out/jobs/{job_ids(w)[0]}.json", big)(c, w)]))
    add(Case("truncated-jsonl-line-then-run", "extra", "ok", RUN,
             [results(p), append_line(b'{"schema_version": 1, "job_id": "cut-sh')],
             [rows_kept, kept_aside(b'"job_id": "cut-sh')]))
    add(Case("out-is-dev-null", "extra", "refuse", ["run", "spec.yaml", "-o", "/dev/null",
                                                    "--no-report"]))
    add(Case("out-below-a-file", "extra", "refuse",
             ["run", "spec.yaml", "-o", "afile/sub", "--no-report"], [write("afile", "x\n")]))
    add(spec_case("seeds-flag-10-30", "extra", TINY_YAML, [*RUN, "--seeds", str(10**30)]))
    add(spec_case("set-lr-inf", "extra", TINY_YAML, [*RUN, "--set", "train.lr=.inf"]))
    add(spec_case("set-duplicate-key", "extra", TINY_YAML,
                  [*RUN, "--set", "train={steps: 1, steps: 2}"]))
    add(spec_case("set-deep-nesting", "extra", TINY_YAML,
                  [*RUN, "--set", "description=" + "[" * 5000 + "]" * 5000]))
    add(spec_case("key-with-a-newline", "extra", TINY_YAML + '"a\\nb": 1\n'))
    add(spec_case("model-name-with-bidi-control", "extra",
                  dump(edit("models.0.name", "gru\u202e"))))
    add(spec_case("spec-a-binary-file", "extra", bytes(range(256)) * 64))
    add(spec_case("seed-10-30-in-spec", "extra", dump(edit("seeds", [10**30]))))
    for case in out:
        case.says = SAYS.get(case.id, "")
    return out


# what each refusal must be about (the field or the file it names)
SAYS = {
    "lock-links-to-victim": ".lock", "lock-dangling-link": ".lock",
    "jsonl-links-outside": "results.jsonl", "jobs-dir-links-outside": "jobs",
    "suite-json-links-outside": "suite.json", "job-file-links-to-victim": ".json",
    "job-file-links-to-etc-passwd": ".json", "damaged-side-file-links-to-victim": ".damaged",
    "foreign-folder-with-jobs-subfolder": "not a seqbench",
    "foreign-folder-tmp-files-only": "not a seqbench", "spec-name-dotdot": "name",
    "spec-name-dot": "name", "spec-name-slash": "name", "set-name-dotdot": "name",
    "out-is-a-job-file-of-another-folder": "--out", "out-is-jobs-of-another-folder": "--out",
    "out-inside-another-results-folder": "--out", "out-of-another-suite": "other",
    "suite-json-garbage": "suite.json", "suite-json-a-list": "suite.json",
    "suite-json-a-directory": "suite.json", "suite-json-huge": "suite.json",
    "alias-bomb-in-conv-bias": "alias", "alias-bomb-9-levels-in-conv-bias": "alias",
    "alias-bomb-in-description": "alias", "alias-bomb-in-task-params": "alias",
    "aliases-of-a-long-string": "alias", "recursive-alias": "alias",
    "set-value-alias-bomb": "--set", "set-value-of-2-mb": "--set",
    "spec-of-100-mb-one-line": "bytes", "forecast-series-a-list": "series",
    "ucr-val-fraction-a-string": "val_fraction", "ucr-dataset-a-list": "dataset",
    "nested-5000-brackets": "deep", "nested-5000-mappings": "deep",
    "spec-is-a-fifo": "regular file", "spec-is-dev-zero": "regular file",
    "spec-is-a-directory": "regular file", "spec-links-to-a-fifo": "regular file",
    "jsonl-is-a-directory": "results.jsonl", "jobs-is-a-file": "jobs",
    "param-budget-10": "param_budget", "d-model-8.0": "d_model", "d-model-true": "d_model",
    "n-layers-2.5": "n_layers", "mlp-ratio-nan": "mlp_ratio", "d-state-1.5": "d_state",
    "betas-0.9-2.0": "betas", "seq-lens-1-for-adding": "seq_len", "n-heads-true": "n_heads",
    "lr-true": "lr", "lr-a-string": "lr", "timeout-a-string": "timeout_s",
    "conv-bias-no": "conv_bias", "duplicate-key": "duplicate key",
    "duplicate-models": "duplicate key", "warmup-steps-above-steps": "warmup_steps",
    "d-model-nan-message": "d_model", "yaml-1.2-float-message": "steps",
    "jsonl-is-a-fifo": "results.jsonl", "lock-is-a-fifo": ".lock",
    "lock-is-a-directory": ".lock", "job-file-is-a-directory": ".json",
    "job-file-is-a-fifo": ".json", "out-is-dev-null": "--out", "out-below-a-file": "--out",
    "seeds-flag-10-30": "seed", "set-lr-inf": "lr", "set-duplicate-key": "duplicate key",
    "set-deep-nesting": "deep", "key-with-a-newline": "a\\nb",
    "model-name-with-bidi-control": "models[0].name", "spec-a-binary-file": "spec",
    "seed-10-30-in-spec": "seed",
}


# --- running the cases in one interpreter -----------------------------------------------------

RUNNER = r"""
import json, os, resource, signal, sys, tempfile, time
from pathlib import Path

soft = int(sys.argv[3])
resource.setrlimit(resource.RLIMIT_DATA, (soft, resource.RLIM_INFINITY))
from seqbench.cli import main

class Hang(BaseException):
    pass

def alarm(signum, frame):
    raise Hang()

signal.signal(signal.SIGALRM, alarm)
cases, out, timeout = json.loads(Path(sys.argv[1]).read_text()), sys.argv[2], int(sys.argv[4])
results = []
for case in cases:
    os.chdir(case["cwd"])
    err = tempfile.TemporaryFile()
    sys.stdout.flush(); sys.stderr.flush()
    saved = os.dup(2), os.dup(1)
    os.dup2(err.fileno(), 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    started = time.monotonic()
    signal.alarm(timeout)
    try:
        try:
            code = main(case["argv"])
        except SystemExit as exc:
            code = exc.code
        except Hang:
            code = "hang"
        except BaseException as exc:
            import traceback
            traceback.print_exc()
            code = f"raised {type(exc).__name__}"
    except Hang:
        code = "hang"
    finally:
        signal.alarm(0)
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(saved[0], 2); os.dup2(saved[1], 1)
    err.seek(0)
    results.append({"code": code, "stderr": err.read(20000).decode(errors="replace"),
                    "seconds": round(time.monotonic() - started, 2)})
    Path(out).write_text(json.dumps(results))
"""


def env_for(pythonpath: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([pythonpath, env.get("PYTHONPATH", "")]).rstrip(
            os.pathsep)
    return env


def run_cli(argv: list[str], cwd: Path, pythonpath: str | None, timeout: float = 600
            ) -> subprocess.CompletedProcess[str]:
    code = "import sys\nfrom seqbench.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", code, *argv], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, env=env_for(pythonpath))


def snapshot(root: Path) -> dict[str, str]:
    """Every path below ``root`` (links not followed, FIFOs never opened) and its content."""
    out: dict[str, str] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                out[str(path.relative_to(root))] = "link:" + os.readlink(path)
            elif stat.S_ISREG(info.st_mode):
                digest = hashlib.sha256()
                with open(path, "rb") as f:
                    while chunk := f.read(1 << 20):
                        digest.update(chunk)
                out[str(path.relative_to(root))] = digest.hexdigest()
            else:
                out[str(path.relative_to(root))] = "dir" if stat.S_ISDIR(info.st_mode) \
                    else f"special:{stat.S_IFMT(info.st_mode)}"
    return out


def job_folders(workers: list[Any]) -> set[str]:
    """The temporary job folders the given worker processes have files open in (other
    processes on the machine make folders of the same names, so they are not counted)."""
    import psutil

    root = Path(tempfile.gettempdir())
    out = set()
    for proc in workers:
        try:
            files = proc.open_files()
        except psutil.Error:
            continue
        for f in files:
            path = Path(f.path)
            for parent in path.parents:
                if parent.parent == root and parent.name.startswith(TMP_PREFIX):
                    out.add(str(parent))
    return out


def prepare(ws: Path, pythonpath: str | None) -> None:
    """Two finished runs made by the version under test: tiny (2 rows) and other (1 row)."""
    for name, spec in (("pristine", TINY), ("pristine-other", OTHER)):
        folder = ws / f"make-{name}"
        folder.mkdir(parents=True)
        (folder / "spec.yaml").write_text(dump(spec))
        proc = run_cli(["run", "spec.yaml", "-o", str(ws / name), "--no-report"], folder,
                       pythonpath)
        if proc.returncode != 0:
            raise RuntimeError(f"could not make {name}: {proc.stderr[-2000:]}")


def one_line_error(stderr: str) -> bool:
    lines = stderr.splitlines()
    return len(lines) == 1 and lines[0].startswith("seqbench: error: ")


def judge(case: Case, result: dict[str, Any], before: dict[str, str], after: dict[str, str],
          case_dir: Path, ws: Path) -> dict[str, Any]:
    code, stderr = result["code"], result["stderr"]
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    outside = [k for k in changed if not (k == "out" or k.startswith("out/"))]
    verdict: dict[str, Any] = {
        "id": case.id, "point": case.point, "expect": case.expect, "code": code,
        "seconds": result["seconds"], "stderr": stderr.strip().splitlines()[-3:],
        "traceback": "Traceback" in stderr or str(code).startswith("raised"),
        "hang": code == "hang", "changed": changed[:8], "changed_outside": outside[:8],
    }
    problems: list[str] = []
    if case.expect == "refuse":
        if code != 2 or not one_line_error(stderr):
            problems.append("not a clean one-line refusal with exit 2")
        if changed:
            problems.append("files were written before or despite the refusal")
        problems += [f"message says {s!r}" for s in case.must_not_say if s in stderr]
        if case.says and case.says not in stderr:
            problems.append(f"the refusal is not about {case.says!r}")
    elif case.expect == "ok":
        if code != 0:
            problems.append(f"exit {code}, not 0")
    elif code != 1:
        problems.append(f"exit {code}: the damage was not reported")
    if code not in ("hang",):
        for post in case.post:
            try:
                problems += post(case_dir, ws)
            except Exception as exc:  # a check that cannot even read the folder
                problems.append(f"check failed: {type(exc).__name__}: {exc}")
    if outside:
        problems.append("files changed outside the results folder")
    verdict["problems"] = problems
    verdict["passed"] = not problems
    return verdict


def run_cases(ws: Path, pythonpath: str | None, only: list[str] | None = None,
              slow: bool = True) -> list[dict[str, Any]]:
    """The cases (``only`` these ids; the slow ones unless ``slow`` is false), through
    ``seqbench.cli.main`` in one interpreter; one verdict per case, in order. ``ws`` must hold
    the two results folders :func:`prepare` makes."""
    chosen = [c for c in cases() if (only is None or c.id in only) and (slow or not c.slow)]
    payload, dirs, befores = [], [], []
    for case in chosen:
        case_dir = ws / "cases" / case.id
        case_dir.mkdir(parents=True)
        if case.spec is not None:
            path = case_dir / "spec.yaml"
            path.write_bytes(case.spec if isinstance(case.spec, bytes) else case.spec.encode())
        for step in case.setup:
            step(case_dir, ws)
        dirs.append(case_dir)
        befores.append(snapshot(case_dir))
        payload.append({"argv": case.argv, "cwd": str(case_dir)})
    done = run_payload(ws, payload, pythonpath)
    return [judge(case, done[i], befores[i], snapshot(dirs[i]), dirs[i], ws)
            for i, case in enumerate(chosen)]


def _outcomes(path: Path) -> list[dict[str, Any]]:
    """What the runner has recorded so far (a file it rewrites after each case)."""
    try:
        return list(json.loads(path.read_text()))
    except (OSError, ValueError):
        return []


def run_payload(ws: Path, payload: list[dict[str, Any]], pythonpath: str | None
                ) -> list[dict[str, Any]]:
    """Run the cases in one interpreter, restarted after a case that hangs beyond its alarm
    (a deadlock the alarm cannot break) or kills the interpreter: that case is recorded as a
    hang or a crash and the rest go on in a new one."""
    done: list[dict[str, Any]] = []
    attempt = 0
    while len(done) < len(payload):
        attempt += 1
        rest = payload[len(done):]
        cases_file, out_file = ws / f"cases-{attempt}.json", ws / f"outcomes-{attempt}.json"
        cases_file.write_text(json.dumps(rest))
        proc = subprocess.Popen([sys.executable, "-c", RUNNER, str(cases_file), str(out_file),
                                 str(3 << 30), str(CASE_TIMEOUT_S)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                env=env_for(pythonpath), start_new_session=True)
        seen, last_progress = 0, time.monotonic()
        while proc.poll() is None:
            time.sleep(0.2)
            count = len(_outcomes(out_file))
            if count != seen:
                seen, last_progress = count, time.monotonic()
            elif time.monotonic() - last_progress > CASE_TIMEOUT_S + 30:
                with _suppress():
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
        stderr = proc.stderr.read() if proc.stderr else ""
        done += _outcomes(out_file)
        if len(done) < len(payload):  # the case at len(done) hung or killed the interpreter
            hung = proc.returncode == -signal.SIGKILL
            done.append({"code": "hang" if hung else f"runner died ({proc.returncode})",
                         "stderr": "" if hung else stderr[-2000:], "seconds": 0})
    return done


# --- signals ----------------------------------------------------------------------------------

def job_workers(driver: Any) -> list[Any]:
    """Processes below the driver that run a job (not a zygote, not an idle probe)."""
    import psutil

    out = []
    for proc in driver.children(recursive=True):
        try:
            cmd = proc.cmdline()
            parent_cmd = proc.parent().cmdline()
        except psutil.Error:
            continue
        if not any("seqbench.worker" in c for c in cmd) or "--baseline" in cmd:
            continue
        if "--zygote" in cmd and not any("--zygote" in c for c in parent_cmd):
            continue  # a zygote
        out.append(proc)
    return out


def signal_trial(ws: Path, pythonpath: str | None, sig: int) -> dict[str, Any]:
    """Ctrl-C (SIGINT to the process group, as a terminal sends it) or SIGTERM to a run at
    --workers 2 with both jobs training."""
    import psutil

    name = signal.Signals(sig).name
    folder = ws / f"signal-{name}"
    folder.mkdir()
    (folder / "spec.yaml").write_text(dump(LONG))
    code = "import sys\nfrom seqbench.cli import main\nsys.exit(main(sys.argv[1:]))"
    driver = subprocess.Popen([sys.executable, "-c", code, "run", "spec.yaml", "-o", "out",
                               "--no-report", "--workers", "2"], cwd=folder,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              env=env_for(pythonpath), start_new_session=True)
    me = psutil.Process(driver.pid)
    deadline = time.monotonic() + 180
    running, folders = 0, set[str]()
    while running < 2 and time.monotonic() < deadline and driver.poll() is None:
        time.sleep(0.1)
        workers = job_workers(me)
        running, folders = len(workers), folders | job_folders(workers)
    time.sleep(1.0)
    folders |= job_folders(job_workers(me))
    family = me.children(recursive=True)
    sent = time.monotonic()
    if sig == signal.SIGINT:
        os.killpg(driver.pid, sig)
    else:
        driver.send_signal(sig)
    try:
        _, stderr = driver.communicate(timeout=90)
        exit_s = round(time.monotonic() - sent, 1)
    except subprocess.TimeoutExpired:
        driver.kill()
        _, stderr = driver.communicate()
        exit_s = None
    time.sleep(3)
    left = [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for pid in left:
        with _suppress():
            os.killpg(pid, signal.SIGKILL)
        with _suppress():
            os.kill(pid, signal.SIGKILL)
    rows = jsonl_rows(folder / "out" / "results.jsonl") \
        if (folder / "out" / "results.jsonl").is_file() else []
    leaked = sorted(f for f in folders if os.path.lexists(f))
    for leak in leaked:
        shutil.rmtree(leak, ignore_errors=True)
    verdict = {"id": f"{name.lower()}-at-workers-2", "point": "6", "expect": "signal",
               "jobs_running_when_sent": running, "exit_code": driver.returncode,
               "exit_s": exit_s, "stderr": stderr.strip().splitlines()[-3:],
               "interrupted_rows": sum(r.get("status") == "interrupted" for r in rows),
               "processes_left": len(left), "temp_folders_left": len(leaked),
               "temp_folders_seen": len(folders)}
    problems = []
    if running < 2:
        problems.append(f"only {running} job(s) were running")
    if exit_s is None or exit_s > 10:
        problems.append(f"exited after {exit_s} s")
    if verdict["interrupted_rows"] != 2:
        problems.append(f"{verdict['interrupted_rows']} interrupted rows, not 2")
    if left:
        problems.append(f"{len(left)} process(es) left")
    if leaked or not folders:
        problems.append(f"{len(leaked)} of {len(folders)} temporary folder(s) left")
    if not (len(verdict["stderr"]) == 1 and stderr.count("\n") <= 1
            and "interrupted" in stderr):
        problems.append("not one line saying it was interrupted")
    verdict["problems"] = problems
    verdict["passed"] = not problems
    return verdict


class _suppress:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: Any) -> bool:
        return True


def sigkill_trial(ws: Path, pythonpath: str | None) -> dict[str, Any]:
    """kill -9 of the driver once the first job is recorded, then the same command again."""
    import psutil

    folder = ws / "signal-SIGKILL"
    folder.mkdir()
    (folder / "spec.yaml").write_text(dump(TINY))
    code = "import sys\nfrom seqbench.cli import main\nsys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "run", "spec.yaml", "-o", "out", "--no-report"]
    driver = subprocess.Popen(argv, cwd=folder, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env=env_for(pythonpath),
                              start_new_session=True)
    jobs = folder / "out" / "jobs"
    deadline = time.monotonic() + 180
    me, folders = psutil.Process(driver.pid), set[str]()
    while time.monotonic() < deadline and driver.poll() is None and not (
            jobs.is_dir() and list(jobs.glob("*.json"))):
        time.sleep(0.05)
    while time.monotonic() < deadline and driver.poll() is None and not folders:
        folders = job_folders(job_workers(me))  # the second job's
        time.sleep(0.02)
    family = me.children(recursive=True)
    driver.kill()
    driver.wait()
    time.sleep(3)
    left = [p.pid for p in family if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    kept = {p.name: p.read_bytes() for p in jobs.glob("*.json")}
    again = subprocess.run(argv, cwd=folder, capture_output=True, text=True, timeout=600,
                           env=env_for(pythonpath))
    rows = jsonl_rows(folder / "out" / "results.jsonl")
    now = {p.name: p.read_bytes() for p in jobs.glob("*.json")}
    leaked = sorted(f for f in folders if os.path.lexists(f))
    for leak in leaked:
        shutil.rmtree(leak, ignore_errors=True)
    verdict = {"id": "sigkill-then-rerun", "point": "6", "expect": "signal",
               "rows_before_rerun": len(kept), "rerun_exit_code": again.returncode,
               "rows_after": len({r.get('job_id') for r in rows}),
               "finished_rows_rewritten": sum(now.get(k) != v for k, v in kept.items()),
               "processes_left": len(left), "temp_folders_left": len(leaked)}
    problems = []
    if len(kept) != 1:
        problems.append(f"{len(kept)} rows recorded when killed (wanted 1)")
    if again.returncode != 0 or verdict["rows_after"] != 2:
        problems.append(f"rerun exit {again.returncode}, {verdict['rows_after']} rows")
    if verdict["finished_rows_rewritten"]:
        problems.append("a finished row was rewritten")
    if left:
        problems.append(f"{len(left)} process(es) outlived the killed driver")
    if leaked or not folders:
        problems.append(f"{len(leaked)} of {len(folders)} temporary folder(s) of the killed "
                        "driver left after the rerun")
    verdict["problems"] = problems
    verdict["passed"] = not problems
    return verdict


# --- the report -------------------------------------------------------------------------------

def summary(verdicts: list[dict[str, Any]]) -> dict[str, Any]:
    by = {kind: [v for v in verdicts if v["expect"] == kind]
          for kind in ("refuse", "ok", "detect", "signal")}
    return {
        "inputs_tried": len(verdicts),
        "bad_input_rejected_cleanly": f"{sum(v['passed'] for v in by['refuse'])}"
                                      f"/{len(by['refuse'])}",
        "tracebacks": sum(bool(v.get("traceback")) for v in verdicts),
        "hangs": sum(bool(v.get("hang")) for v in verdicts),
        "cases_that_changed_files_outside_the_folder": sum(bool(v.get("changed_outside"))
                                                           for v in verdicts),
        "refusals_that_wrote_files": sum(bool(v.get("changed")) for v in by["refuse"]),
        "faults_survived": f"{sum(v['passed'] for v in by['ok'])}/{len(by['ok'])}",
        "damage_detected_by_validate": f"{sum(v['passed'] for v in by['detect'])}"
                                       f"/{len(by['detect'])}",
        "signal_trials_passed": f"{sum(v['passed'] for v in by['signal'])}/{len(by['signal'])}",
        "passed": f"{sum(v['passed'] for v in verdicts)}/{len(verdicts)}",
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pythonpath", default=None,
                        help="run against the seqbench found here (default: this one)")
    parser.add_argument("--json", default=None, help="write every verdict here")
    parser.add_argument("--no-signals", action="store_true", help="skip the signal trials")
    parser.add_argument("--only", default=None, help="comma-separated case ids")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="seqbench-hostile-") as tmp:
        ws = Path(tmp)
        prepare(ws, args.pythonpath)
        verdicts = run_cases(ws, args.pythonpath, args.only.split(",") if args.only else None)
        if not args.no_signals and not args.only:
            verdicts += [signal_trial(ws, args.pythonpath, signal.SIGINT),
                         signal_trial(ws, args.pythonpath, signal.SIGTERM),
                         sigkill_trial(ws, args.pythonpath)]
    for v in verdicts:
        if not v["passed"]:
            print(f"FAIL {v['id']} [{v['point']}]: {'; '.join(v['problems'])} "
                  f"| {' / '.join(v.get('stderr', []))[:300]}")
    result = summary(verdicts)
    for key, value in result.items():
        print(f"{key}: {value}")
    if args.json:
        Path(args.json).write_text(json.dumps({"summary": result, "verdicts": verdicts},
                                              indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
