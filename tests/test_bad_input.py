"""The bad-input battery: every malformed input (a spec, a flag, a data directory, a results
directory) exits with code 2 and exactly one line on stderr naming the field, the value and what
is allowed, and leaves an existing results directory byte-for-byte untouched. Hypothesis fuzzes
the spec loader: any input loads or fails with that clean error, never another exception.

The cases run through ``seqbench.cli.main`` in one subprocess (stderr captured at the file
descriptor, per case), since 40 interpreters importing torch would take minutes on 2 cores; a
few also run through the installed ``seqbench`` entry point, each in its own process.
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seqbench.config import expand, load_suite, parse_suite
from seqbench.errors import SpecError
from seqbench.recording.rows import RunContext
from seqbench.recording.store import ResultStore

GOOD = {
    "name": "tiny",
    "seeds": [0],
    "device": "cpu",
    "models": [{"name": "gru", "params": {"d_model": 8}}],
    "tasks": [{"name": "adding", "seq_lens": [6]}],
    "train": {"steps": 4, "batch_size": 4},
    "timeout_s": 60,
}


def edit(path: str, value, base=GOOD) -> dict:
    """A deep copy of ``base`` with ``value`` at the dotted ``path`` (missing keys are added)."""
    spec = json.loads(json.dumps(base))
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node[int(key)] if key.isdigit() else node.setdefault(key, {})
    if last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return spec


# (id, spec written to case.yaml or None, argv after `seqbench`, env, [fragments expected in the
# one stderr line: the field, the value, what is allowed])
SPEC_CASES = [
    ("seeds-not-a-list", edit("seeds", "zero"), ["seeds", "'zero'", "valid list"]),
    ("seed-negative", edit("seeds", [-1]), ["seeds[0]", "-1", "greater than or equal to 0"]),
    ("seed-repeated", edit("seeds", [0, 0]), ["seeds", "[0, 0]", "must not repeat a seed"]),
    ("seeds-empty", edit("seeds", []), ["seeds", "[]", "at least 1 item"]),
    ("models-empty", edit("models", []), ["models", "[]", "at least 1 item"]),
    ("tasks-empty", edit("tasks", []), ["tasks", "[]", "at least 1 item"]),
    ("lengths-empty", edit("tasks.0.seq_lens", []), ["tasks[0].seq_lens", "[]", "at least 1"]),
    ("length-zero", edit("tasks.0.seq_lens", [0]), ["tasks[0].seq_lens[0]", "0",
                                                   "greater than 0"]),
    ("length-a-word", edit("tasks.0.seq_lens", ["long"]), ["tasks[0].seq_lens[0]", "'long'",
                                                          "valid integer"]),
    ("length-repeated", edit("tasks.0.seq_lens", [6, 6]), ["tasks[0].seq_lens", "[6, 6]",
                                                          "must not repeat a length"]),
    ("unknown-top-key", edit("epochs", 3), ["epochs", "'epochs'", "allowed keys: name"]),
    ("unknown-train-key", edit("train.epochs", 3), ["train.epochs", "'epochs'",
                                                    "allowed keys: steps"]),
    ("unknown-model-key", edit("models.0.size", 3), ["models[0].size", "'size'",
                                                     "allowed keys: name, params"]),
    ("unknown-model", edit("models.0.name", "lstmx"), ["models[0].name", "'lstmx'",
                                                       "known models: rnn"]),
    ("unknown-task", edit("tasks.0.name", "sorting"), ["tasks[0].name", "'sorting'",
                                                       "known tasks: copy"]),
    ("unknown-model-param", edit("models.0.params.foo", 1), ["foo", "gru"]),
    ("unknown-task-param", edit("tasks", [{"name": "smnist", "seq_lens": [784],
                                           "params": {"noise": 1}}]),
     ["params.noise", "'noise'", "allowed keys: dataset, split_seed"]),
    ("lr-negative", edit("train.lr", -1), ["train.lr", "-1", "greater than 0"]),
    ("lr-nan", edit("train.lr", math.nan), ["train.lr", "nan", "finite number"]),
    ("optimizer-unknown", edit("train.optimizer", "rmsprop"), ["train.optimizer", "'rmsprop'",
                                                               "'adamw', 'adam' or 'sgd'"]),
    ("steps-fractional", edit("train.steps", 1.5), ["train.steps", "1.5", "valid integer"]),
    ("batch-a-bool", edit("train.batch_size", True), ["train.batch_size", "True",
                                                     "valid integer"]),
    ("device-unknown", edit("device", "tpu"), ["device", "'tpu'", "'auto', 'cpu' or 'cuda'"]),
    ("dtype-unknown", edit("dtype", "float16"), ["dtype", "'float16'",
                                                 "'float32' or 'bfloat16'"]),
    ("name-with-spaces", edit("name", "my suite"), ["name", "'my suite'", "match pattern"]),
    ("timeout-zero", edit("timeout_s", 0), ["timeout_s", "0", "greater than 0"]),
    ("version-zero", edit("version", 0), ["version", "0", "greater than 0"]),
    ("threads-zero", edit("measure.threads", 0), ["measure.threads", "0", "greater than 0"]),
    ("task-train-override", edit("tasks.0.train", {"lr": "fast"}),
     ["tasks[0].train.lr", "'fast'", "valid number"]),
]
TEXT_CASES = [  # (id, file content, fragments)
    ("yaml-a-list", "- name: tiny\n- seeds: [0]\n", ["spec", "'list'", "must be a YAML mapping"]),
    ("yaml-broken", "name: tiny\nseeds: [0, 1\n", ["case.yaml", "not valid YAML at line"]),
    ("yaml-empty", "", ["spec", "'NoneType'", "must be a YAML mapping"]),
    ("not-utf8", b"name: \xff\xfe tiny\n", ["spec", "case.yaml", "cannot be read"]),
]
RUN = ["run", "case.yaml", "-o", "results", "--no-report"]
HAVE_RAY = importlib.util.find_spec("ray") is not None
FLAG_CASES = [  # (id, argv, fragments); the spec is GOOD
    ("workers-zero", [*RUN, "--workers", "0"], ["--workers", "'0'", "positive integer"]),
    ("workers-a-word", [*RUN, "--workers", "two"], ["--workers", "'two'", "positive integer"]),
    ("timeout-negative", [*RUN, "--timeout", "-5"], ["--timeout", "'-5'", "positive"]),
    ("timeout-nan", [*RUN, "--timeout", "nan"], ["--timeout", "'nan'", "finite number"]),
    ("executor-unknown", [*RUN, "--executor", "dask"], ["--executor", "'dask'",
                                                       "'local', 'ray'"]),
    ("address-without-ray", [*RUN, "--address", "10.0.0.1:6379"],
     ["--address", "'10.0.0.1:6379'", "only used with --executor ray"]),
    ("address-malformed", [*RUN, "--executor", "ray", "--address", "headnode"],
     ["--address", "'headnode'", "host:port"]),
    ("address-unreachable", [*RUN, "--executor", "ray", "--address", "127.0.0.1:1"],
     ["--address", "'127.0.0.1:1'", "nothing answers there"] if HAVE_RAY
     else ["--executor", "'ray'", "pip install 'seqbench[ray]'"]),
    ("retries-negative", [*RUN, "--max-retries", "-1"], ["--max-retries", "'-1'", ">= 0"]),
    ("unknown-flag", [*RUN, "--frobnicate"], ["unrecognized arguments", "--frobnicate"]),
    ("unknown-command", ["frobnicate"], ["COMMAND", "'frobnicate'", "choose from 'run'"]),
    ("spec-missing", ["run", "nowhere.yaml", "-o", "results"], ["nowhere.yaml",
                                                                "cannot be read"]),
    ("out-other-suite", ["run", "case.yaml", "-o", "other"], ["--out", "other",
                                                              "holds results of suite 'other'"]),
    ("out-a-file", ["run", "case.yaml", "-o", "afile.txt"], ["--out", "afile.txt",
                                                            "must be a directory"]),
    ("out-foreign-dir", ["run", "case.yaml", "-o", "plain"], ["--out", "plain",
                                                             "not a seqbench results"]),
    ("out-bad-manifest", ["run", "case.yaml", "-o", "badmanifest"],
     ["--out", "badmanifest", "unreadable suite.json"]),
    ("validate-missing", ["validate", "nowhere"], ["RESULTS", "'nowhere'", "does not exist"]),
    ("validate-a-csv", ["validate", "afile.txt"], ["RESULTS", "afile.txt",
                                                   "a results directory, a .jsonl file"]),
]
SMNIST = edit("tasks", [{"name": "smnist", "seq_lens": [784]}])
# A data directory that does not exist, or lacks the dataset, is not bad input: the jobs that
# need it are recorded `unavailable` with what to download and where, and the rest of the sweep
# runs (tests/test_evalspecs.py). One that is a file, or cannot be read, is refused.
DATA_CASES = [  # (id, data dir, fragments)
    ("data-dir-a-file", "afile.txt", ["data.mnist", "afile.txt is not a directory",
                                      "must be readable directories"]),
    ("data-dir-corrupt", "corrupt-data", ["data.mnist", "train-images", "bytes"]),
]

RUNNER = r"""
import hashlib, json, os, sys, tempfile
from pathlib import Path
from seqbench.cli import main

