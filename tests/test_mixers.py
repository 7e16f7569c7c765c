"""The new baseline mixers (TCN, minGRU, minLSTM, LRU, GLA, Hyena, xLSTM): every parallel form
against its naive reference (the step loop, or the direct / recurrent form) over lengths 1, odd
lengths and lengths that are no multiple of any chunk, for outputs and for input and parameter
gradients; streaming (steps, and prefill then steps) against the parallel forward; and the
facts each model's docstring states (receptive field, ring initialisation, state growth, FLOPs).

Tolerances: float64 kernels agree to 1e-10 of the largest magnitude (only summation order
differs); float32 to 1e-5 (kernels) or 1e-4 (whole models, after norms and GLUs).
"""

from __future__ import annotations

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from seqbench.errors import BackendUnavailable
from seqbench.worker.data import build_task
from seqbench.worker.models import MODELS
from seqbench.worker.models.base import state_nbytes
from seqbench.worker.models.gla import GLA, GLAConfig
from seqbench.worker.models.hyena import Hyena, HyenaConfig, direct_causal_conv, fft_causal_conv
from seqbench.worker.models.lru import LRU, LRUConfig
from seqbench.worker.models.minrnn import MinGRU, MinLSTM, MinRNNConfig
from seqbench.worker.models.ops import gla as gla_ops
from seqbench.worker.models.ops.gla import gla_chunked, gla_naive
from seqbench.worker.models.ops.linear_scan import (
    linear_scan,
    linear_scan_naive,
    log_linear_scan,
)
from seqbench.worker.models.ops.mlstm import mlstm_chunked, mlstm_naive
from seqbench.worker.models.tcn import TCN, TCNConfig, TemporalConvNet
from seqbench.worker.models.xlstm import XLSTM, XLSTMConfig

F64 = 1e-10
LENGTHS = [1, 2, 7, 19, 40]  # 19 and 40 are no multiple of the chunks used below (3, 4, 16)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny ops on a loaded 2-core machine run far faster on one thread (no spin-waiting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest |a - b| relative to the largest |b|."""
    return float((a - b).abs().max().detach() / b.abs().max().detach().clamp_min(1e-30))


def assert_same(fast, ref, inputs, tol):
    """Outputs of ``fast(*inputs)`` and ``ref(*inputs)`` agree, and so do their gradients."""
    leaves = [x.detach().clone().requires_grad_(x.is_floating_point() or x.is_complex())
              for x in inputs]
    out_f, out_r = fast(*leaves), ref(*leaves)
    assert rel(out_f, out_r) < tol
    w = torch.randn_like(out_r)
    gf = torch.autograd.grad((out_f * w.conj()).real.sum(), leaves, allow_unused=True)
    gr = torch.autograd.grad((out_r * w.conj()).real.sum(), leaves, allow_unused=True)
    assert_grads_agree(gf, gr, tol)


def assert_grads_agree(gf, gr, tol):
    """Gradients agree to ``tol`` of the largest gradient entry: a gradient that is zero, or
    nearly so, in exact arithmetic (the forget gate at L = 1) is compared on that scale."""
    assert [a is None for a in gf] == [b is None for b in gr]
    scale = max(float(b.abs().max()) for b in gr if b is not None)
    for a, b in zip(gf, gr, strict=True):
        if a is not None:
            assert float((a - b).abs().max()) <= tol * scale


# --- kernels -------------------------------------------------------------------------------

