"""The ``backbone: shared | bare`` model setting: what a bare model is made of, that it computes
exactly the paper's stack, that it sizes, streams and records like a shared one, that a bare
model given a setting it has no place for is refused, and that reports tell the two apart."""

from __future__ import annotations

import pytest
import torch
import yaml
from conftest import CONTEXT, tiny_jobs, tiny_spec, write_results_dir
from torch import nn

from seqbench.cli import main
from seqbench.config import parse_suite
from seqbench.errors import SpecError
from seqbench.recording.validate import check_row
from seqbench.results.load import load
from seqbench.results.stats import aggregate
from seqbench.worker.data import build_task
from seqbench.worker.job import run_job
from seqbench.worker.models import MODELS, build_model, count_params, mixer_class
from seqbench.worker.models.base import BareLayer, Block, Mixer

CPU = torch.device("cpu")
SCAFFOLDING = (nn.LayerNorm, nn.RMSNorm, nn.Dropout, nn.GELU, nn.Sequential, Block)


def backbone_modules(model: nn.Module) -> list[nn.Module]:
    """The model's modules outside its mixers (what the backbone itself adds)."""
    inside = {id(m) for mixer in model.modules() if isinstance(mixer, Mixer)
              for m in mixer.modules()}
    return [m for m in model.modules() if id(m) not in inside]


