"""Optional job: seqbench's pure-PyTorch paths against mamba-ssm's own references.

Needs mamba-ssm installed (on a CPU machine, the README's CPU install; its compiled extensions
are absent), and runs only when asked for::

    pytest -m mamba_ssm tests/test_mamba_ssm_parity.py

mamba-ssm imports its compiled ``selective_scan_cuda`` (and causal-conv1d its
``causal_conv1d_cuda``) unconditionally, so this module puts empty stand-ins under those names
in ``sys.modules`` for its own duration only; the references checked here never call them. In
``mamba_inner_ref`` the CUDA ``selective_scan_fn`` and ``causal_conv1d_fn`` are swapped for
their references (``selective_scan_ref``, ``causal_conv1d_ref``), which makes it a pure-PyTorch
Mamba block from the authors' code.

The mixers' mamba-ssm paths (``mamba_inner_fn``, ``selective_scan_fn``, ``causal_conv1d_fn``,
``causal_conv1d_update``, ``selective_state_update``; see seqbench/worker/models/mamba.py) are
checked two ways: on CPU with each kernel swapped for the authors' reference of it (so the
arguments seqbench passes are read by mamba-ssm's own code), and on a CUDA device with the real
kernels, against seqbench's torch path with the same weights (forward, gradients, prefill and
steps). tests/test_mamba_ssm_paths.py runs the same paths everywhere through stand-ins.
"""

from __future__ import annotations

import importlib.util
import types

import pytest
import torch
import torch.nn.functional as F

from seqbench.worker import backends
from seqbench.worker.models import mamba as mamba_module
from seqbench.worker.models import mixer_class
from seqbench.worker.models.ops import selective_scan, ssd_chunked

pytestmark = pytest.mark.mamba_ssm

if importlib.util.find_spec("mamba_ssm") is None:
    pytest.skip("mamba-ssm is not installed (see README: On a GPU / CPU install)",
                allow_module_level=True)

TOL = {torch.float32: 1e-5, torch.bfloat16: 8e-3}  # max |a - b| / max |b|, as in test_ssm


def rel_err(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).abs().max() / b.abs().max())


@pytest.fixture(scope="module")
def ref():
    """mamba-ssm's reference functions, imported with the compiled extensions stubbed."""
    with pytest.MonkeyPatch.context() as mp:
        for ext in ("selective_scan_cuda", "causal_conv1d_cuda"):
            mp.setitem(__import__("sys").modules, ext, types.ModuleType(ext))
        import mamba_ssm.ops.selective_scan_interface as ssi
        from causal_conv1d.causal_conv1d_interface import causal_conv1d_ref
        from mamba_ssm.modules.ssd_minimal import ssd_minimal_discrete

        mp.setattr(ssi, "selective_scan_fn", ssi.selective_scan_ref)
        mp.setattr(ssi, "causal_conv1d_fn", causal_conv1d_ref)
        yield types.SimpleNamespace(selective_scan_ref=ssi.selective_scan_ref,
                                    mamba_inner_ref=ssi.mamba_inner_ref,
                                    ssd_minimal_discrete=ssd_minimal_discrete)


def scan_inputs(batch, length, d, n, dtype):
    gen = torch.Generator().manual_seed(length)
    u = torch.randn(batch, length, d, generator=gen)
    delta = F.softplus(torch.randn(batch, length, d, generator=gen) - 1)
    A = -(torch.rand(d, n, generator=gen) * 4 + 0.5)
    B, C = torch.randn(2, batch, length, n, generator=gen)
    return [t.to(dtype).requires_grad_() for t in (u, delta, A, B, C)]