@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("chunk", [None, 3])
def test_chunked_linear_scan_matches_the_step_loop(L, chunk):
    gen = torch.Generator().manual_seed(L)
    a = torch.rand(2, L, 5, generator=gen, dtype=torch.float64)
    b = torch.randn(2, L, 5, generator=gen, dtype=torch.float64)
    assert_same(lambda a, b: linear_scan(a, b, chunk), lambda a, b: linear_scan_naive(a, b)[0],
                (a, b), F64)
    # time-invariant complex coefficients (the LRU's), and fp32
    lam = torch.polar(0.5 + 0.5 * torch.rand(1, 1, 5, generator=gen, dtype=torch.float64),
                      6 * torch.rand(1, 1, 5, generator=gen, dtype=torch.float64))
    bc = torch.randn(2, L, 5, generator=gen, dtype=torch.cdouble)
    assert_same(lambda a, b: linear_scan(a, b, chunk), lambda a, b: linear_scan_naive(a, b)[0],
                (lam, bc), F64)
    assert_same(lambda a, b: linear_scan(a, b, chunk), lambda a, b: linear_scan_naive(a, b)[0],
                (a.float(), b.float()), 1e-5)


def test_linear_scan_backward_passes_gradcheck():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 11, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    b = torch.randn(2, 11, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: linear_scan(a, b, 4), (a, b))
    a_bcast = torch.rand(1, 11, 1, generator=gen, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: linear_scan(a, b, 4), (a_bcast, b))
    lam = torch.polar(torch.rand(1, 1, 3, dtype=torch.float64) * 0.5 + 0.5,
                      torch.rand(1, 1, 3, dtype=torch.float64) * 6).requires_grad_()
    bc = torch.randn(2, 11, 3, dtype=torch.cdouble, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: linear_scan(a, b, 4), (lam, bc))


@pytest.mark.parametrize("L", LENGTHS)
def test_log_space_scan_matches_the_step_loop(L):
    gen = torch.Generator().manual_seed(L)
    a = torch.rand(2, L, 4, generator=gen, dtype=torch.float64) * 0.98 + 0.01
    b = torch.rand(2, L, 4, generator=gen, dtype=torch.float64) + 0.01
    assert_same(lambda la, lb: log_linear_scan(la, lb, chunk=4),
                lambda la, lb: linear_scan_naive(la.exp(), lb.exp())[0], (a.log(), b.log()), F64)


def test_chunked_log_scan_keeps_fp32_precision_over_long_sequences():
    """Over 4096 steps the unchunked heinsen form loses about 4e-4 in fp32; chunks keep 1e-5."""
    gen = torch.Generator().manual_seed(0)
    k = torch.randn(1, 4096, 8, generator=gen, dtype=torch.float64)  # minGRU gate logits
    log_a, log_b = -torch.nn.functional.softplus(k), -torch.nn.functional.softplus(-k)
    ref = linear_scan_naive(log_a.exp(), log_b.exp())[0]
    a_star = torch.cumsum(log_a.float(), 1)
    unchunked = torch.exp(a_star + torch.logcumsumexp(log_b.float() - a_star, 1))
    assert rel(unchunked.double(), ref) > 5e-5  # the failure the chunks exist to avoid
    assert rel(log_linear_scan(log_a.float(), log_b.float()).double(), ref) < 1e-5


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("decay", ["per-key", "per-key-extreme", "per-head"])
@pytest.mark.parametrize("chunk", [4, 16])
def test_chunked_gla_matches_the_recurrence(L, decay, chunk, monkeypatch):
    gen = torch.Generator().manual_seed(L)
    B, H, K, V = 2, 3, 4, 5
    q, k = (torch.randn(B, L, H, K, generator=gen, dtype=torch.float64) for _ in range(2))
    v = torch.randn(B, L, H, V, generator=gen, dtype=torch.float64)
    logits = torch.randn(B, L, H, K, generator=gen, dtype=torch.float64)
    if decay == "per-key":  # data-dependent, down to about exp(-8) per step: factored scores
        log_a = torch.nn.functional.logsigmoid(3 * logits)
    elif decay == "per-key-extreme":  # about exp(-30) per step: the exact pairwise scores
        log_a = torch.nn.functional.logsigmoid(3 * logits - 30)
    else:
        log_a = torch.log(torch.tensor([[0.97], [0.5], [0.999]], dtype=torch.float64))
    pairwise = []
    monkeypatch.setattr(gla_ops, "per_key_scores",
                        lambda *a: pairwise.append(1) or gla_ops._PerKeyScores.apply(*a))
    s0 = torch.randn(B, H, K, V, generator=gen, dtype=torch.float64)
    assert_same(lambda q, k, v, a, s: gla_chunked(q, k, v, a, 0.5, chunk, s)[0],
                lambda q, k, v, a, s: gla_naive(q, k, v, a, 0.5, s)[0], (q, k, v, log_a, s0), F64)
    assert_same(lambda q, k, v, a, s: gla_chunked(q, k, v, a, 0.5, chunk, s)[1],
                lambda q, k, v, a, s: gla_naive(q, k, v, a, 0.5, s)[1], (q, k, v, log_a, s0), F64)
    # about 30 per step: a chunk of 3 or more steps decays past FACTOR_RANGE (80)
    assert bool(pairwise) == (decay == "per-key-extreme" and min(chunk, L) >= 3)


