"""seqbench's fused C++ CPU kernels (seqbench/worker/models/ops/native.py): the selective scan,
the SSD recurrence and the causal conv agree in outputs and every gradient with the naive
references over lengths (1, odd, across chunk boundaries, 4096), shapes that fill no vector
block, fp64/fp32/bf16 and step sizes from 1e-3 to 20; results do not depend on the thread
count and survive a fork; the library is cached by content; without it the mixers fall back to
the PyTorch paths and say so.
"""

from __future__ import annotations

import multiprocessing as mp
import sys

import pytest
import torch
import torch.nn.functional as F

from seqbench.errors import BackendUnavailable, SpecError
from seqbench.worker.models import IOSpec, build_model, mixer_class, split_params
from seqbench.worker.models.ops import (
    causal_conv,
    causal_conv_fused,
    native,
    selective_scan,
    selective_scan_fused,
    selective_scan_naive,
    ssd_chunked,
    ssd_fused,
    ssd_naive,
)

pytestmark = pytest.mark.skipif(native.library() is None,
                                reason=f"fused CPU kernels unavailable: "
                                       f"{native.unavailable_reason()}")

TOKENS = IOSpec("tokens", 10, 10, per_position=True)
# max |a - b| / max |b| against an fp64 reference fed the same inputs. fp64 kernels: rounding
# only (measured <= 3e-15). fp32: measured <= 2e-6 for outputs and gradients (the exp
# polynomial is ~1e-7 relative). bf16 inputs are computed in fp32 and the results rounded to
# bf16 once (2^-8 relative, 4e-3).
TOL = {torch.float64: 1e-12, torch.float32: 2e-5, torch.bfloat16: 8e-3}


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def leaves(tensors, dtype):
    return [None if t is None else t.detach().to(dtype).requires_grad_() for t in tensors]


def scan_inputs(batch, length, d, n, seed=0, delta_range=None, skip=True, gate=True):
    """u, delta (B, L, D), A (D, N) negative, B, C (B, L, N), D (D,), z (B, L, D) in fp64.

    ``delta_range=(lo, hi)``: step sizes log-uniform in [lo, hi] instead of softplus(N(-1, 1)).
    """
    gen = torch.Generator().manual_seed(seed)
    kw = {"generator": gen, "dtype": torch.float64}
    u = torch.randn(batch, length, d, **kw)
    if delta_range is None:
        delta = F.softplus(torch.randn(batch, length, d, **kw) - 1)
    else:
        lo, hi = map(torch.tensor, delta_range)
        delta = torch.exp(torch.log(lo) + torch.rand(batch, length, d, **kw) * torch.log(hi / lo))
    A = -(torch.rand(d, n, **kw) * 4 + 0.5)
    B, C = torch.randn(batch, length, n, **kw), torch.randn(batch, length, n, **kw)
    Dk = torch.randn(d, **kw) if skip else None
    z = torch.randn(batch, length, d, **kw) if gate else None
    return [u, delta, A, B, C, Dk, z]


def scan_reference(u, delta, A, B, C, Dk, z):
    y = selective_scan_naive(u, delta, A, B, C)[0]
    if Dk is not None:
        y = y + Dk * u
    return y * F.silu(z) if z is not None else y


def check_against_reference(fused, reference, inputs, dtype, gy_shape, seed=0):
    """Output and all gradients of ``fused`` on ``inputs`` cast to ``dtype`` against
    ``reference`` in fp64 on the same (rounded) values."""
    ours = leaves(inputs, dtype)
    ref = leaves([None if t is None else t.to(dtype) for t in inputs], torch.float64)
    gy = torch.randn(*gy_shape, generator=torch.Generator().manual_seed(seed + 7),
                     dtype=torch.float64)
    out = fused(*ours)
    assert out.dtype == dtype
    want = reference(*ref)
    assert rel_err(out, want) < TOL[dtype], "output"
    got = torch.autograd.grad(out, [t for t in ours if t is not None], gy.to(dtype))
    exp = torch.autograd.grad(want, [t for t in ref if t is not None], gy)
    for i, (g, e) in enumerate(zip(got, exp, strict=True)):
        assert g.dtype == dtype, f"gradient {i}"
        assert rel_err(g, e) < TOL[dtype], f"gradient {i}"


