"""The shipped evaluation specs (recall, MAD, LRA, Chomsky, MNIST, character LM): every one loads
and expands to the jobs its comment promises, the committed CPU reference runs have exactly
those job ids, and a spec naming local data that is missing records `unavailable` rows that
say what to download and where, instead of refusing the whole spec (corrupt files still do)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import CONTEXT

from seqbench.cli import main
from seqbench.config import expand, load_suite, parse_suite
from seqbench.config import resolve as resolve_module
from seqbench.errors import BackendUnavailable, SpecError
from seqbench.worker.data.manifest import DataMissing, load_manifest, require
from seqbench.worker.data.paths import ENV_VAR
from seqbench.worker.job import run_job

ROOT = Path(__file__).resolve().parent.parent
GENERATED = ("listops", "pathfinder")  # datasets generated (and cached) when first built

# spec -> (jobs, {task: number of evaluation settings of each of its jobs})
SPECS: dict[str, tuple[int, dict[str, int]]] = {
    "selective-copy": (6 * 2, {"selective_copy": 0}),
    "induction": (6 * 2, {"induction": 14}),  # 2^6..2^20 without the training length 2^8
    "mqar": (6 * 3, {"mqar": 7}),  # zoology's test-time extrapolation set
    "mad": (6 * 66, {}),
    "lra": (4 * 5, {}),
    "chomsky": (8 * 15 * 3, {"parity_check": 500}),
    "smnist": (7 * 2 * 3, {}),
    "charlm": (6 * 3, {}),
    "selective-copy-cpu": (2 * 2, {"selective_copy": 2}),
    "induction-cpu": (3 * 2, {"induction": 7}),
    "mqar-cpu": (3 * 2 * 2, {"mqar": 3}),
    "chomsky-cpu": (3 * 4 * 2, {"parity_check": 200}),
    "mad-cpu": (3 * 6, {}),
    "lra-cpu": (4 * 4, {}),
    "smnist-cpu": (3 * 2, {}),
    "charlm-cpu": (3 * 3, {}),
}


@pytest.fixture
def empty_data_dir(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    monkeypatch.setenv(ENV_VAR, str(folder))
    return folder


@pytest.fixture
def no_generation(monkeypatch) -> None:
    """Spec loading builds a synthetic task once to read its model input and output; for the
    generated LRA datasets that build generates the whole dataset (minutes), so these tests
    skip it (the tasks' own checks still run)."""
    smallest = resolve_module._smallest_io
    monkeypatch.setattr(resolve_module, "_smallest_io", lambda cls, task, suite: None
                        if task.name in GENERATED else smallest(cls, task, suite))


@pytest.mark.parametrize("name", list(SPECS))
def test_every_evaluation_spec_loads_and_expands(name, empty_data_dir, no_generation):
    suite, path = load_suite(name)
    assert path.name == f"{name}.yaml"
    jobs = expand(suite)
    count, evals = SPECS[name]
    assert len(jobs) == count
    assert len({j.job_id for j in jobs}) == count
    for task, n in evals.items():
        assert {len(j.evals) for j in jobs if j.task.name == task} == {n}, task
    if name.endswith("-cpu"):  # minutes on 2 cores: two one-thread workers, CPU only
        assert suite.device == "cpu" and suite.workers == 2 and suite.measure.threads == 1
    else:
        assert suite.device == "cuda"
    text = path.read_text()
    assert text.startswith("#")  # the comment block: paper, table or section, setting
    block = text.split("\nname:", 1)[0]
    assert "Differences" in block  # from the paper's setting
    assert any(str(year) in block for year in range(2018, 2025))  # the paper, by year


def test_the_chomsky_protocol_trains_on_1_to_40_and_evaluates_every_length_to_500(
        empty_data_dir):
    suite, _ = load_suite("chomsky")
    job = expand(suite)[0]
    assert job.train.lengths is not None and job.train.lengths.lengths() == list(range(1, 41))
    assert [e.seq_len for e in job.evals] == list(range(1, 501))


@pytest.mark.parametrize("spec, results", [
    ("selective-copy-cpu", "reference-selective-copy-cpu"),
    ("induction-cpu", "reference-induction-cpu"),
    ("chomsky-cpu", "reference-chomsky-cpu"),
])
def test_committed_reference_runs_hold_exactly_the_specs_jobs(spec, results):
    suite, _ = load_suite(spec)
    stored = [json.loads(line) for line in
              (ROOT / "results" / results / "results.jsonl").read_text().splitlines()]
    assert {j.job_id for j in expand(suite)} == {r["job_id"] for r in stored}
    assert all(r["status"] == "ok" for r in stored)
    report = ROOT / "results" / results / "report"
    assert (report / "figures" / "extrapolation.png").is_file()
    assert "## Length extrapolation" in (report / "report.md").read_text()
    assert (report / "tables" / "chomsky_scores.md").is_file() == spec.startswith("chomsky")


# --- local data that is missing: a row, not a crash ---------------------------------------------
def smnist_spec() -> dict:
    return {"name": "missing-data", "device": "cpu", "seeds": [0],
            "models": [{"name": "gru", "params": {"d_model": 8}}],
            "tasks": [{"name": "smnist", "seq_lens": [784]},
                      {"name": "copy", "seq_lens": [10]}],
            "train": {"steps": 2, "batch_size": 4, "eval_examples": 8},
            "measure": {"threads": 1, "fwd_budget_s": 0.05}}


def labels_only(data_dir: Path) -> Path:
    """A fake MNIST folder holding one of its four files (the right size, zeros)."""
    spec = next(f for f in load_manifest("mnist").files if "train-labels" in f.path)
    path = data_dir / spec.path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\0" * (spec.size or 0))
    return path


def test_missing_files_are_data_missing_with_what_to_download_and_where(empty_data_dir):
    labels_only(empty_data_dir)
    with pytest.raises(DataMissing) as info:
        require("mnist", empty_data_dir)
    exc = info.value
    assert isinstance(exc, SpecError) and isinstance(exc, BackendUnavailable)
    message = str(exc)
    assert "train-images-idx3-ubyte.gz" in message and "file is missing" in message
    assert f"into {empty_data_dir}/mnist/" in message  # <data dir> spelled out
    assert "<data dir>" not in message and "yann.lecun.com" in message


def test_a_spec_with_missing_data_loads_and_its_jobs_are_unavailable(empty_data_dir):
    labels_only(empty_data_dir)
    suite = parse_suite(smnist_spec())  # no SpecError: the sweep goes on
    job = next(j for j in expand(suite) if j.task.name == "smnist")
    row = run_job(job, CONTEXT)
    assert row.status == "unavailable"
    assert row.error.startswith("DataMissing: data.mnist:")
    assert "download train-images-idx3-ubyte.gz" in row.error
    assert str(empty_data_dir / "mnist") in row.error


def test_seqbench_run_records_unavailable_rows_and_runs_the_rest(empty_data_dir, tmp_path):
    spec = tmp_path / "missing.yaml"
    spec.write_text(json.dumps(smnist_spec()))
    out = tmp_path / "out"
    code = main(["run", str(spec), "-o", str(out), "--data-dir", str(empty_data_dir),
                 "--no-report"])
    assert code == 0
    rows = {r["task"]: r for r in map(json.loads, (out / "results.jsonl").read_text()
                                      .splitlines())}
    assert rows["copy"]["status"] == "ok"
    assert rows["smnist"]["status"] == "unavailable"
    assert "yann.lecun.com" in rows["smnist"]["error"]


def test_a_file_of_the_wrong_size_still_refuses_the_spec(empty_data_dir, tmp_path, capsys):
    labels_only(empty_data_dir).write_bytes(b"\0" * 10)
    with pytest.raises(SpecError) as info:
        parse_suite(smnist_spec())
    assert not isinstance(info.value, DataMissing)
    assert "has 10 bytes, expected 28,881" in str(info.value)
    spec = tmp_path / "corrupt.yaml"
    spec.write_text(json.dumps(smnist_spec()))
    assert main(["run", str(spec), "-o", str(tmp_path / "out"), "--no-report",
                 "--data-dir", str(empty_data_dir)]) == 2
    assert "expected 28,881" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_a_data_dir_that_does_not_exist_is_missing_data_not_bad_input(tmp_path, monkeypatch):
    absent = tmp_path / "not-yet"
    monkeypatch.setenv(ENV_VAR, str(absent))
    parse_suite(smnist_spec())  # loads: the dataset is simply not there yet
    with pytest.raises(DataMissing) as info:
        require("mnist", absent)
    assert f"into {absent}/mnist/" in str(info.value) and "yann.lecun.com" in str(info.value)


@pytest.mark.parametrize("where", ["data dir", "dataset folder"])
def test_a_data_dir_that_is_a_file_is_refused(tmp_path, monkeypatch, where):
    if where == "data dir":
        data_dir = tmp_path / "data.tar"
        data_dir.write_bytes(b"not a folder")
        culprit = data_dir
    else:
        data_dir = tmp_path / "data"
        data_dir.mkdir()
        culprit = data_dir / "mnist"
        culprit.write_bytes(b"not a folder")
    monkeypatch.setenv(ENV_VAR, str(data_dir))
    with pytest.raises(SpecError) as info:
        parse_suite(smnist_spec())
    assert not isinstance(info.value, DataMissing)
    assert f"{culprit} is not a directory" in str(info.value)


def test_an_unreadable_data_dir_is_refused(empty_data_dir, monkeypatch):
    """Root reads any folder, so the permission error is injected where seqbench lists it."""
    import os

    real = os.scandir

    def scandir(path: object = ".") -> object:
        if Path(str(path)) == empty_data_dir:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(SpecError) as info:
        require("mnist", empty_data_dir)
    assert not isinstance(info.value, DataMissing)
    assert f"{empty_data_dir} cannot be read (Permission denied)" in str(info.value)
