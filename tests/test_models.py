"""Every registered model forwards and backwards, is causal, streams, and can be sized."""

import pytest
import torch

from seqbench.catalog import ModelEntry, Registry
from seqbench.errors import SpecError
from seqbench.worker.data import build_task
from seqbench.worker.models import MODELS, build_model, count_params

CORE = ["rnn", "lstm", "gru", "transformer"]
ALL = MODELS.names()
BACKBONES = ["shared", "bare"]
# the bare backbone of every other model is checked in the slow run (-m slow): bare changes
# only the scaffolding around the mixer, which these models exercise in the default run
BARE_DEFAULT = {*CORE, "tcn", "s4d", "mamba"}


def with_backbones(names, backbones=BACKBONES):
    """(name, backbone) cases; the bare ones outside BARE_DEFAULT marked slow."""
    return [pytest.param(n, b, marks=() if b == "shared" or n in BARE_DEFAULT
                         else pytest.mark.slow) for n in names for b in backbones]


def tiny(name, task="copy", T=6, **params):
    """A 2-layer model of width 16 (or the smallest width the mixer allows); ``backbone`` in
    ``params`` picks the shared or the bare backbone."""
    task = build_task(task, T)
    cls = MODELS[name].load()
    step = cls.d_model_multiple(cls.Config())
    d_model = -(-16 // step) * step
    torch.manual_seed(0)
    return task, build_model(name, {"d_model": d_model, "n_layers": 2, **params}, task.info.io)


@pytest.mark.parametrize(("name", "backbone"), with_backbones(ALL))
@pytest.mark.parametrize("task_name", ["copy", "adding"])
def test_forward_backward_at_tiny_size(name, task_name, backbone):
    task, model = tiny(name, task_name, backbone=backbone)
    if model.mixers[0].unavailable_reason(model.mixers[0].config, torch.device("cpu")):
        pytest.skip("backend unavailable here")
    x, y = task.sample(torch.Generator().manual_seed(0), 3, torch.device("cpu"))
    out = model(x)
    expected = (3, task.info.input_len, 10) if task_name == "copy" else (3, 1)
    assert out.shape == expected
    task.loss(out, y).backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert model.kernel_path not in ("", "unknown")


@pytest.mark.parametrize(("name", "backbone"), with_backbones(ALL))
def test_causal_models_do_not_see_the_future(name, backbone):
    task, model = tiny(name, "copy", T=10, backbone=backbone)
    model.eval()
    x, _ = task.sample(torch.Generator().manual_seed(1), 2, torch.device("cpu"))
    t = 17
    x2 = x.clone()
    x2[:, t:] = (x2[:, t:] + 3) % 10  # change the future only
    with torch.no_grad():
        a, b = model(x), model(x2)
    assert torch.allclose(a[:, :t], b[:, :t], atol=1e-5)
    assert not torch.allclose(a[:, t:], b[:, t:], atol=1e-5)


@pytest.mark.parametrize(("name", "backbone"),
                         with_backbones([n for n in ALL if MODELS[n].load().supports_step]))
def test_streaming_steps_match_the_full_sequence(name, backbone):
    task, model = tiny(name, "copy", T=8, backbone=backbone)
    model.eval()
    x, _ = task.sample(torch.Generator().manual_seed(2), 2, torch.device("cpu"))
    with torch.no_grad():
        full = model(x)
        state = model.init_state(2, torch.device("cpu"), torch.float32)
        steps = []
        for i in range(x.shape[1]):
            out, state = model.step(x[:, i], state)
            steps.append(out)
    assert torch.allclose(torch.stack(steps, 1), full, atol=1e-4)


def test_rnn_state_is_constant_and_kv_cache_grows_linearly():
    _, rnn = tiny("lstm")
    _, attn = tiny("transformer")
    assert rnn.state_size(1024) == rnn.state_size(16) == 2 * 2 * 16 * 4  # (h, c) x layers x D
    assert attn.state_size(1024) == 64 * attn.state_size(16)


@pytest.mark.parametrize("name", CORE)
@pytest.mark.parametrize("budget", [20_000, 70_000])
def test_param_budget_sizes_the_model_close_to_budget(name, budget):
    task = build_task("adding", 10)
    model = build_model(name, {"param_budget": budget}, task.info.io)
    n = count_params(model)
    step = model.mixers[0].d_model_multiple(model.mixers[0].config)
    bigger = build_model(name, {"d_model": model.cfg.d_model + step}, task.info.io)
    assert n <= budget < count_params(bigger)  # the largest model within budget
    assert n > 0.8 * budget


def test_param_budget_too_small_is_bad_input():
    task = build_task("adding", 10)
    with pytest.raises(SpecError, match="param_budget"):
        build_model("transformer", {"param_budget": 10}, task.info.io)


def test_pooled_head_reads_the_last_position_by_default():
    task, model = tiny("gru", "adding", T=12)
    model.eval()
    x, _ = task.sample(torch.Generator().manual_seed(3), 2, torch.device("cpu"))
    with torch.no_grad():
        full = model(x)
        prefix = model(x[:, :-1])
    assert not torch.allclose(full, prefix)  # the last position matters


def test_attention_reports_the_kernel_that_ran_and_dropout_forces_math_on_cpu():
    task, model = tiny("transformer", attn_dropout=0.0)
    x, _ = task.sample(torch.Generator().manual_seed(0), 2, torch.device("cpu"))
    model.train()
    model(x)
    assert model.kernel_path == "sdpa-flash"
    _, dropped = tiny("transformer", attn_dropout=0.1)
    dropped.train()
    dropped(x)
    assert dropped.kernel_path == "sdpa-math"
    dropped.eval()
    dropped(x)
    assert dropped.kernel_path == "sdpa-flash"  # no dropout at inference


def test_learned_positions_refuse_lengths_beyond_the_table():
    task, model = tiny("transformer", positions="learned", max_len=20)
    x, _ = task.sample(torch.Generator().manual_seed(0), 1, torch.device("cpu"))  # length 26
    with pytest.raises(ValueError, match="max_len"):
        model(x)


def test_unknown_model_names_what_exists():
    with pytest.raises(KeyError) as err:
        MODELS["lstmm"]
    assert all(n in str(err.value) for n in CORE)


def test_registry_refuses_duplicate_names():
    reg = Registry("model")
    reg.add(ModelEntry("a", "x:y"))
    with pytest.raises(ValueError, match="duplicate"):
        reg.add(ModelEntry("a", "x:z"))


def test_unknown_mixer_key_is_refused():
    task = build_task("adding", 10)
    with pytest.raises(SpecError, match="n_head"):
        build_model("transformer", {"n_head": 4}, task.info.io)