# --- Mamba's selective scan ----------------------------------------------------------------------
# (batch, length, channels, states, chunk): lengths 1, odd, shorter than, equal to and across
# chunks; channels and states that fill no 32-channel block or 16-state tile
SCAN_CASES = [(2, 1, 5, 3, 64), (2, 7, 40, 3, 4), (1, 33, 33, 20, 8), (3, 100, 64, 16, 64),
              (2, 129, 16, 16, 64), (1, 50, 70, 1, 1)]


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16],
                         ids=["fp64", "fp32", "bf16"])
@pytest.mark.parametrize("case", SCAN_CASES, ids=lambda c: "B{}-L{}-D{}-N{}-T{}".format(*c))
def test_fused_scan_matches_naive_loop(case, dtype):
    batch, length, d, n, chunk = case
    check_against_reference(lambda *a: selective_scan_fused(*a, chunk=chunk), scan_reference,
                            scan_inputs(batch, length, d, n), dtype, (batch, length, d))


@pytest.mark.parametrize("skip,gate", [(False, False), (True, False), (False, True)],
                         ids=["plain", "skip", "gate"])
def test_fused_scan_without_skip_or_gate(skip, gate):
    check_against_reference(lambda *a: selective_scan_fused(*a, chunk=16), scan_reference,
                            scan_inputs(2, 45, 35, 6, skip=skip, gate=gate), torch.float32,
                            (2, 45, 35))


@pytest.mark.parametrize("delta_range", [(1e-3, 1e-3), (1e-3, 20.0), (20.0, 20.0)],
                         ids=["delta-1e-3", "delta-1e-3..20", "delta-20"])
def test_fused_scan_at_extreme_step_sizes(delta_range):
    """delta 20 with A down to -4.5 gives decays of e^-90 (flushed to 0 in fp32); 1e-3 keeps
    the state for thousands of steps."""
    inputs = scan_inputs(2, 300, 20, 5, seed=3, delta_range=delta_range)
    for dtype in (torch.float64, torch.float32):
        check_against_reference(lambda *a: selective_scan_fused(*a, chunk=32), scan_reference,
                                inputs, dtype, (2, 300, 20), seed=3)


def test_fused_scan_at_length_4096():
    """Against the chunked scan in fp64 (itself checked against the naive loop above and in
    test_ssm.py), which takes 4096 steps in ~0.1 s where the loop takes seconds."""
    inputs = scan_inputs(2, 4096, 40, 16, seed=4, delta_range=(1e-3, 1.0))

    def chunked(u, delta, A, B, C, Dk, z):
        return (selective_scan(u, delta, A, B, C) + Dk * u) * F.silu(z)

    check_against_reference(selective_scan_fused, chunked, inputs, torch.float32,
                            (2, 4096, 40), seed=4)


def test_fused_scan_agrees_with_the_chunked_scan_on_views():
    """Operands that are views with row strides (as the halves of in_proj's output are) are
    read in place and give what the contiguous chunked scan gives."""
    u, delta, A, B, C, _, _ = scan_inputs(2, 70, 24, 8, seed=5)
    wide = torch.cat([u, delta], dim=-1).float()
    uv, dv = wide[..., :24], wide[..., 24:]
    assert not uv.is_contiguous()
    xBC = torch.cat([B, C], dim=-1).float()
    got = selective_scan_fused(uv, dv, A.float(), xBC[..., :8], xBC[..., 8:])
    want = selective_scan(uv.contiguous(), dv.contiguous(), A.float(), B.float(), C.float())
    assert rel_err(got, want) < 2e-6


