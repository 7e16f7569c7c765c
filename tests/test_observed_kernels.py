"""Kernel paths observed in a profiler trace (seqbench/worker/kernels_seen.py): the SDPA
kernel, the RNN implementation and seqbench's fused CPU kernels are seen on CPU; a claim the
trace contradicts is replaced by what ran; paths without a signature stay inferred; mamba-ssm's
paths are told apart by the kernels they launch (simulated here: the stand-in kernels open
profiler ranges named like the CUDA kernels CUPTI would report); the probe leaves the random
streams alone; every path a mixer reports is one it declares.
"""

from __future__ import annotations

import sys

import pytest
import torch

from seqbench.worker import backends
from seqbench.worker.kernels_seen import (
    BY_PATH,
    decide,
    observe,
    observe_kernel_path,
    observe_step_kernel_path,
)
from seqbench.worker.models import MODELS, IOSpec, build_model
from seqbench.worker.models.ops import native

TOKENS = IOSpec("tokens", 10, 10, per_position=True)
CPU = torch.device("cpu")
FUSED = native.library() is not None


def model(name: str, **params):
    cls = MODELS[name].load()
    step = cls.d_model_multiple(cls.Config(**{k: v for k, v in params.items()
                                               if k in cls.Config.__dataclass_fields__}))
    torch.manual_seed(0)
    return build_model(name, {"d_model": -(-16 // step) * step, "n_layers": 2, **params}, TOKENS)


X = torch.randint(0, 10, (2, 12), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("name,params,path", [
    ("transformer", {}, "sdpa-flash"),
    ("transformer", {"sdpa": "math"}, "sdpa-math"),
    ("transformer_math", {}, "sdpa-math"),
    ("rnn", {}, "aten-cpu"), ("lstm", {}, "aten-cpu"), ("gru", {}, "aten-cpu")])
def test_sdpa_and_rnn_kernels_are_observed_on_cpu(name, params, path):
    assert observe_kernel_path(model(name, **params), X, CPU) == (path, "observed")


@pytest.mark.skipif(not FUSED, reason="fused CPU kernels unavailable")
@pytest.mark.parametrize("name,path", [("mamba", "cpu-fused-scan"), ("mamba2", "cpu-fused-ssd"),
                                       ("mingru", "cpu-fused-gated-scan"),
                                       ("minlstm", "cpu-fused-gated-scan"),
                                       ("lru", "cpu-fused-linear-scan")])
def test_fused_cpu_kernels_are_observed(name, path):
    assert observe_kernel_path(model(name), X, CPU) == (path, "observed")


@pytest.mark.parametrize("name,params,path", [
    ("mamba", {"scan": "chunked"}, "torch-chunked-scan"), ("mamba2", {"scan": "chunked"},
                                                           "torch-ssd"),
    ("s4d", {}, "fft-conv"), ("gla", {}, "torch-chunked-gla")])
def test_paths_without_a_signature_are_inferred(name, params, path):
    assert observe_kernel_path(model(name, **params), X, CPU) == (path, "inferred")


def lying(m, claim: str):
    """A call of ``m`` after which every mixer claims ``claim``, whatever ran."""
    def run():
        m(X)
        for mixer in m.mixers:
            mixer.kernel_path = claim
    return run


@pytest.mark.parametrize("name,params,claim,truth", [
    ("transformer", {"sdpa": "math"}, "sdpa-flash", "sdpa-math"),
    ("lstm", {}, "cudnn", "aten-cpu"),
    pytest.param("mamba", {}, "torch-chunked-scan", "cpu-fused-scan",
                 marks=pytest.mark.skipif(not FUSED, reason="fused CPU kernels unavailable"))])
def test_a_claim_the_trace_contradicts_is_replaced_by_what_ran(name, params, claim, truth):
    m = model(name, **params)
    obs = observe(m, lying(m, claim), CPU)
    assert (obs.path, obs.source, obs.claimed) == (truth, "observed", claim)


def test_the_probe_leaves_random_streams_and_mode_alone():
    m = model("transformer", dropout=0.5)  # residual dropout draws random numbers
    m.train()
    before = torch.random.get_rng_state()
    path, source = observe_kernel_path(m, X, CPU)
    assert torch.equal(torch.random.get_rng_state(), before)
    assert m.training and (path, source) == ("sdpa-flash", "observed")


def test_a_step_is_observed_as_its_own_path():
    m = model("gru").eval()
    state = m.init_state(2, CPU, torch.float32)
    assert observe_step_kernel_path(m, X[:, 0], state, CPU) == ("aten-cpu", "observed")


def test_decide_needs_every_pattern_and_no_excluded_one():
    sig = BY_PATH["mamba_ssm-selective_scan_fn+torch-conv1d"]
    label = "seqbench::mamba_ssm.selective_scan_fn"
    kernel = "void selective_scan_fwd_kernel<Selective_Scan_fwd_kernel_traits<32, 4>>(SSMParams)"
    assert sig.matches({label, kernel}, CPU)
    assert not sig.matches({label}, CPU)  # our own range alone is not a kernel seen
    assert not sig.matches({label, kernel, "void causal_conv1d_fwd_kernel<...>"}, CPU)
    claims = BY_PATH  # every claim with a signature and no evidence stays inferred
    for path in claims:
        assert decide(path, (), set(), CPU) == (path, "inferred", [])


# --- mamba-ssm's paths, with the kernel names CUPTI would report ---------------------------------
def emitting(fn, *kernels):
    """``fn`` preceded by profiler ranges named like the CUDA kernels it launches."""
    def run(*args, **kwargs):
        for name in kernels:
            with torch.profiler.record_function(name):
                pass
        return fn(*args, **kwargs)
    return run


@pytest.fixture
def kernels_named(stand_ins):
    import test_mamba_ssm_paths as S

    mods = sys.modules
    ssi = mods["mamba_ssm.ops.selective_scan_interface"]
    stand_ins.setattr(ssi, "mamba_inner_fn", emitting(
        S.mamba_inner_fn, "void selective_scan_fwd_kernel<traits>(SSMParamsBase)",
        "void causal_conv1d_fwd_kernel<traits>(ConvParamsBase)"))
    stand_ins.setattr(ssi, "selective_scan_fn", emitting(
        S.selective_scan_fn, "void selective_scan_fwd_kernel<traits>(SSMParamsBase)"))
    conv = mods["causal_conv1d"]
    stand_ins.setattr(conv, "causal_conv1d_fn", emitting(
        S.causal_conv1d_fn, "void causal_conv1d_fwd_kernel<traits>(ConvParamsBase)"))
    stand_ins.setattr(conv, "causal_conv1d_update", emitting(
        S.causal_conv1d_update, "void causal_conv1d_update_kernel<traits>(ConvParamsBase)"))
    ssu = mods["mamba_ssm.ops.triton.selective_state_update"]
    stand_ins.setattr(ssu, "selective_state_update", emitting(
        S.selective_state_update, "_selective_scan_update_kernel"))
    ssd = mods["mamba_ssm.ops.triton.ssd_combined"]
    stand_ins.setattr(ssd, "mamba_split_conv1d_scan_combined", emitting(
        S.mamba_split_conv1d_scan_combined, "_chunk_scan_fwd_kernel",
        "void causal_conv1d_channellast_fwd_kernel<traits>(ConvParamsBase)",
        "_layer_norm_fwd_1pass_kernel"))
    return stand_ins


@pytest.fixture
def stand_ins(monkeypatch):
    from test_mamba_ssm_paths import install_stand_ins

    install_stand_ins(monkeypatch)
    yield monkeypatch
    backends.import_error.cache_clear()


def test_mamba_ssm_paths_are_observed_and_told_apart(kernels_named):
    m = model("mamba", backend="mamba_ssm")
    assert observe_kernel_path(m, X, CPU) == ("mamba_ssm-mamba_inner_fn+causal_conv1d",
                                              "observed")
    with torch.no_grad():
        _, state = m.prefill(X)
    assert m.kernel_path == "mamba_ssm-selective_scan_fn+causal_conv1d"
    assert observe_step_kernel_path(m, X[:, 0], state, CPU) == (
        "mamba_ssm-selective_state_update+causal_conv1d_update", "observed")
    m2 = model("mamba2", backend="mamba_ssm", headdim=8, d_state=8)
    assert observe_kernel_path(m2, X, CPU) == ("mamba_ssm-mamba_split_conv1d_scan_combined",
                                               "observed")


def test_mamba_ssm_paths_without_kernel_names_are_inferred(stand_ins):
    m = model("mamba", backend="mamba_ssm")  # the stand-ins launch no kernels
    assert observe_kernel_path(m, X, CPU) == ("mamba_ssm-mamba_inner_fn+causal_conv1d",
                                              "inferred")


# --- the declared paths --------------------------------------------------------------------------
@pytest.mark.parametrize("name", [n for n in MODELS.names() if MODELS[n].load().kernel_paths])
def test_every_reported_path_is_declared(name):
    m = model(name).eval()
    declared = type(m.mixers[0]).kernel_paths
    with torch.no_grad():
        m(X)
        assert m.mixers[0].kernel_path in declared
        if m.supports_step:
            _, state = m.prefill(X)
            assert m.mixers[0].kernel_path in declared
            m.step(X[:, 0], state)
            assert m.mixers[0].kernel_path in declared
    # every declared path can be observed, or is a pure-PyTorch path (inferred by design)
    assert all(p in BY_PATH or p.startswith("torch-") for p in declared)
