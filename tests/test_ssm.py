"""State-space mixers (S4D, Mamba, Mamba-2): S4D's two modes agree; the fast scans agree with
independent references (a naive loop written from the recurrence, the mambapy package) over
lengths, shapes and dtypes; step mode agrees with the full sequence; a missing mamba_ssm turns
into an unavailability reason; each model learns a small selective-copy task on CPU.
"""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from seqbench.errors import BackendUnavailable, SpecError
from seqbench.worker import backends
from seqbench.worker.models import IOSpec, build_model, mixer_class, size_to_budget, split_params
from seqbench.worker.models.base import BackboneConfig, state_nbytes
from seqbench.worker.models.ops import (
    causal_conv,
    causal_conv_step,
    native,
    segsum,
    selective_scan,
    selective_scan_naive,
    ssd_chunked,
    ssd_naive,
)

SSMS = ("s4d", "mamba", "mamba2")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
# max |a - b| / max |b| against an fp64 reference fed the same (rounded) inputs: fp32 measures
# ~1e-7; bf16 is one output rounding (~4e-3 at most)
TOL = {"fp32": 1e-5, "bf16": 8e-3}
TOKENS = IOSpec("tokens", 10, 10, per_position=True)


@pytest.fixture(autouse=True)
def one_thread():
    """One thread: these are small tensors, and on a shared 2-core machine a second OpenMP
    thread stalls every op while the other core is busy (10-40x slower steps under load)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def scan_inputs(batch: int, length: int, d: int, n: int, dtype=torch.float32, seed: int = 0):
    """u, delta (B, L, D), A (D, N) negative, B, C (B, L, N), as leaf tensors."""
    gen = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, length, d, generator=gen)
    delta = F.softplus(torch.randn(batch, length, d, generator=gen) - 1)
    A = -(torch.rand(d, n, generator=gen) * 4 + 0.5)
    B = torch.randn(batch, length, n, generator=gen)
    C = torch.randn(batch, length, n, generator=gen)
    return [t.to(dtype).requires_grad_() for t in (u, delta, A, B, C)]


def ssd_inputs(batch: int, length: int, heads: int, headdim: int, groups: int, n: int,
               dtype=torch.float32, seed: int = 0):
    """x (B, L, H, P), dt (B, L, H), A (H,), B, C (B, L, G, N), as leaf tensors."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, heads, headdim, generator=gen)
    dt = F.softplus(torch.randn(batch, length, heads, generator=gen))
    A = -(torch.rand(heads, generator=gen) * 3 + 0.1)
    B = torch.randn(batch, length, groups, n, generator=gen)
    C = torch.randn(batch, length, groups, n, generator=gen)
    return [t.to(dtype).requires_grad_() for t in (x, dt, A, B, C)]


def as_double(ts):
    return [t.detach().double().requires_grad_() for t in ts]


# --- S4D: convolution mode == recurrent mode --------------------------------------------------
@pytest.mark.parametrize("length", [1, 7, 64, 513], ids=lambda L: f"s4d-L{L}")
def test_s4d_convolution_equals_recurrence(length):
    torch.manual_seed(0)
    cls = mixer_class("s4d")
    mixer = cls(8, cls.Config(d_state=16, dt_min=0.01, dt_max=0.5)).eval()
    x = torch.randn(2, length, 8)
    with torch.no_grad():
        full = mixer(x)
        assert mixer.kernel_path == "fft-conv"
        state = mixer.init_state(2, x.device, x.dtype)
        steps = []
        for t in range(length):
            y_t, state = mixer.step(x[:, t], state)
            steps.append(y_t)
    assert rel_err(torch.stack(steps, 1), full) < 1e-5


def test_s4d_kernel_reaches_far_back():
    """The parity above is only meaningful if the kernel is not a near-identity."""
    cls = mixer_class("s4d")
    torch.manual_seed(0)
    k = cls(4, cls.Config(dt_min=0.001, dt_max=0.01)).kernel(1000).detach()
    assert k[:, 500:].abs().max() > 0.05 * k.abs().max()