def test_fused_scan_gradcheck():
    inputs = leaves(scan_inputs(1, 9, 3, 2, seed=6), torch.float64)
    assert torch.autograd.gradcheck(lambda *a: selective_scan_fused(*a, chunk=4), inputs)


def test_fused_scan_state_underflow_and_nan():
    """Decays far below fp32's range reset the state without NaN; a NaN input stays NaN."""
    u, delta, A, B, C, Dk, z = (t.float() for t in scan_inputs(2, 200, 8, 4, seed=8))
    delta = delta.clone()
    delta[:, ::7] = 1000.0
    y = selective_scan_fused(u, delta, A, B, C, Dk, z)
    assert torch.isfinite(y).all()
    ref = scan_reference(*(t.double() for t in (u, delta, A, B, C, Dk, z)))
    assert rel_err(y, ref) < TOL[torch.float32]
    u[0, 5, 3] = float("nan")
    y = selective_scan_fused(u, delta, A, B, C, Dk, z)
    assert torch.isnan(y[0, 5, 3]) and torch.isfinite(y[1]).all()


# --- Mamba-2's SSD -------------------------------------------------------------------------------
# (batch, length, heads, headdim, groups, states, chunk)
SSD_CASES = [(2, 1, 4, 3, 2, 5, 32), (2, 37, 4, 8, 2, 5, 8), (1, 70, 2, 64, 1, 64, 16),
             (2, 65, 3, 20, 1, 17, 32), (1, 40, 2, 128, 1, 16, 64), (1, 9, 2, 160, 2, 3, 4)]


def ssd_inputs(batch, length, heads, headdim, groups, n, seed=0, dt_range=None):
    gen = torch.Generator().manual_seed(seed)
    kw = {"generator": gen, "dtype": torch.float64}
    x = torch.randn(batch, length, heads, headdim, **kw)
    if dt_range is None:
        dt = F.softplus(torch.randn(batch, length, heads, **kw))
    else:
        lo, hi = map(torch.tensor, dt_range)
        dt = torch.exp(torch.log(lo) + torch.rand(batch, length, heads, **kw) * torch.log(hi / lo))
    A = -(torch.rand(heads, **kw) * 3 + 0.1)
    B = torch.randn(batch, length, groups, n, **kw)
    C = torch.randn(batch, length, groups, n, **kw)
    return [x, dt, A, B, C, torch.randn(heads, **kw)]


def ssd_reference(x, dt, A, B, C, Dk):
    return ssd_naive(x, dt, A, B, C)[0] + Dk[:, None] * x


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16],
                         ids=["fp64", "fp32", "bf16"])
@pytest.mark.parametrize("case", SSD_CASES,
                         ids=lambda c: "B{}-L{}-H{}-P{}-G{}-N{}-T{}".format(*c))
def test_fused_ssd_matches_naive_loop(case, dtype):
    *shape, chunk = case
    batch, length, heads, headdim = shape[:4]
    check_against_reference(lambda *a: ssd_fused(*a, chunk=chunk), ssd_reference,
                            ssd_inputs(*shape), dtype, (batch, length, heads, headdim))


@pytest.mark.parametrize("dt_range", [(1e-3, 1e-3), (1e-3, 20.0), (20.0, 20.0)],
                         ids=["dt-1e-3", "dt-1e-3..20", "dt-20"])
def test_fused_ssd_at_extreme_step_sizes(dt_range):
    inputs = ssd_inputs(2, 150, 2, 16, 1, 8, seed=2, dt_range=dt_range)
    for dtype in (torch.float64, torch.float32):
        check_against_reference(lambda *a: ssd_fused(*a, chunk=32), ssd_reference, inputs,
                                dtype, (2, 150, 2, 16), seed=2)


def test_fused_ssd_at_length_4096():
    inputs = ssd_inputs(1, 4096, 2, 16, 1, 8, seed=3, dt_range=(1e-3, 1.0))

    def chunked(x, dt, A, B, C, Dk):
        return ssd_chunked(x, dt, A, B, C) + Dk[:, None] * x

    check_against_reference(ssd_fused, chunked, inputs, torch.float32, (1, 4096, 2, 16), seed=3)