def width(name: str, d: int = 16) -> int:
    cls = mixer_class(name)
    step = cls.d_model_multiple(cls.Config())
    return -(-d // step) * step


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn", "tcn", "transformer", "s4d", "mamba"])
def test_bare_has_no_norm_mlp_dropout_or_block_around_its_mixers(name):
    io = build_task("adding", 8).info.io
    params = {"d_model": width(name), "n_layers": 2}
    bare = build_model(name, {**params, "backbone": "bare"}, io)
    shared = build_model(name, params, io)
    kinds = [type(m) for m in backbone_modules(bare)]
    assert not [k for k in kinds if issubclass(k, SCAFFOLDING)]
    assert kinds.count(BareLayer) == 2 and sum(isinstance(m, Mixer) for m in bare.modules()) == 2
    assert {type(m) for m in backbone_modules(shared)} & {nn.LayerNorm, Block, nn.Sequential}
    assert count_params(bare) < count_params(shared)  # the same width without norms and MLPs


@pytest.mark.parametrize(("task_name", "T"), [("adding", 9), ("copy", 5)])
def test_bare_one_layer_lstm_is_head_of_lstm_of_the_input_representation(task_name, T):
    task = build_task(task_name, T)
    torch.manual_seed(0)
    model = build_model("lstm", {"d_model": 12, "backbone": "bare"}, task.info.io).eval()
    x, _ = task.sample(torch.Generator().manual_seed(0), 3, CPU)
    lstm = model.mixers[0].rnn
    assert isinstance(lstm, nn.LSTM) and lstm.num_layers == 1
    with torch.no_grad():
        h, _ = lstm(model.embed(x))  # (B, L, D)
        by_hand = model.head(h[:, -1] if not task.info.per_position else h)
        assert torch.equal(model(x), by_hand)
        if task.info.per_position:  # and the shared model is not that
            shared = build_model("lstm", {"d_model": 12}, task.info.io).eval()
            shared.load_state_dict(model.state_dict(), strict=False)
            h, _ = shared.mixers[0].rnn(shared.embed(x))
            assert not torch.allclose(shared(x), shared.head(h), atol=1e-3)


def test_bare_pooled_head_uses_the_pooling_setting():
    task = build_task("adding", 9)
    torch.manual_seed(0)
    model = build_model("gru", {"d_model": 8, "backbone": "bare", "pooling": "mean"},
                        task.info.io).eval()
    x, _ = task.sample(torch.Generator().manual_seed(1), 2, CPU)
    with torch.no_grad():
        h, _ = model.mixers[0].rnn(model.embed(x))
        assert torch.equal(model(x), model.head(h.mean(dim=1)))


@pytest.mark.parametrize("name", ["lstm", "gru", "rnn", "tcn"])
def test_budget_sizing_of_a_bare_model_is_the_widest_within_budget(name):
    io = build_task("adding", 50).info.io
    model = build_model(name, {"param_budget": 20_000, "backbone": "bare"}, io)
    shared = build_model(name, {"param_budget": 20_000}, io)
    n, d = count_params(model), model.cfg.d_model
    step = model.mixers[0].d_model_multiple(model.mixers[0].config)
    wider = build_model(name, {"d_model": d + step, "backbone": "bare"}, io)
    assert model.cfg.backbone == "bare" and not any(isinstance(m, Block) for m in model.modules())
    assert n <= 20_000 < count_params(wider) and n > 0.8 * 20_000
    assert d >= shared.cfg.d_model  # no MLPs or norms: at least as wide for the same budget


@pytest.mark.parametrize("name", ["lstm", "tcn", "s4d", "mamba", "transformer"])
def test_bare_streaming_prefill_then_steps_matches_the_full_forward(name):
    task = build_task("copy", 6)
    torch.manual_seed(0)
    model = build_model(name, {"d_model": width(name), "n_layers": 2, "backbone": "bare"},
                        task.info.io).eval()
    if not model.supports_step:
        pytest.skip(f"{name} has no step mode")
    x, _ = task.sample(torch.Generator().manual_seed(2), 2, CPU)
    split = x.shape[1] // 2
    with torch.no_grad():
        full = model(x)
        head, state = model.prefill(x[:, :split])
        rest = []
        for t in range(split, x.shape[1]):
            out, state = model.step(x[:, t], state)
            rest.append(out)
    assert torch.allclose(head, full[:, :split], atol=1e-4)
    assert torch.allclose(torch.stack(rest, 1), full[:, split:], atol=1e-4)


@pytest.mark.parametrize("key,value", [("mlp_ratio", 0.0), ("norm", "rmsnorm"), ("dropout", 0.1)])
def test_bare_with_a_scaffolding_setting_is_refused(key, value):
    with pytest.raises(SpecError, match=rf"models\[0\]\.params\.{key}: got .*backbone: bare"):
        parse_suite(tiny_spec(models=[{"name": "gru",
                                       "params": {"backbone": "bare", key: value}}]))
    parse_suite(tiny_spec(models=[{"name": "gru", "params": {key: value}}]))  # shared: fine


def test_seqbench_run_refuses_the_contradiction_with_one_line_and_exit_2(tmp_path, capsys):
    spec = tiny_spec(models=[{"name": "lstm", "params": {"backbone": "bare", "norm": "rmsnorm"}}])
    path = tmp_path / "bare.yaml"
    path.write_text(yaml.safe_dump(spec))
    out = tmp_path / "out"
    assert main(["run", str(path), "-o", str(out), "--no-report"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "models[0].params.norm" in err[0] and "'rmsnorm'" in err[0] and "bare" in err[0]
    assert not out.exists()


def test_an_unknown_backbone_is_refused_naming_both():
    with pytest.raises(SpecError, match=r"backbone.*shared.*bare"):
        parse_suite(tiny_spec(models=[{"name": "gru", "params": {"backbone": "plain"}}]))


def test_the_backbone_is_not_in_the_hash_unless_written():
    (shared,) = tiny_jobs(seeds=[0])
    (bare,) = tiny_jobs(seeds=[0], models=[{"name": "gru",
                                            "params": {"d_model": 8, "backbone": "bare"}}])
    assert "backbone" not in shared.model.params and bare.model.params["backbone"] == "bare"
    assert shared.config_hash != bare.config_hash


def test_rows_record_the_backbone_and_reports_label_bare_models_apart(tmp_path):
    rows = []
    for params in ({"d_model": 8}, {"d_model": 8, "backbone": "bare"}):
        for job in tiny_jobs(models=[{"name": "gru", "params": params}]):
            row = run_job(job, CONTEXT)
            assert row.status == "ok", row.error
            assert check_row(row.to_dict()) == []
            rows.append(row.to_dict())
    assert [r["backbone"] for r in rows] == ["shared", "shared", "bare", "bare"]
    assert rows[0]["param_count"] > rows[2]["param_count"]  # the same width, no MLP or norms
    old = {k: v for k, v in rows[0].items() if k != "backbone"}  # a row from before the field
    assert check_row(old) == []
    write_results_dir(tmp_path / "run", [old, *rows[1:]])
    frame = load(tmp_path / "run", warn=False)
    labels = {f"{b if isinstance(b, str) and b else '(absent)'}{s}": label
              for b, s, label in zip(frame["backbone"], frame["seed"], frame["label"],
                                     strict=True)}
    assert labels == {"(absent)0": "GRU", "shared1": "GRU", "bare0": "GRU (bare)",
                      "bare1": "GRU (bare)"}
    stats = aggregate(frame, ["metric_mse"])
    assert sorted(stats["label"]) == ["GRU", "GRU (bare)"]
    assert set(stats["n"]) == {2}  # each backbone's two seeds, never the four together
    means = {lab: frame[frame["label"] == lab]["metric_mse"].mean() for lab in stats["label"]}
    assert dict(zip(stats["label"], stats["mean"], strict=True)) == pytest.approx(means)
    assert not frame.attrs.get("notes") or not any("share this key" in n
                                                   for n in frame.attrs["notes"])


def test_every_registered_bare_model_is_embedding_mixers_and_head_only():
    io = build_task("copy", 4).info.io
    for name in MODELS.names():
        model = build_model(name, {"d_model": width(name), "n_layers": 2, "backbone": "bare"}, io)
        parts = [model.embed, *model.mixers, model.head]
        assert count_params(model) == sum(count_params(p) for p in parts), name