@pytest.mark.parametrize("length", [1, 2, 7, 63, 64, 513, 4096], ids=lambda L: f"s4d-K-L{L}")
def test_s4d_kernel_equals_the_direct_vandermonde_product(length):
    """The blocked kernel (z^(qT) z^r as a matmul) against sum_n CB_n z_n^l with every power
    formed directly, in fp64 from the same parameters: fp32 rounding only (measured 5e-7)."""
    torch.manual_seed(0)
    cls = mixer_class("s4d")
    mixer = cls(8, cls.Config(d_state=16, dt_min=0.001, dt_max=0.5))
    dtA, CB, _ = (t.detach().cdouble() for t in mixer._discrete())
    powers = torch.exp(dtA.unsqueeze(-1) * torch.arange(length, dtype=torch.float64))
    direct = 2 * torch.einsum("hn,hnl->hl", CB, powers).real  # (H, L)
    kernel = mixer.kernel(length)
    assert kernel.shape == (8, length) and kernel.dtype == torch.float32
    assert rel_err(kernel, direct) < 2e-6


# --- Mamba's selective scan ------------------------------------------------------------------
SCAN_CASES = [  # (length, chunk): None = the automatic ~sqrt(L); odd lengths force padding
    (1, None), (5, None), (64, 16), (257, None), (257, 32), (1024, None),
]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("length,chunk", SCAN_CASES,
                         ids=[f"mamba-L{L}-T{c or 'auto'}" for L, c in SCAN_CASES])
def test_selective_scan_matches_naive_loop(length, chunk, dtype):
    xs = scan_inputs(2, length, 6, 4, DTYPES[dtype])
    ref, _ = selective_scan_naive(*as_double(xs))
    y = selective_scan(*xs, chunk=chunk)
    assert y.dtype == DTYPES[dtype]
    assert rel_err(y, ref) < TOL[dtype]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("length", [1, 5, 64, 257, 1024], ids=lambda L: f"mambapy-L{L}")
@pytest.mark.parametrize("shape", [(2, 6, 4), (3, 16, 16)], ids=lambda s: "B{}-D{}-N{}".format(*s))
def test_selective_scan_matches_mambapy(shape, length, dtype):
    from mambapy.mamba import MambaBlock

    batch, d, n = shape
    xs = scan_inputs(batch, length, d, n, DTYPES[dtype], seed=1)
    theirs = MambaBlock.selective_scan(None, *xs, torch.zeros(d, dtype=DTYPES[dtype]))
    # mambapy computes in the input dtype throughout, so bf16 differs by its own roundings too
    assert rel_err(selective_scan(*xs), theirs) < (1e-5 if dtype == "fp32" else 3e-2)


GRAD_CASES = [(1, None), (9, 4), (100, 16), (300, None)]


@pytest.mark.parametrize("length,chunk", GRAD_CASES,
                         ids=[f"mamba-grad-L{L}-T{c or 'auto'}" for L, c in GRAD_CASES])
def test_selective_scan_gradients_match_reference(length, chunk):
    xs = as_double(scan_inputs(2, length, 5, 3))
    gy = torch.randn(2, length, 5, dtype=torch.float64)
    ours = torch.autograd.grad(selective_scan(*xs, chunk=chunk), xs, gy)
    ref = torch.autograd.grad(selective_scan_naive(*xs)[0], xs, gy)
    for name, a, b in zip(["u", "delta", "A", "B", "C"], ours, ref, strict=True):
        assert rel_err(a, b) < 1e-10, name
    # fp32 gradients against the fp64 reference
    xs32 = [t.detach().float().requires_grad_() for t in xs]
    ours32 = torch.autograd.grad(selective_scan(*xs32, chunk=chunk), xs32, gy.float())
    for name, a, b in zip(["u", "delta", "A", "B", "C"], ours32, ref, strict=True):
        assert rel_err(a, b) < 1e-4, name