def test_fused_ssd_gradcheck():
    inputs = leaves(ssd_inputs(1, 7, 2, 3, 1, 2, seed=4), torch.float64)
    assert torch.autograd.gradcheck(lambda *a: ssd_fused(*a, chunk=3), inputs)


# --- the causal conv -----------------------------------------------------------------------------
@pytest.mark.parametrize("silu", [False, True], ids=["linear", "silu"])
@pytest.mark.parametrize("length,channels,taps", [(1, 5, 4), (3, 70, 4), (2, 64, 5), (40, 130, 1),
                                                  (33, 66, 16)],
                         ids=lambda v: str(v))
def test_fused_conv_matches_causal_conv(length, channels, taps, silu):
    gen = torch.Generator().manual_seed(length + taps)
    base = torch.randn(2, length, 2 * channels + 3, generator=gen, dtype=torch.float64)
    w = torch.randn(channels, taps, generator=gen, dtype=torch.float64)
    b = torch.randn(channels, generator=gen, dtype=torch.float64)

    def view(fn):  # a strided view of a wider tensor, as xBC is of in_proj's output
        return lambda base, w, b: fn(base[..., 3:3 + channels], w, b)

    def reference(x, w, b):
        y = causal_conv(x, w, b)
        return F.silu(y) if silu else y

    for dtype in (torch.float64, torch.float32):
        check_against_reference(view(lambda x, w, b: causal_conv_fused(x, w, b, silu)),
                                view(reference), [base, w, b], dtype, (2, length, channels))


def test_fused_conv_is_causal_and_takes_no_bias():
    x = torch.randn(2, 20, 8)
    w = torch.randn(8, 4)
    y = causal_conv_fused(x, w, None, silu=True)
    x2 = x.clone()
    x2[:, 12:] += 1.0
    assert torch.equal(causal_conv_fused(x2, w, None, silu=True)[:, :12], y[:, :12])
    assert rel_err(y, F.silu(causal_conv(x, w, None))) < 1e-6


# --- threads, fork, cache ------------------------------------------------------------------------
def _scan_fwd_bwd():
    inputs = leaves(scan_inputs(4, 300, 96, 16, seed=9), torch.float32)
    out = selective_scan_fused(*inputs, chunk=32)
    grads = torch.autograd.grad(out.sum(), inputs)
    x = leaves(ssd_inputs(4, 200, 2, 64, 1, 32, seed=9), torch.float32)
    y = ssd_fused(*x)
    return [out, *grads, y, *torch.autograd.grad(y.sum(), x)]


def test_results_do_not_depend_on_the_thread_count(monkeypatch):
    one = _scan_fwd_bwd()
    monkeypatch.setattr(native, "num_threads", lambda: 2)
    for a, b in zip(one, _scan_fwd_bwd(), strict=True):
        assert torch.equal(a, b)


def _child(queue) -> None:
    try:
        queue.put([t.sum().item() for t in _scan_fwd_bwd()])
    except Exception as exc:  # reported to the parent
        queue.put(repr(exc))


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_kernels_run_in_a_process_forked_after_they_ran(monkeypatch):
    """Workers fork from a zygote: kernel threads started before a fork must not break the
    child (the kernels start and join their threads within each call). torch's own ops stay
    on one thread here: its OpenMP pool is what does not survive a fork."""
    monkeypatch.setattr(native, "num_threads", lambda: 2)
    here = [t.sum().item() for t in _scan_fwd_bwd()]
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    proc = ctx.Process(target=_child, args=(queue,))
    proc.start()
    try:
        result = queue.get(timeout=60)
    finally:
        proc.join(10)
        if proc.is_alive():
            proc.kill()
    assert result == here


