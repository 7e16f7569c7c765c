"""seqbench nightly: a red gate publishes nothing, each night lands in a dated directory with an
index, the comparison uses the previous night on the same device, a planted slowdown makes the
night exit 1, and the shipped nightly spec is valid."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from seqbench.config import expand, load_suite, parse_suite
from seqbench.errors import SpecError
from seqbench.execution import nightly as nt
from seqbench.recording.rows import new_row
from seqbench.worker.job import run_job

TINY = {
    "name": "tiny-nightly", "seeds": [0, 1], "device": "cpu",
    "models": [{"name": "lstm", "params": {"d_model": 8}},
               {"name": "gru", "params": {"d_model": 8}}],
    "tasks": [{"name": "adding", "seq_lens": [8]}],
    "train": {"steps": 12, "batch_size": 4, "eval_examples": 16, "eval_batch_size": 16},
    "measure": {"warmup_steps": 2, "fwd_min_repeats": 3, "fwd_max_repeats": 3},
}
PASS = [sys.executable, "-c", "print('3 passed in 0.01s')"]
FAIL = [sys.executable, "-c", "print('1 failed'); raise SystemExit(1)"]


class FakeExecutor:
    """Rows as a worker writes them, without training: lognormal step times (5 % spread)."""

    def __init__(self, device: str = "Fake GPU", slowdown: dict[str, float] | None = None,
                 seed: int = 0) -> None:
        self.device, self.slowdown, self.seed = device, slowdown or {}, seed
        self.jobs = 0

    def run(self, jobs, context, on_row) -> None:
        for job in jobs:
            self.jobs += 1
            rng = np.random.default_rng([self.seed, job.seed, len(job.model.name)])
            step = 0.01 * self.slowdown.get(job.model.name, 1.0)
            samples = list(step * rng.lognormal(0.0, 0.05, 30))
            row = new_row(job, context)
            row.update(status="ok", device_name=self.device, wall_s=0.1,
                       train_step_s_samples=samples,
                       train_tokens_per_s=32 * 8 / float(np.median(samples)),
                       metric_mse=0.05 * (1 + job.seed / 100) * (len(job.model.name) - 2),
                       baseline_mse=1 / 6, higher_is_better_mse=False, primary_metric="mse")
            on_row(row)


class InProcessExecutor:
    """The real runner, in this process (no worker start-up)."""

    def run(self, jobs, context, on_row) -> None:
        for job in jobs:
            on_row(run_job(job, context))


@pytest.fixture
def suite():
    return parse_suite(TINY)


def run_night(suite, history: Path, **kw) -> nt.Night:
    kw.setdefault("executor", FakeExecutor())
    kw.setdefault("report", False)
    return nt.nightly(suite, "tiny.yaml", history, say=lambda _: None, **kw)


def test_red_gate_publishes_nothing(suite, tmp_path):
    executor = FakeExecutor()
    night = run_night(suite, tmp_path, executor=executor, gate=FAIL)
    assert night.exit_code == nt.EXIT_RED_GATE
    assert executor.jobs == 0  # no benchmark ran
    assert not (night.run_dir / "results").exists() and not (night.run_dir / "report").exists()
    assert "1 failed" in (night.run_dir / "gate.log").read_text()
    [entry] = nt.read_index(tmp_path)
    assert entry["status"] == "gate-failed" and entry["gate"] == "failed"
    # a red night is never the baseline of a later one
    later = run_night(suite, tmp_path, gate=PASS)
    assert later.comparison is None and later.entry["baseline"] == ""


def test_nights_compare_with_the_previous_run_on_the_same_device(suite, tmp_path):
    first = run_night(suite, tmp_path, gate=PASS)
    assert first.exit_code == 0 and first.entry["gate"] == "passed"
    assert first.entry["gate_summary"] == "3 passed in 0.01s"
    other = run_night(suite, tmp_path, executor=FakeExecutor(device="Other GPU", seed=1))
    assert other.comparison is None  # first night on that device
    same = run_night(suite, tmp_path, executor=FakeExecutor(seed=2))
    assert same.entry["baseline"] == first.entry["run_dir"]
    assert same.exit_code == 0 and same.comparison.matched == 2
    assert same.comparison.regressions == []
    slow = run_night(suite, tmp_path, executor=FakeExecutor(slowdown={"gru": 2.0}, seed=3))
    assert slow.entry["baseline"] == same.entry["run_dir"]
    assert slow.exit_code == nt.EXIT_REGRESSION
    assert {f.config for f in slow.comparison.regressions} == {"adding L=8 gru"}
    assert "adding L=8 gru" in (slow.run_dir / "compare.md").read_text()
    # the history: four dated directories, one index line each, newest first in index.md
    entries = nt.read_index(tmp_path)
    assert [e["run_dir"] for e in entries] == [n.entry["run_dir"]
                                               for n in (first, other, same, slow)]
    assert len({e["run_dir"] for e in entries}) == 4  # same-second starts get a suffix
    assert [e["regressions"] for e in entries] == [0, 0, 0, 1]  # gru train tok/s (seeds pooled)
    table = (tmp_path / nt.INDEX_MD).read_text()
    assert table.index(f"({slow.entry['run_dir']}/") < table.index(f"({first.entry['run_dir']}/")


def test_skipped_gate_is_recorded(suite, tmp_path):
    night = run_night(suite, tmp_path, gate=None)
    assert night.entry["gate"] == "skipped" and night.entry["status"] == "published"


def test_a_second_nightly_on_the_same_history_is_refused(suite, tmp_path):
    with nt.locked(tmp_path), pytest.raises(SpecError, match="another seqbench nightly"):
        run_night(suite, tmp_path)


def test_interrupted_night_is_recorded(suite, tmp_path):
    class Crashing:
        def run(self, jobs, context, on_row):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_night(suite, tmp_path, executor=Crashing())
    [entry] = nt.read_index(tmp_path)
    assert entry["status"] == "interrupted"


def test_real_rows_and_report(suite, tmp_path):
    """The real runner in-process and the reporting issue's report."""
    night = run_night(suite, tmp_path, executor=InProcessExecutor(), report=True)
    assert night.entry["statuses"] == {"ok": 4}
    assert (tmp_path / night.entry["report"]).is_file()
    rows = [json.loads(line) for line in
            (night.run_dir / "results" / "results.jsonl").read_text().splitlines()]
    assert len(rows) == len(expand(suite)) and all(r["train_step_s_samples"] for r in rows)