def test_pairwise_gla_scores_pass_gradcheck():
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 3, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
            for _ in range(2))
    log_a = torch.nn.functional.logsigmoid(torch.randn(2, 3, 5, 4, generator=gen,
                                                       dtype=torch.float64))
    b = torch.cumsum(log_a, -2).requires_grad_()
    assert torch.autograd.gradcheck(gla_ops.per_key_scores, (q, k, b))


@pytest.mark.parametrize("L", LENGTHS)
@pytest.mark.parametrize("chunk", [4, 16])
def test_chunked_mlstm_matches_the_stabilised_recurrence(L, chunk):
    gen = torch.Generator().manual_seed(L)
    B, NH, DH = 2, 2, 4
    q, k, v = (torch.randn(B, L, NH, DH, generator=gen, dtype=torch.float64) for _ in range(3))
    i = 5 * torch.randn(B, L, NH, generator=gen, dtype=torch.float64)  # exp(i) up to e^15
    f = 3 * torch.randn(B, L, NH, generator=gen, dtype=torch.float64)
    assert_same(lambda *x: mlstm_chunked(*x, chunk=chunk)[0], lambda *x: mlstm_naive(*x)[0],
                (q, k, v, i, f), F64)
    fast, ref = mlstm_chunked(q, k, v, i, f, chunk=chunk)[1], mlstm_naive(q, k, v, i, f)[1]
    for a, b in zip(fast, ref, strict=True):  # C, n and the stabiliser m itself
        assert rel(a, b) < F64


@pytest.mark.parametrize("L", LENGTHS)
def test_fft_convolution_matches_the_direct_causal_sum(L):
    gen = torch.Generator().manual_seed(L)
    u = torch.randn(2, L, 3, generator=gen, dtype=torch.float64)
    k = torch.randn(L, 3, generator=gen, dtype=torch.float64)
    assert_same(fft_causal_conv, direct_causal_conv, (u, k), F64)
    y = direct_causal_conv(u, k)
    t = L - 1
    assert torch.allclose(y[:, t], (u[:, : t + 1] * k[: t + 1].flip(0)).sum(1))


# --- whole mixers ----------------------------------------------------------------------------