def test_library_is_cached_by_content():
    """A second build finds the cached library (same file, not rewritten); the file is named
    by a hash of the source, so an edited source builds a new one."""
    lib = native.build()
    mtime = lib.stat().st_mtime_ns
    assert native.build() == lib and lib.stat().st_mtime_ns == mtime
    _, version = native._compiler()
    source = native.SOURCE.read_bytes()
    assert native.build_key(source, version) in lib.name
    assert native.build_key(source + b"//", version) not in lib.name


@pytest.fixture
def fresh_native(monkeypatch, tmp_path):
    """An empty kernel cache; the real library is loaded again afterwards."""
    with monkeypatch.context() as m:
        m.setenv(native.DIR_ENV, str(tmp_path))
        native.reset()
        yield m
    native.reset()
    assert native.library() is not None


def test_missing_compiler_falls_back_with_a_reason(fresh_native):
    """No compiler (and nothing cached): nothing raises, auto runs the PyTorch paths and says
    so in kernel_path, scan: fused is unavailable with the reason."""
    fresh_native.setenv("CXX", "/nonexistent/g++")
    assert native.library() is None
    reason = native.unavailable_reason()
    assert "/nonexistent/g++" in reason
    for name, path in [("mamba", "torch-chunked-scan"), ("mamba2", "torch-ssd")]:
        model = build_model(name, {"d_model": 64, "n_layers": 1}, TOKENS)
        model(torch.randint(0, 10, (2, 9))).sum().backward()
        assert model.kernel_path == path
        cls = mixer_class(name)
        assert cls.unavailable_reason(cls.Config(scan="fused"), torch.device("cpu")) == (
            f"scan: fused: {reason}")
        assert cls.unavailable_reason(cls.Config(), torch.device("cpu")) is None
        fused = build_model(name, {"d_model": 64, "scan": "fused"}, TOKENS)
        with pytest.raises(BackendUnavailable, match="nonexistent"):
            fused(torch.randint(0, 10, (2, 9)))


def test_failing_build_leaves_no_library_and_keeps_the_log(fresh_native, tmp_path):
    fake = tmp_path / "fake-g++"
    fake.write_text("#!/bin/sh\n[ \"$1\" = --version ] && echo 'fake 1.0' && exit 0\n"
                    "echo 'error: no such compiler' >&2\nexit 1\n")
    fake.chmod(0o755)
    fresh_native.setenv("CXX", str(fake))
    assert native.library() is None
    assert "g++ failed (1): error: no such compiler" in native.unavailable_reason()
    assert not list(tmp_path.glob("*.so"))
    assert "no such compiler" in next(tmp_path.glob("*.log")).read_text()


def test_disabled_by_environment(fresh_native):
    fresh_native.setenv(native.DISABLE_ENV, "0")
    assert native.library() is None
    assert native.DISABLE_ENV in native.unavailable_reason()


# --- the mixers ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name,path", [("mamba", "cpu-fused-scan"), ("mamba2", "cpu-fused-ssd")])
def test_fused_and_chunked_mixers_compute_the_same_function(name, path):
    """The whole block, fused conv and scan against the PyTorch paths, outputs and the
    gradient of every parameter."""
    torch.manual_seed(0)
    fused = build_model(name, {"d_model": 64, "n_layers": 2, "scan": "fused"}, TOKENS)
    chunked = build_model(name, {"d_model": 64, "n_layers": 2, "scan": "chunked"}, TOKENS)
    chunked.load_state_dict(fused.state_dict())
    x = torch.randint(0, 10, (3, 77))
    outs = []
    for model in (fused, chunked):
        out = model(x)
        out.square().mean().backward()
        outs.append(out)
    assert fused.kernel_path == path
    assert chunked.kernel_path == ("torch-chunked-scan" if name == "mamba" else "torch-ssd")
    assert rel_err(outs[0], outs[1]) < 1e-5
    for (pname, p), q in zip(fused.named_parameters(), chunked.parameters(), strict=True):
        assert rel_err(p.grad, q.grad) < 1e-4, pname


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
def test_unknown_scan_is_a_spec_error(name):
    with pytest.raises(SpecError, match="scan"):
        split_params(name, {"scan": "cuda"})