def test_selective_scan_gradcheck_across_chunks():
    xs = as_double(scan_inputs(1, 11, 2, 3))
    assert torch.autograd.gradcheck(lambda *a: selective_scan(*a, chunk=4), xs)


def test_selective_scan_is_safe_with_huge_decays():
    """Steps with exp(delta A) ~ e^-4000 must neither overflow nor produce NaN."""
    u, delta, A, B, C = (t.detach() for t in scan_inputs(2, 300, 4, 3))
    delta = delta.clone()
    delta[:, ::7] = 1000.0  # decay exp(-1000 * |A|) underflows to 0: the state resets
    y = selective_scan(u, delta, A, B, C, chunk=32)
    assert torch.isfinite(y).all()
    assert rel_err(y, selective_scan_naive(u.double(), delta.double(), A.double(), B.double(),
                                           C.double())[0]) < 1e-5


# --- Mamba-2's chunked SSD -------------------------------------------------------------------
SSD_CASES = [(1, 16), (10, 4), (64, 16), (200, 16), (200, 64)]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("length,chunk", SSD_CASES,
                         ids=[f"mamba2-L{L}-Q{q}" for L, q in SSD_CASES])
def test_ssd_chunked_matches_naive_loop(length, chunk, dtype):
    xs = ssd_inputs(2, length, 4, 3, 2, 5, DTYPES[dtype])
    ref, _ = ssd_naive(*as_double(xs))
    y = ssd_chunked(*xs, chunk=chunk)
    assert y.dtype == DTYPES[dtype]
    assert rel_err(y, ref) < TOL[dtype]


@pytest.mark.parametrize("length", [7, 130], ids=lambda L: f"mamba2-vs-scan-L{L}")
def test_ssd_is_a_selective_scan_with_one_decay_per_head(length):
    """An independent path: SSD equals Mamba's scan with A and dt repeated over each head."""
    x, dt, A, B, C = (t.detach() for t in ssd_inputs(2, length, 3, 4, 1, 5))
    P = x.shape[-1]
    y = ssd_chunked(x, dt, A, B, C, chunk=32)  # (B, L, H, P)
    via_scan = selective_scan(x.flatten(2), dt.repeat_interleave(P, dim=-1),
                              A.repeat_interleave(P)[:, None].expand(-1, 5), B[:, :, 0], C[:, :, 0])
    assert rel_err(y.flatten(2), via_scan) < 1e-5


@pytest.mark.parametrize("length,chunk", [(9, 4), (70, 16)],
                         ids=["mamba2-grad-L9", "mamba2-grad-L70"])
def test_ssd_gradients_match_reference(length, chunk):
    xs = as_double(ssd_inputs(2, length, 4, 2, 2, 3))
    gy = torch.randn(2, length, 4, 2, dtype=torch.float64)
    ours = torch.autograd.grad(ssd_chunked(*xs, chunk=chunk), xs, gy)
    ref = torch.autograd.grad(ssd_naive(*xs)[0], xs, gy)
    for name, a, b in zip(["x", "dt", "A", "B", "C"], ours, ref, strict=True):
        assert rel_err(a, b) < 1e-10, name


def test_segsum_masks_before_exp():
    log_a = torch.full((3, 64), -1000.0)  # cumulative sums reach -64000
    decay = torch.exp(segsum(log_a))
    assert torch.isfinite(decay).all() and (decay <= 1).all()
    assert torch.equal(decay.diagonal(dim1=-2, dim2=-1), torch.ones(3, 64))
    assert decay.triu(1).eq(0).all()  # nothing flows backwards in time


def test_causal_conv_step_matches_full_sequence():
    torch.manual_seed(0)
    x, w, b = torch.randn(2, 9, 5), torch.randn(5, 4), torch.randn(5)
    full = causal_conv(x, w, b)
    window, steps = torch.zeros(2, 5, 3), []
    for t in range(9):
        y_t, window = causal_conv_step(x[:, t], window, w, b)
        steps.append(y_t)
    assert rel_err(torch.stack(steps, 1), full) < 1e-6
    x2 = x.clone()
    x2[:, 5:] += 1.0  # the future must not leak into the past
    assert torch.equal(causal_conv(x2, w, b)[:, :5], full[:, :5])