def test_shipped_nightly_spec_is_valid():
    suite, path = load_suite(nt.DEFAULT_SPEC)
    assert suite.name == "nightly" and len(suite.seeds) >= 2  # seed pairs for compare
    assert path.name == "nightly.yaml" and expand(suite)


@pytest.mark.slow
def test_cli_nightly_end_to_end(tmp_path):
    """``seqbench nightly --skip-gate`` with real workers, twice: the second compares."""
    import yaml

    from seqbench.cli import main

    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(TINY))
    args = ["nightly", "--spec", str(spec), "--history", str(tmp_path / "h"), "--skip-gate",
            "--reproductions", "none"]
    assert main(args) in (0, 1)
    assert main([*args, "--no-report"]) in (0, 1)
    entries = nt.read_index(tmp_path / "h")
    assert [e["status"] for e in entries] == ["published", "published"]
    assert entries[1]["baseline"] == entries[0]["run_dir"] and entries[1]["matched"] == 2


def test_a_failing_asv_step_is_recorded_and_fails_the_night(suite, tmp_path, monkeypatch):
    def fake_asv(python, sha):  # the shape of asv_commands: [python, -m, asv, step, ...]
        code = {"machine": 0, "run": 2, "publish": 0}
        return [[python, "-c", f"raise SystemExit({code[step]})", step, sha]
                for step in ("machine", "run", "publish")]

    monkeypatch.setattr(nt, "asv_commands", fake_asv)
    night = run_night(suite, tmp_path, asv=True)
    assert night.entry["asv"] == {"machine": 0, "run": 2}  # nothing to publish after a failed run
    assert night.exit_code == nt.EXIT_REGRESSION and night.entry["status"] == "published"
    assert "$ " in (night.run_dir / "asv.log").read_text()


def test_asv_commands_save_a_publishable_result_for_this_interpreter():
    machine, run, publish = nt.asv_commands("/venv/bin/python", "abc123")
    assert machine == ["/venv/bin/python", "-m", "asv", "machine", "--yes"]
    # --quick would save nothing; results are keyed by the interpreter path
    assert run[3:] == ["run", "-E", "existing:/venv/bin/python", "--set-commit-hash", "abc123"]
    assert publish[3:] == ["publish"]


def test_a_flipped_reproduction_fails_the_night_loudly(suite, tmp_path):
    """The fake rows give lstm (4 letters) twice gru's MSE: gru > lstm holds, the reverse flips."""
    said: list[str] = []

    def repro(name: str, better: str, worse: str):
        spec = {**TINY, "name": name, "seeds": [0, 1, 2],
                "expect": [{"better": better, "worse": worse, "metric": "mse"}]}
        return parse_suite(spec), f"{name}.yaml"

    night = nt.nightly(suite, "tiny.yaml", tmp_path, executor=FakeExecutor(), report=False,
                       say=said.append, reproductions=[repro("holds", "gru", "lstm"),
                                                       repro("flips", "lstm", "gru")])
    assert night.exit_code == nt.EXIT_REGRESSION
    [entry] = nt.read_index(tmp_path)
    assert entry["status"] == "published" and entry["orderings_failing"] == 1
    assert entry["reproductions"]["holds"]["counts"] == {"held": 1}
    assert entry["reproductions"]["flips"]["counts"] == {"flipped": 1}
    assert (tmp_path / entry["reproductions"]["flips"]["check"]).read_text().count("flipped") >= 1
    assert any(s.startswith("ORDERING NOT REPRODUCED (flips)") for s in said)
    assert "1 flipped, 1 held" in (tmp_path / nt.INDEX_MD).read_text()
    assert (night.run_dir / "reproductions" / "holds" / "results.jsonl").exists()


def test_shipped_reproductions_are_train_specs_with_expectations():
    for name in nt.REPRODUCTIONS:
        repro, _ = load_suite(name)
        assert repro.kind == "train" and repro.expect, name
        assert repro.device == "cpu" and len(repro.seeds) >= 2, name  # Welch needs 2 a side