# --- the elementwise linear recurrence (minGRU, minLSTM, LRU) ------------------------------------
from seqbench.worker.models.minrnn import g as min_g  # noqa: E402
from seqbench.worker.models.ops.linear_scan import (  # noqa: E402
    gated_scan_fused,
    linear_scan,
    linear_scan_fused,
    linear_scan_naive,
)

LIN_LENGTHS = [1, 7, 101, 4096]  # one step, odd, no multiple of any block, long


def crel(a: torch.Tensor, b: torch.Tensor) -> float:
    """rel_err, of both parts when complex."""
    real = (torch.view_as_real(t.detach().resolve_conj()) if t.is_complex() else t
            for t in (a, b))
    return rel_err(*real)


def lin_inputs(L, kind, dtype, channels=37, seed=0):
    """(a, b) for h_t = a_t h_{t-1} + b_t: ``kind`` full (B, L, C), shared (1, L, C) or
    invariant (1, 1, C); complex dtypes get rotating coefficients of modulus < 1."""
    gen = torch.Generator().manual_seed(seed + L)
    shape = {"full": (3, L, channels), "shared": (1, L, channels),
             "invariant": (1, 1, channels)}[kind]
    real = torch.float64
    a = 0.2 + 0.79 * torch.rand(*shape, generator=gen, dtype=real)
    if dtype.is_complex:
        a = torch.polar(a, 6 * torch.rand(*shape, generator=gen, dtype=real))
    b = torch.randn(3, L, channels, generator=gen, dtype=real)
    if dtype.is_complex:
        b = torch.complex(b, torch.randn(3, L, channels, generator=gen, dtype=real))
    return a.to(dtype), b.to(dtype)


def fwd_bwd(fn, inputs, gy):
    xs = [t.detach().requires_grad_() for t in inputs]
    y = fn(*xs)
    return [y, *torch.autograd.grad(y, xs, gy)]


@pytest.mark.parametrize("dtype,kind", [
    (torch.float64, "full"), (torch.float64, "shared"), (torch.float64, "invariant"),
    (torch.float32, "full"), (torch.cdouble, "invariant"), (torch.cdouble, "full"),
    (torch.cfloat, "invariant")], ids=lambda v: str(v).replace("torch.", ""))
@pytest.mark.parametrize("L", LIN_LENGTHS, ids=lambda L: f"L{L}")
def test_fused_linear_scan_matches_the_step_loop(L, kind, dtype):
    a, b = lin_inputs(L, kind, dtype)
    gy = torch.randn(b.shape, dtype=b.dtype, generator=torch.Generator().manual_seed(1))
    fast = fwd_bwd(linear_scan_fused, (a, b), gy)
    ref = fwd_bwd(lambda a, b: linear_scan_naive(a.double() if not a.is_complex() else
                                                 a.cdouble(),
                                                 b.double() if not b.is_complex() else
                                                 b.cdouble())[0], (a, b), gy)
    tol = 1e-12 if dtype in (torch.float64, torch.cdouble) else 2e-5
    assert fast[0].dtype == b.dtype
    for name, x, y in zip(["h", "grad a", "grad b"], fast, ref, strict=True):
        assert x.shape == y.shape, name
        assert crel(x, y) < tol, name


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["f64", "f32"])
@pytest.mark.parametrize("L", LIN_LENGTHS, ids=lambda L: f"L{L}")
def test_fused_gated_scan_matches_the_gates_and_the_step_loop(L, dtype):
    gen = torch.Generator().manual_seed(L)
    z = (3 * torch.randn(2, L, 37, generator=gen, dtype=torch.float64)).to(dtype)
    x = (2 * torch.randn(2, L, 37, generator=gen, dtype=torch.float64)).to(dtype)
    gy = torch.randn(2, L, 37, generator=gen, dtype=torch.float64).to(dtype)

    def ref(z, x):
        z, x = z.double(), x.double()
        return linear_scan_naive(torch.sigmoid(-z), torch.sigmoid(z) * min_g(x))[0]

    fast, slow = fwd_bwd(gated_scan_fused, (z, x), gy), fwd_bwd(ref, (z, x), gy)
    tol = 1e-12 if dtype == torch.float64 else 2e-5
    for name, a, b in zip(["h", "grad z", "grad x"], fast, slow, strict=True):
        assert rel_err(a, b) < tol, name