# --- the mixers inside the shared backbone -----------------------------------------------------
STEP_CASES = [(m, L) for m in SSMS for L in (1, 17, 100)]


@pytest.mark.parametrize("name,length", STEP_CASES, ids=[f"{m}-L{L}" for m, L in STEP_CASES])
def test_step_mode_matches_full_sequence(name, length):
    torch.manual_seed(0)
    params = {"d_model": 32, "n_layers": 2, **({"chunk": 16} if name != "s4d" else {})}
    model = build_model(name, params, TOKENS).eval()
    x = torch.randint(0, 10, (3, length))
    with torch.no_grad():
        full = model(x)
        state = model.init_state(3, x.device, torch.float32)
        steps = []
        for t in range(length):
            out, state = model.step(x[:, t], state)
            steps.append(out)
    assert model.supports_step
    assert rel_err(torch.stack(steps, 1), full) < 1e-4


@pytest.mark.parametrize("name", SSMS)
def test_state_size_is_the_state_bytes_and_constant_in_length(name):
    model = build_model(name, {"d_model": 32, "n_layers": 2}, TOKENS)
    state = model.init_state(3, torch.device("cpu"), torch.float32)
    assert model.state_size(10, batch=3) == model.state_size(100_000, batch=3)
    assert model.state_size(10, batch=3) == state_nbytes(state)


@pytest.mark.parametrize("name", SSMS)
def test_no_weight_decay_names_real_parameters(name):
    model = build_model(name, {"d_model": 32, "n_layers": 2}, TOKENS)
    names = model.no_weight_decay()
    assert names and names <= dict(model.named_parameters()).keys()


FUSED = native.library() is not None  # the fused C++ kernels built here (tests/test_kernels.py)


@pytest.mark.parametrize("name,scan,path", [
    ("s4d", None, "fft-conv"),
    ("mamba", "chunked", "torch-chunked-scan"),
    ("mamba", "auto", "cpu-fused-scan" if FUSED else "torch-chunked-scan"),
    ("mamba2", "chunked", "torch-ssd"),
    ("mamba2", "auto", "cpu-fused-ssd" if FUSED else "torch-ssd")])
def test_cpu_kernel_path_is_recorded(name, scan, path):
    model = build_model(name, {"d_model": 32, **({"scan": scan} if scan else {})}, TOKENS)
    model(torch.randint(0, 10, (2, 20)))
    assert model.kernel_path == path


def test_mamba2_width_follows_heads_and_budget():
    cls = mixer_class("mamba2")
    cfg = cls.Config()  # headdim 64, expand 2: d_model must be a multiple of 32
    assert cls.d_model_multiple(cfg) == 32
    d = size_to_budget(cls, cfg, BackboneConfig(n_layers=2), TOKENS, 200_000)
    assert d % 32 == 0 and build_model("mamba2", {"d_model": d}, TOKENS)
    with pytest.raises(ValueError, match="multiple of 32"):
        build_model("mamba2", {"d_model": 48}, TOKENS)


def test_unknown_backend_is_a_spec_error():
    with pytest.raises(SpecError, match="backend"):
        split_params("mamba", {"backend": "cuda"})


# --- backends: fallback and honest unavailability ---------------------------------------------
@pytest.fixture
def no_mamba_ssm(monkeypatch):
    """mamba_ssm made unimportable (as on a machine without it), probe cache cleared."""
    monkeypatch.setitem(sys.modules, "mamba_ssm", None)
    backends.import_error.cache_clear()
    yield
    backends.import_error.cache_clear()


MAMBA_MODULES = [("mamba", "mamba_ssm.ops.selective_scan_interface"),
                 ("mamba2", "mamba_ssm.ops.triton.ssd_combined")]


