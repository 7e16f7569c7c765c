"""The typed job and the configuration around it: hashes of the shipped specs stay those of the
committed reference runs, overrides change hashes exactly as the same YAML edit would, model
and task params are checked strictly at spec load, and added settings leave old hashes alone."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import CONTEXT, tiny_jobs, tiny_spec

from seqbench.cli import main
from seqbench.config import Job, Overrides, expand, load_suite, parse_suite
from seqbench.config.overrides import set_path
from seqbench.config.spec import TrainSpec, added
from seqbench.errors import SpecError
from seqbench.execution.sweep import plan
from seqbench.recording.rows import new_row
from seqbench.recording.store import ResultStore

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("spec, results", [("quick", "reference-cpu"),
                                           ("scale-cpu", "reference-scale-cpu")])
def test_job_ids_of_the_shipped_specs_are_those_of_the_committed_reference_runs(spec, results):
    suite, _ = load_suite(spec)
    stored = [json.loads(line) for line in
              (ROOT / "results" / results / "results.jsonl").read_text().splitlines()]
    assert {j.job_id for j in expand(suite)} == {r["job_id"] for r in stored}
    for row in stored:  # a stored job parses back to the same canonical JSON and hash
        job = Job.parse(row["job"])
        assert job.dump() == row["job"] and job.config_hash == row["config_hash"]


def test_the_worker_receives_exactly_what_is_hashed():
    job = tiny_jobs()[0]
    sent = json.loads(json.dumps(job.dump()))
    assert Job.parse(sent) == job and Job.parse(sent).config_hash == job.config_hash
    assert job.with_timeout(5).config_hash == job.config_hash  # the timeout is not hashed
    assert tiny_jobs(seeds=[1])[0].config_hash == job.config_hash  # nor the seed
    assert tiny_jobs(seeds=[1])[0].job_id != job.job_id


def test_a_setting_added_later_is_left_out_of_the_dump_while_it_holds_its_default():
    class Later(TrainSpec):
        eval_every: int = added(0)

    assert "eval_every" not in Later().model_dump()
    assert Later().model_dump() == TrainSpec().model_dump()
    assert Later(eval_every=50).model_dump()["eval_every"] == 50


def test_scale_jobs_hash_only_the_training_keys_they_use():
    suite = parse_suite({"name": "s", "kind": "scale", "models": [{"name": "gru"}],
                         "tasks": [{"name": "adding"}], "scale": {"max_len": 256},
                         "device": "cpu"})
    scale = next(j for j in expand(suite) if j.kind == "scale")
    stream = expand(suite)[-1]
    assert set(scale.dump()["train"]) == {"optimizer", "lr", "weight_decay", "betas",
                                          "momentum", "clip", "autocast"}
    assert stream.kind == "stream" and stream.dump()["train"] == {"autocast": "auto"}
    assert scale.train.steps == 300  # the worker still gets a whole TrainSpec


# --- overrides ------------------------------------------------------------------------------

def yaml_edit(path: str, value):
    spec = tiny_spec(models=[{"name": "gru", "params": {"d_model": 8}},
                             {"name": "lstm", "params": {"d_model": 8}}])
    set_path(spec, path, value)
    return spec


@pytest.mark.parametrize("flag, path, value", [
    ("train.steps=7", "train.steps", 7),
    ("train.lr=3e-4", "train.lr", 3e-4),
    ("models.lstm.params.d_model=16", "models.1.params.d_model", 16),
    ("tasks.0.seq_lens=[6, 12]", "tasks.0.seq_lens", [6, 12]),
    ("measure.threads=1", "measure.threads", 1),
], ids=["int", "float-1e-4", "named-item", "list", "new-key"])
def test_set_changes_config_hashes_exactly_as_the_same_yaml_edit(flag, path, value):
    base = yaml_edit("name", "tiny")
    by_flag = expand(parse_suite(base, overrides=Overrides.from_flags([flag])))
    by_yaml = expand(parse_suite(yaml_edit(path, value)))
    assert [j.job_id for j in by_flag] == [j.job_id for j in by_yaml]
    assert {j.job_id for j in by_flag} != {j.job_id for j in expand(parse_suite(base))}


@pytest.mark.parametrize("flag, fragments", [
    ("train.steps=1.5", ["train.steps", "1.5", "valid integer"]),
    ("train.steps=true", ["train.steps", "True", "valid integer"]),
    ("train.lr='3e-3'", ["train.lr", "'3e-3'", "valid number"]),
    ("train.epochs=3", ["train.epochs", "unknown key"]),
    ("models.rnn.params.d_model=8", ["--set", "no item named 'rnn'"]),
    ("train.steps", ["--set", "PATH=VALUE"]),
    ("tasks.5.seq_lens=[1]", ["--set", "index 5 is out of range"]),
], ids=["float-for-int", "bool-for-int", "string-for-float", "unknown", "no-such-model",
        "no-equals", "bad-index"])
def test_a_bad_override_is_one_line_naming_field_value_and_what_is_allowed(flag, fragments):
    with pytest.raises(SpecError) as err:
        parse_suite(yaml_edit("name", "tiny"), overrides=Overrides.from_flags([flag]))
    text = str(err.value)
    assert "\n" not in text and all(f in text for f in fragments), text


def test_model_task_and_seed_filters_narrow_the_sweep_without_changing_hashes():
    base = yaml_edit("name", "tiny")
    every = {j.job_id: j for j in expand(parse_suite(base))}
    only = expand(parse_suite(base, overrides=Overrides.from_flags(models="lstm", seeds="0")))
    assert {j.model.name for j in only} == {"lstm"} and {j.seed for j in only} == {0}
    assert all(j.job_id in every for j in only)
    with pytest.raises(SpecError, match=r"--models.*'rnn'.*it has gru, lstm"):
        parse_suite(base, overrides=Overrides.from_flags(models="rnn"))
    with pytest.raises(SpecError, match="--seeds"):
        Overrides.from_flags(seeds="0,-1")


def test_the_run_records_its_overrides_in_suite_json_and_in_every_row(tmp_path):
    overrides = Overrides.from_flags(["train.steps=3"], models="gru")
    suite = parse_suite(tiny_spec(), overrides=overrides)
    assert overrides.describe() == ["--set train.steps=3", "--models gru"]
    sweep = plan(suite, "spec", tmp_path / "out", overrides)
    store = ResultStore(tmp_path / "out")
    store.open_for(suite.name, "h" * 64, suite.dump(), overrides.describe())
    row = new_row(sweep.jobs[0], CONTEXT.model_copy(update={
        "overrides": tuple(overrides.describe())}))
    assert row.overrides == ["--set train.steps=3", "--models gru"]
    manifest = json.loads((tmp_path / "out" / "suite.json").read_text())
    assert manifest["overrides"] == ["--set train.steps=3", "--models gru"]
    store.close()


def test_dry_run_marks_recorded_jobs_and_takes_overrides(tmp_path, capsys):
    spec = tmp_path / "tiny.yaml"
    spec.write_text(yaml.safe_dump(tiny_spec()))
    assert main(["run", str(spec), "--dry-run", "--seeds", "0", "-o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert "1 jobs; 0 already recorded, 1 to run" in out and "seed=0" in out
    assert not (tmp_path / "o").exists()


# --- strict params --------------------------------------------------------------------------

@pytest.mark.parametrize("params, fragments", [
    ({"d_model": 16, "n_heads": 4.5}, ["models[0].params.n_heads", "4.5", "valid integer"]),
    ({"d_model": 16, "n_heads": True}, ["models[0].params.n_heads", "True", "valid integer"]),
    ({"d_model": 16, "n_heads": "4"}, ["models[0].params.n_heads", "'4'", "valid integer"]),
    ({"d_model": 16, "positions": "alibi"}, ["positions", "'alibi'", "'rotary'"]),
    ({"d_model": 8.0}, ["models[0].params.d_model", "8.0", "valid integer"]),
    ({"d_model": True}, ["models[0].params.d_model", "True", "valid integer"]),
    ({"d_model": 16, "n_layers": 2.5}, ["models[0].params.n_layers", "2.5", "valid integer"]),
    ({"d_model": 16, "mlp_ratio": math.nan}, ["models[0].params.mlp_ratio", "finite number"]),
    ({"d_model": 16, "attn_dropout": 1.5}, ["models[0].params", "attn_dropout"]),
    ({"param_budget": 10}, ["models[0].params.param_budget", "10", "parameters"]),
    ({"param_budget": 10**4, "d_model": 16.5}, ["d_model", "16.5"]),
], ids=["float-heads", "bool-heads", "string-heads", "bad-choice", "float-width",
        "bool-width", "float-layers", "nan-ratio", "range", "budget-too-small", "float-mixed"])
def test_model_params_are_checked_strictly_at_spec_load(params, fragments):
    with pytest.raises(SpecError) as err:
        parse_suite(tiny_spec(models=[{"name": "transformer", "params": params}]))
    text = str(err.value)
    assert "\n" not in text and all(f in text for f in fragments), text


@pytest.mark.parametrize("params, fragments", [
    ({"series": [1]}, ["tasks[0].params.series", "[1]", "valid string"]),
    ({"series": "co2", "horizon": "2"}, ["tasks[0].params.horizon", "'2'", "valid integer"]),
], ids=["list-for-str", "string-for-int"])
def test_task_params_are_checked_strictly_at_spec_load(params, fragments):
    spec = tiny_spec(tasks=[{"name": "forecast", "seq_lens": [24], "params": params}])
    with pytest.raises(SpecError) as err:
        parse_suite(spec)
    assert all(f in str(err.value) for f in fragments), str(err.value)


def test_warmup_longer_than_training_is_refused():
    with pytest.raises(SpecError, match=r"train.warmup_steps.*at most steps=4"):
        parse_suite(tiny_spec(train={"steps": 4, "warmup_steps": 9}))


def test_nightly_refuses_a_scale_spec_as_run_does(capsys):
    assert main(["nightly", "--spec", "scale-cpu", "--skip-gate", "--history", "/nonexistent"
                 ]) == 2
    assert "is kind: scale; seqbench nightly runs kind: train" in capsys.readouterr().err
    assert main(["run", "scale-cpu"]) == 2
    assert "is kind: scale; seqbench run runs kind: train" in capsys.readouterr().err
    assert main(["scale", "quick"]) == 2
    assert "is kind: train; seqbench scale runs kind: scale" in capsys.readouterr().err


# --- rows are checked when they are written -------------------------------------------------

def test_a_row_field_that_is_not_declared_is_refused_at_once():
    row = new_row(tiny_jobs()[0], CONTEXT)
    with pytest.raises(AttributeError, match="'mem' is not a row field"):
        row.update(mem=5)
    row.update(metric_anything=0.5)  # metric fields are declared by the task
    assert row.to_dict()["metric_anything"] == 0.5


def test_a_row_that_fails_the_schema_check_becomes_an_error_row_and_the_sweep_goes_on(tmp_path):
    from seqbench.execution.sweep import run_sweep

    class Broken:
        name = "broken"

        def run(self, jobs, context, on_row):
            for job in jobs:
                row = new_row(job, context)
                on_row(row.update(status="ok", wall_s=1.0, peak_mem_bytes=-1))

    suite = parse_suite(tiny_spec())
    sweep = run_sweep(plan(suite, "spec", tmp_path / "out"), Broken())
    assert [r.status for r in sweep.written] == ["error", "error"]
    assert all("failed the schema check" in r.error and "peak_mem_bytes = -1" in r.error
               for r in sweep.written)
    from seqbench.recording.validate import validate_path

    assert validate_path(tmp_path / "out") == (2, [])