cases, watched, out = json.loads(Path(sys.argv[1]).read_text()), sys.argv[2], sys.argv[3]
base_env = dict(os.environ)

def snapshot():
    root = Path(watched)
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            + f"@{p.stat().st_mtime_ns}" if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}

results = []
for case in cases:
    os.environ.clear()
    os.environ.update(base_env, **case["env"])
    os.chdir(case["cwd"])
    err = tempfile.TemporaryFile()
    sys.stdout.flush(); sys.stderr.flush()
    saved = os.dup(2), os.dup(1)
    os.dup2(err.fileno(), 2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    try:
        try:
            code = main(case["argv"])
        except SystemExit as exc:
            code = exc.code
        except BaseException as exc:
            code = f"raised {type(exc).__name__}: {exc}"
    finally:
        sys.stdout.flush(); sys.stderr.flush()
        os.dup2(saved[0], 2); os.dup2(saved[1], 1)
    err.seek(0)
    results.append({"code": code, "stderr": err.read().decode(errors="replace"),
                    "snapshot": snapshot()})
Path(out).write_text(json.dumps(results))
"""


def snapshot(root: Path) -> dict[str, str]:
    import hashlib

    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            + f"@{p.stat().st_mtime_ns}" if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def make_results_dir(path: Path, suite: str) -> None:
    """A results directory as a finished run leaves it (manifest, job files, the JSONL)."""
    from seqbench.recording.rows import failed_row

    store = ResultStore(path)
    store.open_for(suite, "0" * 64, {"name": suite})
    for job in expand(parse_suite({**GOOD, "name": suite, "seeds": [0, 1]})):
        store.write(failed_row(job, RunContext(suite=suite), "timeout",
                               "job exceeded its timeout", 60.0))
    store.close()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    make_results_dir(root / "results", "tiny")
    make_results_dir(root / "other", "other")
    (root / "afile.txt").write_text("not results\n")
    (root / "plain").mkdir()
    (root / "plain" / "notes.txt").write_text("mine\n")
    (root / "badmanifest" / "jobs").mkdir(parents=True)
    (root / "badmanifest" / "suite.json").write_text("{not json")
    mnist = root / "corrupt-data" / "mnist"
    mnist.mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        (mnist / name).write_bytes(b"\x1f\x8b truncated download")
    return root


def all_cases(root: Path) -> list[tuple[str, dict, list[str]]]:
    """(id, case for the runner, fragments); each case writes its spec into its own folder."""
    out = []

    def add(case_id: str, spec: dict | str | bytes, argv: list[str], fragments: list[str],
            env: dict | None = None) -> None:
        folder = root / "cases" / case_id
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "case.yaml"
        if isinstance(spec, bytes):
            path.write_bytes(spec)
        else:
            path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
        for name in ("results", "other", "afile.txt", "plain", "badmanifest"):
            link = folder / name
            if not link.exists():
                link.symlink_to(root / name)
        out.append((case_id, {"argv": argv, "cwd": str(folder), "env": env or {}}, fragments))

    for case_id, spec, fragments in SPEC_CASES:
        add(case_id, spec, RUN, fragments)
    for case_id, text, fragments in TEXT_CASES:
        add(case_id, text, RUN, fragments)
    for case_id, argv, fragments in FLAG_CASES:
        add(case_id, GOOD, argv, fragments)
    for case_id, data_dir, fragments in DATA_CASES:
        add(case_id, SMNIST, RUN, fragments, {"SEQBENCH_DATA_DIR": str(root / data_dir)})
    return out


@pytest.fixture(scope="module")
def outcomes(workspace):
    cases = all_cases(workspace)
    (workspace / "cases.json").write_text(json.dumps([c for _, c, _ in cases]))
    before = snapshot(workspace / "results")
    proc = subprocess.run([sys.executable, "-c", RUNNER, str(workspace / "cases.json"),
                           str(workspace / "results"), str(workspace / "outcomes.json")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    results = json.loads((workspace / "outcomes.json").read_text())
    return before, {case_id: (result, fragments)
                    for (case_id, _, fragments), result in zip(cases, results, strict=True)}


def test_the_battery_has_at_least_thirty_distinct_inputs():
    ids = [c[0] for c in SPEC_CASES + TEXT_CASES + FLAG_CASES + DATA_CASES]
    assert len(ids) == len(set(ids)) >= 30


@pytest.mark.parametrize("case_id", [c[0] for c in SPEC_CASES + TEXT_CASES + FLAG_CASES
                                     + DATA_CASES])
def test_bad_input_exits_2_with_one_line_and_touches_no_results(outcomes, case_id):
    before, by_id = outcomes
    result, fragments = by_id[case_id]
    lines = result["stderr"].splitlines()
    assert result["code"] == 2, result
    assert len(lines) == 1 and lines[0].startswith("seqbench: error: "), result["stderr"]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert result["snapshot"] == before, "the existing results directory changed"


def test_the_other_directories_are_untouched_too(outcomes, workspace):
    assert sorted(p.name for p in (workspace / "plain").iterdir()) == ["notes.txt"]
    assert (workspace / "badmanifest" / "suite.json").read_text() == "{not json"
    assert sorted(p.name for p in (workspace / "other").iterdir()) == [
        ".lock", "jobs", "results.jsonl", "suite.json"]


@pytest.mark.parametrize("argv, fragment, fake_ray", [
    (["run", "good.yaml", "-o", "results", "--workers", "-3"], "--workers: got '-3'", False),
    (["run", "good.yaml", "-o", "other"], "holds results of suite 'other'", False),
    (["run", "good.yaml", "-o", "results", "--executor", "ray"],
     "--executor: got 'ray'; needs Ray, not installed here", True),
], ids=["flag", "other-suite", "ray-missing"])
def test_the_installed_entry_point_reports_bad_input_the_same_way(workspace, argv, fragment,
                                                                  fake_ray):
    exe = shutil.which("seqbench")
    if exe is None:
        pytest.skip("the seqbench entry point is not on PATH")
    folder = workspace / "cases" / "seeds-not-a-list"
    (folder / "good.yaml").write_text(yaml.safe_dump(GOOD))
    env = dict(os.environ)
    if fake_ray:  # a `ray` that fails to import, as where the extra is not installed
        (workspace / "noray" / "ray").mkdir(parents=True, exist_ok=True)
        (workspace / "noray" / "ray" / "__init__.py").write_text("raise ImportError('no ray')\n")
        env["PYTHONPATH"] = os.pathsep.join([str(workspace / "noray"),
                                             env.get("PYTHONPATH", "")])
    before = snapshot(workspace / "results")
    proc = subprocess.run([exe, *argv], cwd=folder, capture_output=True, text=True, timeout=300,
                          env=env)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("seqbench: error: ") and fragment in proc.stderr
    assert snapshot(workspace / "results") == before


# --- fuzzing the spec loader --------------------------------------------------------------

SCALARS = (st.none() | st.booleans() | st.integers(-10**12, 10**12)
           | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=12))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=3)
                      | st.dictionaries(st.text(max_size=8), inner, max_size=3), max_leaves=8)
PATHS = ["name", "version", "description", "kind", "seeds", "seeds.0", "device", "dtype",
         "models", "models.0", "models.0.name", "models.0.params", "models.0.params.d_model",
         "models.0.params.n_layers", "models.0.params.param_budget", "tasks", "tasks.0",
         "tasks.0.name", "tasks.0.params", "tasks.0.seq_lens", "tasks.0.seq_lens.0",
         "tasks.0.train", "tasks.0.train.lr", "train", "train.steps", "train.lr",
         "train.betas", "train.schedule", "measure", "measure.threads", "timeout_s", "scale",
         "anything"]


def loads_or_spec_error(load) -> None:
    try:
        load()
    except SpecError as exc:
        message = str(exc)
        assert message and "\n" not in message, message
    # any other exception fails the test with its traceback


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=st.lists(st.tuples(st.sampled_from(PATHS), VALUES), min_size=1, max_size=3))
def test_any_edit_of_a_valid_spec_loads_or_fails_cleanly(edits):
    spec = GOOD
    for path, value in edits:
        try:
            spec = edit(path, value, spec)
        except (KeyError, IndexError, TypeError, AttributeError):
            continue  # the path no longer exists after an earlier edit
    loads_or_spec_error(lambda: parse_suite(spec))


@settings(max_examples=200, deadline=None)
@given(data=VALUES)
def test_any_json_value_as_a_spec_loads_or_fails_cleanly(data):
    loads_or_spec_error(lambda: parse_suite(data) if isinstance(data, dict)
                        else (_ for _ in ()).throw(SpecError("spec", data, "a mapping")))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow,
                                                                  HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=200) | st.builds(yaml.safe_dump, VALUES))
def test_any_spec_file_loads_or_fails_cleanly(tmp_path, text):
    path = tmp_path / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    loads_or_spec_error(lambda: load_suite(str(path)))


def test_an_unknown_param_of_a_synthetic_task_is_refused_before_any_job_runs():
    with pytest.raises(SpecError, match="noise"):
        parse_suite(edit("tasks.0.params", {"noise": 1}))