def t(x: torch.Tensor) -> torch.Tensor:  # seqbench (B, L, X) <-> mamba-ssm (B, X, L)
    return x.transpose(1, 2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("length", [1, 7, 64, 257, 1024], ids=lambda L: f"ref-L{L}")
def test_selective_scan_matches_selective_scan_ref(ref, length, dtype):
    u, delta, A, B, C = scan_inputs(2, length, 8, 4, dtype)
    theirs = t(ref.selective_scan_ref(t(u), t(delta), A, t(B), t(C)))
    assert rel_err(selective_scan(u, delta, A, B, C), theirs) < TOL[dtype]


@pytest.mark.parametrize("length", [5, 100], ids=lambda L: f"ref-grad-L{L}")
def test_selective_scan_gradients_match_selective_scan_ref(ref, length):
    xs = scan_inputs(2, length, 6, 4, torch.float32)
    gy = torch.randn(2, length, 6)
    ours = torch.autograd.grad(selective_scan(*xs), xs, gy)
    u, delta, A, B, C = xs
    theirs = torch.autograd.grad(t(ref.selective_scan_ref(t(u), t(delta), A, t(B), t(C))), xs, gy)
    for name, a, b in zip(["u", "delta", "A", "B", "C"], ours, theirs, strict=True):
        assert rel_err(a, b) < 1e-4, name


@pytest.mark.parametrize("length", [1, 33, 300], ids=lambda L: f"inner-L{L}")
def test_mamba_block_matches_mamba_inner_ref(ref, length):
    torch.manual_seed(0)
    cls = mixer_class("mamba")
    m = cls(32, cls.Config(backend="torch"))
    x = torch.randn(2, length, 32)
    theirs = ref.mamba_inner_ref(
        t(m.in_proj(x)), m.conv1d.weight, m.conv1d.bias, m.x_proj.weight, m.dt_proj.weight,
        m.out_proj.weight, m.out_proj.bias, -torch.exp(m.A_log.float()), None, None,
        m.D.float(), delta_bias=m.dt_proj.bias.float(), delta_softplus=True)
    assert rel_err(m(x), theirs) < 1e-5


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("length,chunk", [(16, 16), (128, 32), (512, 64)],
                         ids=["minimal-L16-Q16", "minimal-L128-Q32", "minimal-L512-Q64"])
def test_ssd_chunked_matches_ssd_minimal_discrete(ref, length, chunk, dtype):
    gen = torch.Generator().manual_seed(length)
    heads, headdim, groups, n = 4, 8, 2, 16
    x = torch.randn(2, length, heads, headdim, generator=gen).to(dtype)
    dt = F.softplus(torch.randn(2, length, heads, generator=gen)).to(dtype)
    A = -(torch.rand(heads, generator=gen) * 3 + 0.1)
    B, C = (torch.randn(2, length, groups, n, generator=gen).to(dtype) for _ in range(2))
    B_h, C_h = (g.float().repeat_interleave(heads // groups, dim=2) for g in (B, C))
    theirs, _ = ref.ssd_minimal_discrete(x.float() * dt.float().unsqueeze(-1),
                                         A * dt.float(), B_h, C_h, chunk)
    assert rel_err(ssd_chunked(x, dt, A, B, C, chunk=chunk), theirs) < TOL[dtype]


# --- the mixers' mamba-ssm paths ------------------------------------------------------------------
def mixer_pair(name, device, **cfg):
    """The mixer on mamba-ssm's path and the same weights on seqbench's torch path."""
    cls = mixer_class(name)
    torch.manual_seed(0)
    theirs = cls(32, cls.Config(backend="mamba_ssm", **cfg)).to(device)
    ours = cls(32, cls.Config(backend="torch", scan="chunked", **cfg)).to(device)
    ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def streamed(mixer, x, split):
    with torch.no_grad():
        y, state = mixer.prefill(x[:, :split])
        ys = [y]
        for x_t in x[:, split:].unbind(1):
            y_t, state = mixer.step(x_t, state)
            ys.append(y_t.unsqueeze(1))
    return torch.cat(ys, dim=1)


@pytest.fixture
def refs_as_kernels(ref, monkeypatch):
    """On CPU: mamba-ssm's and causal-conv1d's references in place of their kernels, and the
    mixers allowed to take the mamba-ssm path without CUDA."""
    import causal_conv1d
    import mamba_ssm.ops.selective_scan_interface as ssi
    from causal_conv1d.causal_conv1d_interface import causal_conv1d_ref, causal_conv1d_update_ref

    monkeypatch.setattr(ssi, "mamba_inner_fn", ssi.mamba_inner_ref)
    monkeypatch.setattr(causal_conv1d, "causal_conv1d_fn", causal_conv1d_ref)
    monkeypatch.setattr(causal_conv1d, "causal_conv1d_update", causal_conv1d_update_ref)
    try:  # imports triton at module level
        import mamba_ssm.ops.triton.selective_state_update as ssu
    except Exception:  # no triton here: the step runs seqbench's torch step
        monkeypatch.setitem(__import__("sys").modules, mamba_module.STEP_MODULE, None)
    else:
        monkeypatch.setattr(ssu, "selective_state_update", ssu.selective_state_update_ref)
    monkeypatch.setattr(mamba_module, "mamba_ssm_reason",
                        lambda module, device: backends.import_error(module))
    backends.import_error.cache_clear()
    yield
    backends.import_error.cache_clear()


@pytest.mark.parametrize("d_conv,path", [(4, "mamba_ssm-mamba_inner_fn+causal_conv1d"),
                                         (5, "mamba_ssm-selective_scan_fn+torch-conv1d")])
def test_mamba_ssm_path_read_by_the_authors_references_equals_the_torch_path(
        refs_as_kernels, d_conv, path):
    theirs, ours = mixer_pair("mamba", "cpu", d_conv=d_conv)
    x = torch.randn(2, 37, 32)
    assert rel_err(theirs(x), ours(x)) < 1e-5
    assert theirs.kernel_path == path
    assert rel_err(streamed(theirs, x, 20), ours(x).detach()) < 1e-4


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name,cfg", [("mamba", {}), ("mamba2", {"headdim": 16}),
                                      ("mamba2", {"headdim": 16, "ngroups": 2})],
                         ids=["mamba", "mamba2", "mamba2-groups"])
def test_real_kernels_equal_the_torch_path(name, cfg, dtype):
    theirs, ours = mixer_pair(name, "cuda", **cfg)
    x = torch.randn(2, 300, 32, device="cuda")
    tol = {torch.float32: 1e-3, torch.bfloat16: 3e-2}[dtype]  # Triton/CUDA reduction orders
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        ya, yb = theirs(x), ours(x)
        w = torch.randn_like(yb.float())
        (ya.float() * w).sum().backward()
        (yb.float() * w).sum().backward()
    assert theirs.kernel_path.startswith("mamba_ssm-")
    assert rel_err(ya, yb) < tol
    grads = {n: p.grad for n, p in ours.named_parameters()}
    for n, p in theirs.named_parameters():
        assert rel_err(p.grad, grads[n]) < 10 * tol, n
    with torch.autocast("cuda", dtype=dtype, enabled=dtype != torch.float32):
        assert rel_err(streamed(theirs, x, 200), yb.detach()) < 10 * tol
    assert theirs.kernel_path == "mamba_ssm-selective_state_update+causal_conv1d_update"
