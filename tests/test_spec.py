"""Spec validation: every bad input is one line naming field, value and what is allowed (exit 2)."""

import hashlib

import pytest
import yaml

from seqbench.cli import main
from seqbench.config import expand, load_suite, parse_suite
from seqbench.errors import SpecError

GOOD = {
    "name": "tiny",
    "seeds": [0, 1],
    "models": [{"name": "gru", "params": {"d_model": 16}},
               {"name": "transformer", "params": {"d_model": 16, "n_heads": 2}}],
    "tasks": [{"name": "adding", "seq_lens": [10, 20]}, {"name": "copy", "seq_lens": [5]}],
    "train": {"steps": 5},
}


def with_(path, value, base=GOOD):
    """A deep copy of ``base`` with ``value`` set at a dotted ``path`` (None deletes)."""
    spec = yaml.safe_load(yaml.safe_dump(base))
    *parents, last = path.split(".")
    node = spec
    for key in parents:
        node = node[int(key)] if key.isdigit() else node[key]
    if value is None:
        del node[last]
    elif last.isdigit():
        node[int(last)] = value
    else:
        node[last] = value
    return spec


def test_sweep_is_tasks_by_lengths_by_models_by_seeds():
    jobs = expand(parse_suite(GOOD))
    assert len(jobs) == (2 + 1) * 2 * 2
    assert [(j.task.seq_len, j.model.name, j.seed) for j in jobs[:4]] == [
        (10, "gru", 0), (10, "gru", 1), (10, "transformer", 0), (10, "transformer", 1)]
    assert len({j.job_id for j in jobs}) == len(jobs)


def test_config_hash_ignores_the_seed_but_not_the_config():
    jobs = expand(parse_suite(GOOD))
    assert jobs[0].config_hash == jobs[1].config_hash  # seeds 0 and 1
    assert jobs[0].config_hash != jobs[2].config_hash  # another model
    changed = expand(parse_suite(with_("train.lr", 1e-3)))
    assert changed[0].config_hash != jobs[0].config_hash


def test_task_version_enters_the_hash(monkeypatch):
    from seqbench.worker.data.synthetic import Adding

    before = expand(parse_suite(GOOD))[0].config_hash
    monkeypatch.setattr(Adding, "version", Adding.version + 1)
    assert expand(parse_suite(GOOD))[0].config_hash != before


def test_per_task_train_override():
    spec = with_("tasks.1.train", {"steps": 7})
    jobs = expand(parse_suite(spec))
    assert {j.train.steps for j in jobs if j.task.name == "copy"} == {7}
    assert {j.train.steps for j in jobs if j.task.name == "adding"} == {5}


BAD = [
    ("tasks.0.name", "adition", "tasks[0].name", "known tasks"),
    ("models.0.name", "lstmm", "models[0].name", "known models"),
    ("epochs", 3, "epochs", "allowed keys"),
    ("train.stepz", 3, "train.stepz", "allowed keys"),
    ("tasks.0.seq_lens", [10, 0], "tasks[0].seq_lens[1]", "greater than 0"),
    ("tasks.0.seq_lens", [-5], "tasks[0].seq_lens[0]", "greater than 0"),
    ("train.batch_size", 0, "train.batch_size", "greater than 0"),
    ("train.steps", -1, "train.steps", "greater than 0"),
    ("train.steps", "many", "train.steps", "integer"),
    ("seeds", [1, 1], "seeds", "repeat a seed"),
    ("seeds", [], "seeds", "at least 1"),
    ("tasks", [], "tasks", "at least 1"),
    ("models", [], "models", "at least 1"),
    ("tasks.0.seq_lens", [], "tasks[0].seq_lens", "at least 1"),
    ("models.0.params", {"d_model": 16, "hidden": 3}, "models[0].params.hidden",
     "unknown parameter of gru; allowed:"),
    ("models.1.params", {"d_model": 20, "n_heads": 4}, "models[1].params.d_model", "multiple of 8"),
    ("tasks.1.train", {"lr": -1}, "tasks[1].train.lr", "greater than 0"),
    ("device", "tpu", "device", "'auto', 'cpu' or 'cuda'"),
]


@pytest.mark.parametrize("path,value,field,allowed", BAD, ids=[b[2] + "=" + str(b[1]) for b in BAD])
def test_bad_spec_names_field_value_and_what_is_allowed(path, value, field, allowed):
    with pytest.raises(SpecError) as err:
        parse_suite(with_(path, value))
    message = str(err.value)
    assert err.value.field == field
    assert allowed in message
    assert "\n" not in message


def test_length_beyond_a_positional_table_is_refused():
    spec = with_("models.1.params", {"d_model": 16, "n_heads": 2, "positions": "learned",
                                     "max_len": 24})
    with pytest.raises(SpecError, match=r"tasks\[1\].seq_lens.*max_len=24"):
        parse_suite(spec)  # copy T=5 has input length 25


def write(tmp_path, spec, name="spec.yaml"):
    path = tmp_path / name
    path.write_text(spec if isinstance(spec, str) else yaml.safe_dump(spec))
    return path


def tree_digest(root):
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        h.update(str(p.relative_to(root)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


@pytest.mark.parametrize("text,needle", [
    ("name: [unclosed", "not valid YAML"),
    ("- just\n- a list\n", "must be a YAML mapping"),
    ("", "must be a YAML mapping"),
])
def test_unreadable_specs_exit_2_with_one_line(tmp_path, capsys, text, needle):
    code = main(["run", str(write(tmp_path, text)), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and needle in err and err.count("\n") == 1
    assert not (tmp_path / "out").exists()


def test_missing_spec_file_exits_2(tmp_path, capsys):
    assert main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot be read" in capsys.readouterr().err


def test_bad_spec_leaves_existing_results_untouched(tmp_path, capsys):
    out = tmp_path / "results"
    (out / "jobs").mkdir(parents=True)
    (out / "jobs" / "abc-s0.json").write_text('{"job_id": "abc-s0", "status": "ok"}')
    (out / "results.jsonl").write_text('{"job_id": "abc-s0", "status": "ok"}\n')
    before = tree_digest(out)
    code = main(["run", str(write(tmp_path, with_("train.steps", 0))), "-o", str(out)])
    assert code == 2 and "train.steps" in capsys.readouterr().err
    assert tree_digest(out) == before


def test_results_dir_of_another_suite_is_refused(tmp_path, capsys):
    out = tmp_path / "results"
    out.mkdir()
    (out / "suite.json").write_text('{"suite": "other", "spec_hash": "x"}')
    before = tree_digest(out)
    assert main(["run", str(write(tmp_path, GOOD)), "-o", str(out)]) == 2
    assert "suite 'other'" in capsys.readouterr().err
    assert tree_digest(out) == before


def exit_code(argv):
    try:
        return main(argv)
    except SystemExit as exc:  # argparse exits itself
        return exc.code


@pytest.mark.parametrize("argv,needle", [(["run", "--workers", "0"], "--workers"),
                                         (["run", "--frobnicate"], "--frobnicate"),
                                         (["frobnicate"], "frobnicate")])
def test_bad_flag_exits_2_with_one_line(capsys, argv, needle):
    assert exit_code(argv) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1


def test_shipped_quick_spec_loads_by_name_from_anywhere(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    suite, path = load_suite(None)
    assert suite.name == "quick" and path.name == "quick.yaml"
    assert len(expand(suite)) > 0