@pytest.mark.parametrize("name,module", MAMBA_MODULES, ids=[m for m, _ in MAMBA_MODULES])
def test_missing_mamba_ssm_is_an_unavailable_reason(no_mamba_ssm, name, module):
    cls = mixer_class(name)
    error = backends.import_error(module)
    assert error and "mamba_ssm" in error
    reason = cls.unavailable_reason(cls.Config(backend="mamba_ssm"), torch.device("cuda"))
    assert reason is not None and error in reason
    # auto falls back to seqbench's path on any device; torch never needs mamba_ssm
    for device in ("cpu", "cuda"):
        assert cls.unavailable_reason(cls.Config(backend="auto"), torch.device(device)) is None
        assert cls.unavailable_reason(cls.Config(backend="torch"), torch.device(device)) is None


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_mamba_ssm_backend_on_cpu_refuses_to_run(name):
    cls = mixer_class(name)
    reason = cls.unavailable_reason(cls.Config(backend="mamba_ssm"), torch.device("cpu"))
    assert reason is not None and "CUDA" in reason
    model = build_model(name, {"d_model": 64, "backend": "mamba_ssm"}, TOKENS)
    with pytest.raises(BackendUnavailable, match="CUDA"):
        model(torch.randint(0, 10, (2, 8)))


@pytest.mark.skipif(backends.import_error("mamba_ssm") is None, reason="mamba_ssm imports here")
def test_absent_mamba_ssm_reason_quotes_the_real_import_error():
    cls = mixer_class("mamba")
    reason = cls.unavailable_reason(cls.Config(backend="mamba_ssm"), torch.device("cuda"))
    assert backends.import_error("mamba_ssm.ops.selective_scan_interface") in reason


# --- FLOP formulas -----------------------------------------------------------------------------
def counted_flops(mixer, x) -> int:
    """FLOPs of the matmuls and convolutions torch actually ran (FlopCounterMode's count)."""
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        mixer(x)
    return counter.get_total_flops()


def test_mamba_flops_formula_matches_counted_matmuls():
    """Counted: the projections, the conv and y = C h (a bmm, 2 L N E). The formula replaces
    that bmm by mamba-ssm's 9 L E N for the whole scan and adds 2 L E for skip and gate; conv1d
    also computes K - 1 outputs past the end that the causal slice drops (counted, not in the
    formula). L = 64 is a whole number of scan chunks, so no padding is counted."""
    cls = mixer_class("mamba")
    mixer = cls(32, cls.Config(scan="chunked"))  # the PyTorch path, whose matmuls torch counts
    batch, L, E, N, K = 3, 64, mixer.d_inner, mixer.config.d_state, mixer.config.d_conv
    counted = counted_flops(mixer, torch.randn(batch, L, 32))
    dropped_conv = batch * 2 * (K - 1) * E * K
    scan_terms = batch * (9 * L * E * N + 2 * L * E) - batch * 2 * L * N * E
    assert mixer.forward_flops(batch, L) == counted - dropped_conv + scan_terms


@pytest.mark.parametrize("name", ["s4d", "mamba2"])
def test_flops_formula_covers_the_counted_matmuls_and_is_affine_in_batch(name):
    cls = mixer_class(name)
    mixer = cls(64, cls.Config(**({"scan": "chunked"} if name == "mamba2" else {})))
    counted = counted_flops(mixer, torch.randn(2, 128, 64))
    flops = [mixer.forward_flops(b, 128) for b in (2, 3, 4)]
    assert counted <= flops[0] <= 3 * counted
    # S4D builds its kernel once per forward, whatever the batch: affine, not proportional
    assert flops[2] - flops[0] == pytest.approx(2 * (flops[1] - flops[0]))
    assert flops[1] > flops[0]


