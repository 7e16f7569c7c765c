"""``seqbench validate``: a clean results directory passes (exit 0); each kind of damage is
reported with where it is (exit 1)."""

from __future__ import annotations

import json
import math

import pytest

from seqbench.cli import main
from seqbench.config import expand, parse_suite
from seqbench.recording.rows import RunContext, failed_row
from seqbench.recording.schema import SCHEMA_VERSION, Row
from seqbench.recording.store import ResultStore, dumps
from seqbench.recording.validate import check_row, validate_path

SPEC = {
    "name": "tiny",
    "seeds": [0, 1, 2],
    "device": "cpu",
    "models": [{"name": "gru", "params": {"d_model": 8}}],
    "tasks": [{"name": "adding", "seq_lens": [6]}],
    "train": {"steps": 4},
}


def rows() -> list[dict]:
    """Rows as the executor writes them: one ok (with its metrics), two failed."""
    out = []
    for job, status in zip(expand(parse_suite(SPEC)), ("ok", "timeout", "error"), strict=True):
        row = failed_row(job, RunContext(suite="tiny", spec_hash="b" * 64), status,
                         "" if status == "ok" else f"{status} text", 2.5)
        if status == "ok":
            row.update(primary_metric="mse", metric_mse=0.01, baseline_mse=1 / 6,
                       higher_is_better_mse=False, peak_mem_bytes=10**6,
                       train_step_s_samples=[0.1, 0.2])
        out.append(row.to_dict())
    return out


@pytest.fixture()
def results(tmp_path):
    store = ResultStore(tmp_path / "out")
    store.open_for("tiny", "b" * 64, SPEC)
    for row in rows():
        store.write(Row.from_dict(row))
    store.close()
    return store


def test_a_clean_results_directory_validates(results, capsys):
    assert validate_path(results.root) == (3, [])
    assert main(["validate", str(results.root)]) == 0
    assert capsys.readouterr().out.strip().endswith("3 rows, ok")


@pytest.mark.parametrize("change, expected", [
    ({"schema_version": SCHEMA_VERSION + 1}, "this seqbench writes and reads"),
    ({"status": "finished"}, "status 'finished': must be one of ok, oom"),
    ({"metric_mse": None}, "ok row with a NaN or infinite metric_mse"),
    ({"metric_mse": math.inf}, "ok row with a NaN or infinite metric_mse"),
    ({"error": "boom"}, "status 'ok' with an error text"),
    ({"peak_mem_bytes": -1}, "peak_mem_bytes = -1: a quantity in bytes"),
    ({"train_step_s_samples": [0.1, -0.2]}, "train_step_s_samples = -0.2"),
    ({"wall_s": "fast"}, "wall_s = 'fast': must be a float"),
    ({"seed": 5}, "job_id '"),
    ({"config_hash": "c" * 64, "job_id": "c" * 16 + "-s0"}, "not the hash of the row's job"),
    ({"host": ""}, "host is empty (required provenance)"),
    ({"git_sha": "abc"}, "git_sha 'abc' is neither"),
    ({"started_at": "yesterday"}, "started_at 'yesterday' is not an ISO-8601 time"),
    ({"higher_is_better_mse": "no"}, "higher_is_better_mse = 'no': must be true or false"),
    ({"primary_metric": "accuracy"}, "without its primary metric metric_accuracy"),
], ids=["version", "status", "nan-metric", "inf-metric", "ok-with-error", "negative-bytes",
        "negative-sample", "wall-type", "job-id", "edited-job", "empty-host", "git-sha",
        "started-at", "higher-is-better", "primary-missing"])
def test_each_damaged_field_is_reported(change, expected):
    row = {**rows()[0], **change}
    problems = check_row(json.loads(dumps(row)))
    assert any(expected in p for p in problems), problems


def test_missing_provenance_and_failed_rows_without_error_text_are_reported():
    row = rows()[1]
    del row["torch_version"], row["git_sha"]
    row["error"] = ""
    problems = check_row(row)
    assert "missing required fields: git_sha, torch_version" in problems
    assert "status 'timeout' without an error text" in problems


def test_undeclared_fields_are_reported_only_when_strict():
    row = {**rows()[0], "mem": 5}
    assert check_row(row) == []
    assert any(p.startswith("unknown field 'mem'") for p in check_row(row, strict=True))


def test_damage_on_disk_is_listed_with_its_place_and_exit_code_1(results, capsys):
    lines = results.jsonl.read_text().splitlines()
    duplicate = lines[0]
    results.jsonl.write_text("\n".join([*lines, duplicate, '{"schema_version": 1, "job_i']))
    (results.jobs_dir / "junk.json").write_text("{")
    count, problems = validate_path(results.root)
    text = [str(p) for p in problems]
    assert count == 3  # distinct rows; the JSONL's duplicate line is a problem, not a row
    assert any(":5: truncated line" in t for t in text), text
    assert any("junk.json: unreadable job file" in t for t in text), text
    dup = [t for t in text if "duplicate (config_hash, seed)" in t]
    assert len(dup) == 1 and "2 rows" in dup[0] and ":1, " in dup[0] and ":4)" in dup[0]
    assert main(["validate", str(results.root)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[-1].endswith(f"3 rows, {len(problems)} problems")
    assert len(out) == len(problems) + 1


def test_a_row_only_in_the_job_files_is_reported(results):
    first = results.jsonl.read_text().splitlines()[1:]
    results.jsonl.write_text("\n".join(first) + "\n")
    _, problems = validate_path(results.root)
    assert [p.message for p in problems] == [
        "in jobs/ but not in results.jsonl (`seqbench run` into this directory repairs it)"]
    assert validate_path(results.jsonl) == (2, [])