def tiny_mixers() -> dict[str, tuple[type, object, int]]:
    """(class, config with chunks smaller than the test lengths, d_model) per new model."""
    return {
        "tcn": (TCN, TCNConfig(levels=3, kernel_size=3, hidden=6), 8),
        "mingru": (MinGRU, MinRNNConfig(expand=1.5, scan="chunked", chunk=3), 8),
        "mingru-log": (MinGRU, MinRNNConfig(scan="log", chunk=4), 8),
        "minlstm": (MinLSTM, MinRNNConfig(scan="chunked", chunk=3), 8),
        "minlstm-log": (MinLSTM, MinRNNConfig(expand=2.0, scan="log", chunk=4), 8),
        "mingru-auto": (MinGRU, MinRNNConfig(expand=1.5), 8),  # fused C++ where built
        "minlstm-auto": (MinLSTM, MinRNNConfig(), 8),
        "lru": (LRU, LRUConfig(d_state=6, chunk=3), 8),  # fused C++ where built
        "lru-chunked": (LRU, LRUConfig(d_state=6, chunk=3, scan="chunked"), 8),
        "gla": (GLA, GLAConfig(n_heads=2, chunk=4), 8),
        "gla-fixed": (GLA, GLAConfig(n_heads=2, decay="fixed", chunk=4), 8),
        "hyena": (Hyena, HyenaConfig(order=3, filter_order=8, max_len=64), 8),
        "xlstm": (XLSTM, XLSTMConfig(pattern="msm", heads=2, chunk=4), 8),
    }


def make(name: str, dtype: torch.dtype = torch.float64) -> torch.nn.Module:
    cls, cfg, d = tiny_mixers()[name]
    torch.manual_seed(0)
    return cls(d, cfg).to(dtype).eval()


def step_loop(mixer, x):
    state = mixer.init_state(x.shape[0], x.device, x.dtype)
    ys = []
    for x_t in x.unbind(1):
        y_t, state = mixer.step(x_t, state)
        ys.append(y_t)
    return torch.stack(ys, dim=1)


@pytest.mark.parametrize("name", list(tiny_mixers()))
@pytest.mark.parametrize("L", [1, 7, 19])
def test_parallel_forward_matches_the_step_loop_with_gradients(name, L):
    mixer = make(name)
    x = torch.randn(2, L, mixer.d_model, dtype=torch.float64,
                    generator=torch.Generator().manual_seed(L)).requires_grad_()
    y_fast, y_ref = mixer(x), step_loop(mixer, x)
    assert rel(y_fast, y_ref) < 1e-9
    w = torch.randn_like(y_ref)
    params = [p for p in mixer.parameters() if p.requires_grad]
    g_fast = torch.autograd.grad((y_fast * w).sum(), [x, *params], allow_unused=True)
    g_ref = torch.autograd.grad((y_ref * w).sum(), [x, *params], allow_unused=True)
    assert_grads_agree(g_fast, g_ref, 1e-9)