# --- each model learns ---------------------------------------------------------------------------
def selective_copy(gen: torch.Generator, batch: int, tokens: int = 3, span: int = 12,
                   vocab: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """Selective copying (Mamba paper, Section 4.1.1), tiny: ``tokens`` symbols from 1..vocab at
    random positions among ``span`` noise positions (0), then ``tokens`` cues (vocab + 1); the
    targets at the cues are the symbols in order. Example (tokens 3, span 6)::

        x: 0 3 0 0 1 4 | 5 5 5       y: - - - - - - | 3 1 4   (- = not scored)
    """
    x = torch.zeros(batch, span + tokens, dtype=torch.long)
    pos = torch.rand(batch, span, generator=gen).argsort(1)[:, :tokens].sort(1).values
    sym = torch.randint(1, vocab + 1, (batch, tokens), generator=gen)
    x.scatter_(1, pos, sym)
    x[:, span:] = vocab + 1
    y = torch.full_like(x, -100)
    y[:, span:] = sym
    return x, y


STEPS = 120


@pytest.mark.parametrize("name,min_accuracy", [("s4d", 0.5), ("mamba", 0.75), ("mamba2", 0.75)])
def test_model_learns_selective_copy(name, min_accuracy):
    """120 Adam steps; chance accuracy is 1/4. Measured: S4D 0.70, Mamba 0.88, Mamba-2 0.91
    (S4D, time-invariant, selects more slowly, as the Mamba paper reports at scale)."""
    torch.manual_seed(0)
    model = build_model(name, {"d_model": 32, "n_layers": 2}, IOSpec("tokens", 6, 6, True))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        x, y = selective_copy(gen, 64)
        loss = F.cross_entropy(model(x).flatten(0, 1), y.flatten(), ignore_index=-100)
        opt.zero_grad()
        loss.backward()
        opt.step()
    x, y = selective_copy(torch.Generator().manual_seed(1), 512)
    with torch.no_grad():
        accuracy = (model(x)[:, -3:].argmax(-1) == y[:, -3:]).float().mean().item()
    assert accuracy > min_accuracy


@pytest.mark.parametrize("name,scan", [("mamba", "auto"), ("mamba", "chunked"),
                                       ("mamba2", "auto"), ("mamba2", "chunked")])
def test_prefill_is_parallel_and_steps_continue_from_it(name, scan, monkeypatch):
    """The prefill runs the parallel kernels (the fused kernel's or the chunked scan's last
    state), never the step loop; prefill then steps equals the forward."""
    torch.manual_seed(0)
    model = build_model(name, {"d_model": 32, "n_layers": 2, "chunk": 16, "scan": scan},
                        TOKENS).eval()
    x = torch.randint(0, 10, (3, 50))
    cls = mixer_class(name)
    with torch.no_grad():
        full = model(x)
        forward_path = model.kernel_path
        monkeypatch.setattr(cls, "step", lambda *a: pytest.fail("prefill stepped"))
        y_pre, state = model.prefill(x[:, :37])
        monkeypatch.undo()
        assert model.kernel_path == forward_path
        steps = []
        for t in range(37, 50):
            out, state = model.step(x[:, t], state)
            steps.append(out)
    assert rel_err(y_pre, full[:, :37]) < 1e-5
    assert rel_err(torch.stack(steps, 1), full[:, 37:]) < 1e-4
    fresh = model.init_state(3, x.device, torch.float32)
    for got, want in zip(state, fresh, strict=True):
        assert {k: (v.shape, v.dtype) for k, v in got.items()} == \
            {k: (v.shape, v.dtype) for k, v in want.items()}


def test_prefill_shorter_than_the_conv_window_pads_it():
    torch.manual_seed(0)
    model = build_model("mamba", {"d_model": 32, "d_conv": 4}, TOKENS).eval()
    x = torch.randint(0, 10, (2, 6))
    with torch.no_grad():
        full = model(x)
        y, state = model.prefill(x[:, :2])  # 2 tokens, a window of 3
        outs = []
        for t in range(2, 6):
            out, state = model.step(x[:, t], state)
            outs.append(out)
    assert rel_err(torch.cat([y, torch.stack(outs, 1)], 1), full) < 1e-4