def test_fused_gated_scan_reads_strided_halves_in_place():
    """The two halves of a projection output, as minGRU passes them (row stride 2E)."""
    proj = torch.randn(2, 50, 2 * 24, dtype=torch.float64)
    x, z = proj.chunk(2, dim=-1)
    assert not z.is_contiguous()
    expected = linear_scan(torch.sigmoid(-z), torch.sigmoid(z) * min_g(x))
    assert rel_err(gated_scan_fused(z, x), expected) < 1e-12


def test_fused_linear_scans_pass_gradcheck():
    gen = torch.Generator().manual_seed(0)
    a = torch.rand(2, 9, 3, generator=gen, dtype=torch.float64).requires_grad_()
    b = torch.randn(2, 9, 3, generator=gen, dtype=torch.float64).requires_grad_()
    assert torch.autograd.gradcheck(linear_scan_fused, (a, b))
    lam = torch.polar(torch.rand(1, 1, 3, dtype=torch.float64) * 0.5 + 0.5,
                      torch.rand(1, 1, 3, dtype=torch.float64) * 6).requires_grad_()
    bc = torch.randn(2, 9, 3, dtype=torch.cdouble, requires_grad=True)
    assert torch.autograd.gradcheck(linear_scan_fused, (lam, bc))
    z = torch.randn(2, 9, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gated_scan_fused, (z, b))


def test_fused_linear_scans_do_not_depend_on_the_thread_count(monkeypatch):
    a, b = lin_inputs(300, "invariant", torch.cfloat, channels=200)
    z, x = lin_inputs(300, "full", torch.float32, channels=200)

    def run():
        gy = torch.ones(b.shape, dtype=b.dtype)
        return [*fwd_bwd(linear_scan_fused, (a, b), gy),
                *fwd_bwd(gated_scan_fused, (z, x), gy.real.contiguous())]

    one = run()
    monkeypatch.setattr(native, "num_threads", lambda: 2)
    assert all(torch.equal(p, q) for p, q in zip(one, run(), strict=True))


# --- the state after the last step (prefill) -----------------------------------------------------
@pytest.mark.parametrize("L", [1, 5, 64, 65, 300], ids=lambda L: f"L{L}")
def test_fused_and_chunked_scans_return_the_last_state(L):
    u, delta, A, B, C, Dk, z = scan_inputs(2, L, 40, 5, seed=L)
    _, h_ref = selective_scan_naive(u, delta, A, B, C)
    y_f, h_f = selective_scan_fused(u, delta, A, B, C, Dk, z, return_state=True)
    assert rel_err(y_f, selective_scan_fused(u, delta, A, B, C, Dk, z)) == 0
    _, h_c = selective_scan(u, delta, A, B, C, chunk=16, return_state=True)
    assert h_f.shape == h_c.shape == h_ref.shape == (2, 40, 5)
    assert rel_err(h_f, h_ref) < 1e-12 and rel_err(h_c, h_ref) < 1e-12
    x, dt, A2, B2, C2, D2 = ssd_inputs(2, L, 3, 20, 1, 6, seed=L)
    _, s_ref = ssd_naive(x, dt, A2, B2, C2)
    _, s_f = ssd_fused(x, dt, A2, B2, C2, D2, return_state=True)
    _, s_c = ssd_chunked(x, dt, A2, B2, C2, 16, return_state=True)
    assert s_f.shape == s_c.shape == s_ref.shape == (2, 3, 20, 6)
    assert rel_err(s_f, s_ref) < 1e-12 and rel_err(s_c, s_ref) < 1e-12