@pytest.mark.parametrize("name", list(tiny_mixers()))
def test_prefill_then_steps_equals_the_forward_in_fp32(name):
    mixer = make(name, torch.float32)
    x = torch.randn(3, 19, mixer.d_model, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = mixer(x)
        y_pre, state = mixer.prefill(x[:, :11])
        rest = []
        for x_t in x[:, 11:].unbind(1):
            y_t, state = mixer.step(x_t, state)
            rest.append(y_t)
        streamed = step_loop(mixer, x)
    assert rel(y_pre, full[:, :11]) < 1e-5
    assert rel(torch.stack(rest, 1), full[:, 11:]) < 1e-4
    assert rel(streamed, full) < 1e-4


@pytest.mark.parametrize("name", list(tiny_mixers()))
def test_state_size_counts_the_streaming_state(name):
    mixer = make(name, torch.float32)
    x = torch.randn(2, 13, mixer.d_model)
    with torch.no_grad():
        _, state = mixer.prefill(x)
    assert mixer.state_size(13, batch=2) == state_nbytes(state)
    grows = name == "hyena"
    assert (mixer.state_size(26, 2) > mixer.state_size(13, 2)) == grows


def test_every_new_model_is_registered_with_its_own_look():
    new = ["tcn", "mingru", "minlstm", "lru", "gla", "hyena", "xlstm"]
    assert all(n in MODELS for n in new)
    looks = [(e.color, e.marker, e.linestyle) for e in MODELS]
    assert len({c for c, _, _ in looks}) == len(looks)  # one colour per architecture
    assert len(set(looks)) == len(looks)
    assert all(MODELS[n].display and MODELS[n].family for n in new)


# --- model facts -----------------------------------------------------------------------------

def test_tcn_receptive_field_is_exactly_what_the_formula_says():
    mixer = TCN(4, TCNConfig(levels=3, kernel_size=3))
    rf = mixer.receptive_field()
    assert rf == 1 + 2 * 2 * 7
    with torch.no_grad():  # positive weights and inputs: every ReLU passes, every path counts
        for p in mixer.parameters():
            p.abs_()
    x = torch.rand(1, 40, 4, requires_grad=True)
    y = mixer(x)
    seen = torch.autograd.grad(y[0, -1].sum(), x)[0][0].abs().sum(-1)  # (L,)
    assert (seen > 0).nonzero().min().item() == 40 - rf


def test_tcn_init_reference_keeps_default_conv_weights_and_normal_draws_them():
    torch.manual_seed(0)
    ref = TemporalConvNet(16, [32, 32], 4, 0.0, "reference")
    torch.manual_seed(0)
    normal = TemporalConvNet(16, [32, 32], 4, 0.0, "normal")
    w_ref = ref.blocks[1].conv2.weight.detach()  # the effective, weight-normed weight
    w_normal = normal.blocks[1].conv2.weight.detach()
    assert abs(w_normal.std().item() - 0.01) < 0.002
    bound = 1 / math.sqrt(32 * 4)  # PyTorch's default: uniform(-1/sqrt(fan_in), 1/sqrt(fan_in))
    assert abs(w_ref.std().item() - bound / math.sqrt(3)) < 0.1 * bound
    for net in (ref, normal):  # only the first block changes width: a 1x1 conv, N(0, 0.01)
        assert net.blocks[0].downsample is not None and net.blocks[1].downsample is None
        assert abs(net.blocks[0].downsample.weight.std().item() - 0.01) < 0.003
    g = ref.blocks[0].conv1.parametrizations.weight.original0  # weight norm: g = ||v|| at init
    v = ref.blocks[0].conv1.parametrizations.weight.original1
    assert torch.allclose(g.flatten(), v.flatten(1).norm(dim=1))


@pytest.mark.parametrize("name", ["tcn", "mingru", "minlstm"])
def test_flop_formula_matches_pytorchs_flop_counter(name):
    mixer = make(name, torch.float32)
    x = torch.randn(3, 17, mixer.d_model)
    with FlopCounterMode(display=False) as counter:
        mixer(x)
    assert mixer.forward_flops(3, 17) == counter.get_total_flops()


def test_lru_ring_initialisation_and_normalisation():
    torch.manual_seed(0)
    lru = LRU(4, LRUConfig(d_state=4096, r_min=0.4, r_max=0.9, max_phase=math.pi / 2))
    lam = lru._lambda(torch.float64)
    r2 = lam.abs() ** 2
    assert r2.min() >= 0.4 ** 2 - 1e-6 and r2.max() <= 0.9 ** 2 + 1e-6
    assert abs(r2.mean().item() - (0.16 + 0.81) / 2) < 0.01  # |Lambda|^2 uniform on the ring
    phase = torch.exp(lru.theta_log.detach())
    assert phase.min() >= 0 and phase.max() <= math.pi / 2
    assert abs(phase.mean() - math.pi / 4) < 0.03  # uniform in [0, max_phase]
    gamma = torch.exp(lru.gamma_log.detach().double())
    assert torch.allclose(gamma, torch.sqrt(1 - r2), atol=1e-5)
    assert {"nu_log", "theta_log", "gamma_log"} <= lru.no_weight_decay()


def test_gla_fixed_decay_is_retnets_and_fla_is_refused_where_it_cannot_run():
    gla = GLA(8, GLAConfig(n_heads=4, decay="fixed"))
    gamma = torch.exp(gla.log_gamma.squeeze(-1))
    assert torch.allclose(gamma, torch.tensor([1 - 2 ** -5, 1 - 2 ** -6, 1 - 2 ** -7, 1 - 2 ** -8]))
    assert GLA.d_model_multiple(GLAConfig()) == 8  # key dim D / 2 must split into 4 heads
    cpu = torch.device("cpu")
    assert "CUDA" in GLA.unavailable_reason(GLAConfig(backend="fla"), cpu)
    assert GLA.unavailable_reason(GLAConfig(), cpu) is None  # auto falls back to torch
    with pytest.raises(BackendUnavailable):
        GLA(8, GLAConfig(backend="fla"))(torch.randn(1, 3, 8))


def test_hyena_refuses_sequences_beyond_its_filter_table():
    hyena = make("hyena", torch.float32)
    assert Hyena.max_seq_len(hyena.config) == 64
    hyena(torch.randn(1, 64, 8))
    with pytest.raises(ValueError, match="max_len"):
        hyena(torch.randn(1, 65, 8))


def test_xlstm_pattern_sets_the_blocks_and_reports_both_kernels():
    mixer = XLSTM(8, XLSTMConfig(pattern="mms", heads=2))
    assert [b.kind for b in mixer.blocks] == ["m", "m", "s"]
    assert [b.ffn is not None for b in mixer.blocks] == [False, False, True]
    mixer(torch.randn(1, 5, 8))
    assert mixer.kernel_path == "torch-chunked-mlstm+torch-slstm-loop"
    with pytest.raises(ValueError, match="pattern"):
        XLSTMConfig(pattern="mx")
    # the reference's optimizer groups: weights decay, biases / norms / skip / recurrence do not
    names = mixer.no_weight_decay()
    assert "blocks.2.layer.recurrent" in names and "blocks.0.layer.skip" in names
    assert "blocks.0.layer.proj_up.weight" not in names and "blocks.0.norm.weight" in names


def test_a_tcn_learns_copy_memory_at_a_short_delay():
    """The TCN as the whole network (embedding -> 3 levels -> linear, as in the paper's copy
    setup), delay 5: 250 Adam steps recall every symbol; chance is 1/8."""
    task = build_task("copy", 5)
    torch.manual_seed(0)
    emb, head = torch.nn.Embedding(10, 16), torch.nn.Linear(16, 10)
    tcn = TCN(16, TCNConfig(levels=3, kernel_size=3))  # receptive field 29 >= the lag of 15
    params = [*emb.parameters(), *tcn.parameters(), *head.parameters()]
    opt = torch.optim.Adam(params, lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(250):
        x, y = task.sample(gen, 32, torch.device("cpu"))
        loss = task.loss(head(tcn(emb(x))), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = task.sample(torch.Generator().manual_seed(1), 256, torch.device("cpu"))
    with torch.no_grad():
        out = head(tcn(emb(x)))
    accuracy = (out[:, -10:].argmax(-1) == y[:, -10:]).float().mean().item()
    assert accuracy > 0.95
    assert task.loss(out, y).item() < task.info.baselines["loss"] / 10


def test_a_tcn_row_records_the_receptive_field_of_its_whole_stack():
    from seqbench.config import expand, parse_suite
    from seqbench.worker.job import run_job

    suite = parse_suite({"name": "rf", "device": "cpu", "tasks": [{"name": "adding",
                                                                 "seq_lens": [8]}],
                         "models": [{"name": "tcn", "params": {"d_model": 8, "n_layers": 2,
                                                               "levels": 2,
                                                               "kernel_size": 3}}],
                         "train": {"steps": 2, "batch_size": 2, "eval_examples": 4},
                         "measure": {"fwd_budget_s": 0.01, "fwd_max_repeats": 1}})
    row = run_job(expand(suite)[0])
    assert row.status == "ok", row.error
    rf = 1 + 2 * (3 - 1) * (2**2 - 1)  # one mixer: 13 steps
    assert row.receptive_field == 1 + 2 * (rf - 1)  # two stacked: 25
