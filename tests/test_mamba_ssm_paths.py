"""The mamba-ssm paths of the ``mamba`` and ``mamba2`` mixers, on CPU, through stand-in
``mamba_ssm`` and ``causal_conv1d`` modules.

The stand-ins have the real functions' signatures and refuse what the real kernels refuse
(shapes, dtypes, conv widths 2..4, causal-conv1d's channel-last rules, mamba-ssm's asserts),
and also any layout the real functions would silently copy (a last stride that is not 1), so a
call that passes here makes no hidden copy there. They compute with seqbench's pure-PyTorch
ops in the real functions' (B, D, L) layouts, written from the functions' documented semantics
(``mamba_ssm/ops/selective_scan_interface.py``, ``ops/triton/selective_state_update.py``,
``ops/triton/ssd_combined.py``, causal-conv1d's ``causal_conv1d_interface.py``). A mixer
through them must equal the same weights through seqbench's torch path, outputs and gradients,
forward, prefill and steps: a wrong argument (a swapped split, a bias applied twice, a
transposed layout, a per-group norm where ours is global) shows up as a difference.

The stand-ins were checked once against the authors' pure-PyTorch references
(``selective_scan_ref``, ``mamba_inner_ref``, ``selective_state_update_ref``,
``causal_conv1d_ref``, ``causal_conv1d_update_ref``, ``mamba_split_conv1d_scan_ref`` with
``rms_norm_ref``): equal to
2e-7, with one deliberate exception: with ``ngroups > 1`` the stand-in's gated RMSNorm is per
group of ``dim // ngroups`` channels, as the Triton kernel's (``group_size=dim // ngroups`` in
``MambaSplitConv1dScanCombinedFn``), where ``mamba_split_conv1d_scan_ref`` normalises over all
channels. Whether the real kernels agree is tests/test_mamba_ssm_parity.py's job, on a machine
that has them.
"""

from __future__ import annotations

import sys
import types
from typing import Any

import pytest
import torch
import torch.nn.functional as F

from seqbench.worker import backends
from seqbench.worker.models import mamba as mamba_module
from seqbench.worker.models import mixer_class
from seqbench.worker.models.ops import causal_conv, selective_scan, ssd_chunked

CALLS: list[tuple[str, dict[str, Any]]] = []


def record(name: str, **info: Any) -> None:
    CALLS.append((name, info))


def called() -> list[str]:
    return [name for name, _ in CALLS]


def need(cond: bool, what: str) -> None:
    if not cond:
        raise RuntimeError(f"stand-in kernel refused: {what}")


def last_stride_one(name: str, t: torch.Tensor | None) -> None:
    need(t is None or t.stride(-1) == 1, f"{name} must have stride(-1) == 1 (else a copy)")


# --- causal_conv1d -------------------------------------------------------------------------------
def _check_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    dim, width = weight.shape
    need(2 <= width <= 4, "causal_conv1d only supports width between 2 and 4")
    need(x.shape[1] == dim, "x must be (batch, dim, seqlen)")
    need(bias is None or (bias.dtype == weight.dtype and bias.stride(-1) == 1
                          and bias.shape == (dim,)), "bias: weight's dtype, (dim,), stride 1")


def causal_conv1d_fn(x, weight, bias=None, seq_idx=None, initial_states=None,
                     return_final_states=False, final_states_out=None, activation=None):
    need(activation in (None, "silu", "swish"), "activation")
    need(x.stride(2) == 1 or x.stride(1) == 1, "x: time or channels contiguous (else a copy)")
    _check_conv(x, weight, bias)
    if x.stride(1) == 1 and x.stride(2) > 1:  # channel-last
        need(x.shape[1] % 8 == 0 and x.stride(2) % 8 == 0 and x.stride(0) % 8 == 0,
             "channel-last: dim and strides multiples of 8")
    record("causal_conv1d_fn", channel_last=x.stride(1) == 1 and x.stride(2) > 1)
    y = causal_conv(x.transpose(1, 2), weight, bias)  # (B, L, C)
    y = F.silu(y) if activation else y
    return y.transpose(1, 2)


def causal_conv1d_update(x, conv_state, weight, bias=None, activation=None,
                         cache_seqlens=None, conv_state_indices=None):
    need(x.dim() == 2, "one token: x (batch, dim)")
    need(conv_state.dtype == x.dtype, "conv_state dtype must equal x's")
    _check_conv(x.unsqueeze(-1), weight, bias)
    batch, dim = x.shape
    width, state_len = weight.shape[1], conv_state.shape[-1]
    need(conv_state.shape == (batch, dim, state_len) and state_len >= width - 1,
         "conv_state (batch, dim, state_len >= width - 1)")
    record("causal_conv1d_update")
    window = torch.cat([conv_state, x.unsqueeze(-1)], dim=-1)
    y = (window[..., -width:] * weight).sum(-1) + (0 if bias is None else bias)
    conv_state.copy_(window[..., -state_len:])  # in place, as the kernel does
    return (F.silu(y) if activation else y).to(x.dtype)


# --- mamba_ssm: the selective scan ---------------------------------------------------------------
def _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """(B, E, L) in, (B, E, L) out and the last state (B, E, N), by seqbench's chunked scan."""
    delta = delta.float() + (0 if delta_bias is None else delta_bias[:, None].float())
    delta = F.softplus(delta) if delta_softplus else delta
    t = lambda v: v.transpose(1, 2)  # noqa: E731
    y, last = selective_scan(t(u.float()), t(delta), A, t(B.float()), t(C.float()),
                             return_state=True)
    if D is not None:
        y = y + t(u.float()) * D
    if z is not None:
        y = y * F.silu(t(z.float()))
    return t(y).to(u.dtype), last


def selective_scan_fn(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                      return_last_state=False):
    for name, v in (("u", u), ("delta", delta), ("B", B), ("C", C), ("z", z)):
        last_stride_one(name, v)
    batch, dim, L = u.shape
    N = A.shape[1]
    need(delta.shape == u.shape and A.shape == (dim, N) and B.shape == (batch, N, L)
         and C.shape == B.shape, "shapes u, delta (B, D, L), A (D, N), B, C (B, N, L)")
    need(A.dtype == torch.float32 and (D is None or D.dtype == torch.float32)
         and (delta_bias is None or delta_bias.dtype == torch.float32), "A, D, delta_bias fp32")
    record("selective_scan_fn", return_last_state=return_last_state)
    y, last = _scan(u, delta, A, B, C, D, z, delta_bias, delta_softplus)
    return (y, last) if return_last_state else y


def mamba_inner_fn(xz, conv1d_weight, conv1d_bias, x_proj_weight, delta_proj_weight,
                   out_proj_weight, out_proj_bias, A, B=None, C=None, D=None, delta_bias=None,
                   B_proj_bias=None, C_proj_bias=None, delta_softplus=True, checkpoint_lvl=1,
                   b_rms_weight=None, c_rms_weight=None, dt_rms_weight=None,
                   b_c_dt_rms_eps=1e-6):
    last_stride_one("xz", xz)
    batch, two_e, L = xz.shape
    E, R, N = two_e // 2, delta_proj_weight.shape[1], A.shape[1]
    need(conv1d_weight.shape[:2] == (E, 1), "conv1d_weight (E, 1, K), as nn.Conv1d stores it")
    need(x_proj_weight.shape == (R + 2 * N, E) and delta_proj_weight.shape == (E, R),
         "x_proj_weight (R + 2N, E), delta_proj_weight (E, R)")
    need(A.shape == (E, N) and A.dtype == torch.float32 and B is None and C is None,
         "A (E, N) fp32; B, C from x_proj")
    record("mamba_inner_fn", delta_softplus=delta_softplus, checkpoint_lvl=checkpoint_lvl)
    x, z = xz.chunk(2, dim=1)
    x = causal_conv1d_fn(x, conv1d_weight[:, 0], conv1d_bias, activation="silu")
    x_dbl = F.linear(x.transpose(1, 2).reshape(batch * L, E), x_proj_weight)  # (B L, R + 2N)
    delta = (delta_proj_weight @ x_dbl[:, :R].t()).view(E, batch, L).transpose(0, 1)
    Bm = x_dbl[:, R:R + N].reshape(batch, L, N).transpose(1, 2)
    Cm = x_dbl[:, -N:].reshape(batch, L, N).transpose(1, 2)
    y, _ = _scan(x, delta, A, Bm, Cm, D, z, delta_bias, delta_softplus)
    return F.linear(y.transpose(1, 2), out_proj_weight, out_proj_bias)


def selective_state_update(state, x, dt, A, B, C, D=None, z=None, dt_bias=None,
                           dt_softplus=False, state_batch_indices=None):
    """mamba-ssm's argument handling, then its reference semantics (state updated in place)."""
    has_heads = state.dim() > 3
    state4 = state if has_heads else state.unsqueeze(1)
    x, dt = (v.unsqueeze(1) if v.dim() == 2 else v for v in (x, dt))
    z = z.unsqueeze(1) if z is not None and z.dim() == 2 else z
    A = A.unsqueeze(0) if A.dim() == 2 else A
    B, C = (v.unsqueeze(1) if v.dim() == 2 else v for v in (B, C))
    D = D.unsqueeze(0) if D is not None and D.dim() == 1 else D
    dt_bias = dt_bias.unsqueeze(0) if dt_bias is not None and dt_bias.dim() == 1 else dt_bias
    batch, nheads, dim, dstate = state4.shape
    ngroups = B.shape[1]
    need(x.shape == (batch, nheads, dim) and dt.shape == x.shape, "x, dt (B, H, P)")
    need(A.shape == (nheads, dim, dstate) and nheads % ngroups == 0, "A (H, P, N)")
    need(B.shape == (batch, ngroups, dstate) and C.shape == B.shape, "B, C (B, G, N)")
    need(D is None or D.shape == (nheads, dim), "D (H, P)")
    need(z is None or z.shape == x.shape, "z like x")
    need(dt_bias is None or dt_bias.shape == (nheads, dim), "dt_bias (H, P)")
    tie = (A.stride(-1) == 0 and A.stride(-2) == 0 and dt.stride(-1) == 0
           and dt_bias is not None and dt_bias.stride(-1) == 0)
    record("selective_state_update", tie_hdim=tie)
    dtv = dt.float() + (0 if dt_bias is None else dt_bias.float())
    dtv = F.softplus(dtv) if dt_softplus else dtv
    rep = nheads // ngroups
    Bh, Ch = (v.float().repeat_interleave(rep, dim=1) for v in (B, C))  # (B, H, N)
    new = (state4.float() * torch.exp(dtv.unsqueeze(-1) * A.float())
           + (dtv * x.float()).unsqueeze(-1) * Bh.unsqueeze(2))
    state4.copy_(new)
    out = (new @ Ch.unsqueeze(-1)).squeeze(-1)
    if D is not None:
        out = out + x.float() * D.float()
    if z is not None:
        out = out * F.silu(z.float())
    out = out.to(x.dtype)
    return out if has_heads else out.squeeze(1)


# --- mamba_ssm: the SSD --------------------------------------------------------------------------
def mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None,
                              initial_states=None, seq_idx=None, cu_seqlens=None,
                              dt_softplus=False, dt_limit=(0.0, float("inf")),
                              return_final_states=False, return_varlen_states=False,
                              state_dtype=None):
    batch, L, nheads, headdim = x.shape
    ngroups, dstate = B.shape[2:]
    need(nheads % ngroups == 0 and B.shape == (batch, L, ngroups, dstate) and C.shape == B.shape
         and dt.shape == (batch, L, nheads) and A.shape == (nheads,), "SSD shapes")
    need(D is None or D.shape in ((nheads, headdim), (nheads,)), "D (H,) or (H, P)")
    need(initial_states is None and seq_idx is None, "no initial states or seq_idx")
    # the real function copies B, C without a contiguous last dim, and x unless its last or
    # time dim is contiguous; recorded, not refused (the fallback path's conv output may)
    copies = [n for n, v in (("B", B), ("C", C)) if v.stride(-1) != 1]
    if not (x.stride(-1) == 1 or x.stride(1) == 1):
        copies.append("x")
    record("mamba_chunk_scan_combined", chunk_size=chunk_size,
           return_final_states=return_final_states, copies=copies)
    dtv = dt.float() + (0 if dt_bias is None else dt_bias.float())
    dtv = F.softplus(dtv) if dt_softplus else dtv
    y, last = ssd_chunked(x.float(), dtv, A, B.float(), C.float(), chunk_size, return_state=True)
    if D is not None:
        y = y + x.float() * (D.float() if D.dim() == 2 else D.float()[:, None])
    if z is not None:
        y = y * F.silu(z.float())
    y = y.to(x.dtype)
    last = last.to(state_dtype or C.dtype)
    return (y, last) if return_final_states else y


def mamba_split_conv1d_scan_combined(zxbcdt, conv1d_weight, conv1d_bias, dt_bias, A, D,
                                     chunk_size, initial_states=None, seq_idx=None,
                                     dt_limit=(0.0, float("inf")), return_final_states=False,
                                     activation="silu", rmsnorm_weight=None, rmsnorm_eps=1e-6,
                                     outproj_weight=None, outproj_bias=None, headdim=None,
                                     ngroups=1, norm_before_gate=True, state_dtype=None):
    need(activation in (None, "silu", "swish"), "activation")
    if D.dim() == 1:
        need(headdim is not None, "headdim with a 1-D D")
        nheads = D.shape[0]
    else:
        nheads, headdim = D.shape
    batch, L, _ = zxbcdt.shape
    dim = nheads * headdim
    dstate = (conv1d_weight.shape[0] - dim) // ngroups // 2
    d_nonssm = (zxbcdt.shape[-1] - 2 * dim - 2 * ngroups * dstate - nheads) // 2
    need(nheads % ngroups == 0 and d_nonssm == 0, "the split adds up, no non-SSM part")
    need(dt_bias.shape == (nheads,) and A.shape == (nheads,), "dt_bias, A (H,)")
    need(conv1d_weight.dim() == 2, "conv1d_weight (C, K)")
    need((dim + 2 * ngroups * dstate) % 8 == 0, "conv channels a multiple of 8 (ensure_stride)")
    record("mamba_split_conv1d_scan_combined", ngroups=ngroups, norm=rmsnorm_weight is not None,
           outproj=outproj_weight is not None, norm_before_gate=norm_before_gate,
           return_final_states=return_final_states)
    z, xBC, dt = zxbcdt.split([dim, dim + 2 * ngroups * dstate, nheads], dim=-1)
    xBC = xBC if xBC.stride(1) % 8 == 0 else xBC.contiguous()  # its ensure_stride
    xBC = causal_conv1d_fn(xBC.transpose(1, 2), conv1d_weight, conv1d_bias,
                           activation=activation).transpose(1, 2)
    x, B, C = xBC.split([dim, ngroups * dstate, ngroups * dstate], dim=-1)
    x = x.reshape(batch, L, nheads, headdim)
    B, C = (v.reshape(batch, L, ngroups, dstate).contiguous() for v in (B, C))
    zh = z.reshape(batch, L, nheads, headdim)
    y, last = mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=D,
                                        z=zh if rmsnorm_weight is None else None,
                                        dt_bias=dt_bias, dt_softplus=True,
                                        return_final_states=True, state_dtype=state_dtype)
    out = y.reshape(batch, L, dim)
    if rmsnorm_weight is not None:  # RMSNorm per group of dim / ngroups channels
        g = out.float() if norm_before_gate else (out * F.silu(z)).float()
        g = g.view(batch, L, ngroups, dim // ngroups)
        g = (g * torch.rsqrt(g.pow(2).mean(-1, keepdim=True) + rmsnorm_eps)).view(batch, L, dim)
        g = g * rmsnorm_weight.float()
        out = (g * F.silu(z.float()) if norm_before_gate else g).to(y.dtype)
    if outproj_weight is not None:
        out = F.linear(out, outproj_weight, outproj_bias)
    return (out, last) if return_final_states else out


# --- installing them -----------------------------------------------------------------------------
def _module(name: str, **attrs: Any) -> types.ModuleType:
    mod = types.ModuleType(name)
    mod.__dict__.update(attrs)
    return mod


def install_stand_ins(monkeypatch: pytest.MonkeyPatch) -> None:
    """The stand-in modules in sys.modules, and mamba-ssm's paths allowed on CPU."""
    mods = {
        "mamba_ssm": _module("mamba_ssm"),
        "mamba_ssm.ops": _module("mamba_ssm.ops"),
        "mamba_ssm.ops.selective_scan_interface": _module(
            "mamba_ssm.ops.selective_scan_interface", selective_scan_fn=selective_scan_fn,
            mamba_inner_fn=mamba_inner_fn),
        "mamba_ssm.ops.triton": _module("mamba_ssm.ops.triton"),
        "mamba_ssm.ops.triton.selective_state_update": _module(
            "mamba_ssm.ops.triton.selective_state_update",
            selective_state_update=selective_state_update),
        "mamba_ssm.ops.triton.ssd_combined": _module(
            "mamba_ssm.ops.triton.ssd_combined",
            mamba_chunk_scan_combined=mamba_chunk_scan_combined,
            mamba_split_conv1d_scan_combined=mamba_split_conv1d_scan_combined),
        "causal_conv1d": _module("causal_conv1d", causal_conv1d_fn=causal_conv1d_fn,
                                 causal_conv1d_update=causal_conv1d_update),
    }
    for name, mod in mods.items():
        monkeypatch.setitem(sys.modules, name, mod)
    # mamba-ssm's kernels need CUDA; here the stand-ins run on CPU tensors
    monkeypatch.setattr(mamba_module, "mamba_ssm_reason",
                        lambda module, device: backends.import_error(module))
    backends.import_error.cache_clear()
    CALLS.clear()


@pytest.fixture
def stand_ins(monkeypatch):
    install_stand_ins(monkeypatch)
    yield monkeypatch
    backends.import_error.cache_clear()


def pair(name: str, d_model: int = 16, **cfg: Any):
    """The mixer on mamba-ssm's path and the same weights on seqbench's torch path."""
    cls = mixer_class(name)
    torch.manual_seed(0)
    theirs = cls(d_model, cls.Config(backend="mamba_ssm", **cfg))
    ours = cls(d_model, cls.Config(backend="torch", scan="chunked", **cfg))
    ours.load_state_dict(theirs.state_dict())
    with torch.no_grad():  # no zero parameters: every argument must matter
        for p in (*theirs.parameters(), *ours.parameters()):
            if p.abs().max() == 0:
                p.add_(0.1)
        ours.load_state_dict(theirs.state_dict())
    return theirs, ours


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.detach(), b.detach()
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-30))


def assert_same_function(theirs, ours, x: torch.Tensor, tol: float = 2e-5) -> None:
    """Outputs and the gradients of the input and every parameter agree."""
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = theirs(xa), ours(xb)
    assert rel(ya, yb) < tol
    w = torch.randn_like(yb)
    (ya * w).sum().backward()
    (yb * w).sum().backward()
    assert rel(xa.grad, xb.grad) < tol
    pa, pb = dict(theirs.named_parameters()), dict(ours.named_parameters())
    for n in pa:
        assert rel(pa[n].grad, pb[n].grad) < tol, n


def stream(mixer, x: torch.Tensor, split: int) -> tuple[torch.Tensor, dict[str, Any]]:
    """Prefill ``x[:, :split]``, then step through the rest; the outputs of both."""
    with torch.no_grad():
        y_pre, state = mixer.prefill(x[:, :split])
        ys = [y_pre]
        for x_t in x[:, split:].unbind(1):
            y_t, state = mixer.step(x_t, state)
            ys.append(y_t.unsqueeze(1))
    return torch.cat(ys, dim=1), state


X = torch.randn(2, 23, 16, generator=torch.Generator().manual_seed(3))


# --- mamba ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [False, True], ids=["no-bias", "bias"])
def test_mamba_forward_runs_mamba_inner_fn_and_equals_the_torch_path(stand_ins, bias):
    theirs, ours = pair("mamba", bias=bias)
    assert_same_function(theirs, ours, X)
    assert theirs.kernel_path == "mamba_ssm-mamba_inner_fn+causal_conv1d"
    assert called() == ["mamba_inner_fn", "causal_conv1d_fn"]
    assert CALLS[0][1] == {"delta_softplus": True, "checkpoint_lvl": 1}


@pytest.mark.parametrize("d_conv,conv_module,path", [
    (5, True, "mamba_ssm-selective_scan_fn+torch-conv1d"),  # causal-conv1d has widths 2..4
    (4, False, "mamba_ssm-selective_scan_fn+torch-conv1d")])  # causal-conv1d not installed
def test_mamba_without_causal_conv1d_runs_selective_scan_fn(stand_ins, d_conv, conv_module, path):
    if not conv_module:
        stand_ins.setitem(sys.modules, "causal_conv1d", None)
        backends.import_error.cache_clear()
    theirs, ours = pair("mamba", d_conv=d_conv)
    assert_same_function(theirs, ours, X)
    assert theirs.kernel_path == path
    assert called() == ["selective_scan_fn"]


def test_mamba_prefill_and_steps_run_mamba_ssm_kernels_and_equal_the_forward(stand_ins):
    theirs, ours = pair("mamba")
    with torch.no_grad():
        full = ours(X)
    streamed, state = stream(theirs, X, split=9)
    assert rel(streamed, full) < 2e-5
    assert theirs.kernel_path == "mamba_ssm-selective_state_update+causal_conv1d_update"
    assert called()[:2] == ["causal_conv1d_fn", "selective_scan_fn"]  # the prefill
    assert called()[2:] == ["causal_conv1d_update", "selective_state_update"] * (23 - 9)
    # the state tensors are updated in place and handed back, as mamba-ssm's Mamba.step does
    s0 = {k: v.clone() for k, v in state.items()}
    ids = {k: id(v) for k, v in state.items()}
    with torch.no_grad():
        _, state2 = theirs.step(X[:, 0], state)
    assert {k: id(v) for k, v in state2.items()} == ids
    assert not torch.equal(state2["ssm"], s0["ssm"])
    # ...and the torch path's step from the same state gives the same output
    with torch.no_grad():
        ya, _ = theirs.step(X[:, 1], {k: v.clone() for k, v in s0.items()})
        yb, _ = ours.step(X[:, 1], {k: v.clone() for k, v in s0.items()})
    assert rel(ya, yb) < 2e-5


def test_mamba_state_from_the_mamba_ssm_prefill_equals_the_torch_prefill(stand_ins):
    theirs, ours = pair("mamba")
    with torch.no_grad():
        ya, sa = theirs.prefill(X)
        yb, sb = ours.prefill(X)
    assert rel(ya, yb) < 2e-5
    for k in ("conv", "ssm"):
        assert sa[k].shape == sb[k].shape and sa[k].is_contiguous()
        assert rel(sa[k], sb[k]) < 2e-5, k


# --- mamba2 --------------------------------------------------------------------------------------
M2 = {"headdim": 8, "d_state": 8, "chunk": 8}


@pytest.mark.parametrize("ngroups,path,norm", [
    (1, "mamba_ssm-mamba_split_conv1d_scan_combined", True),
    (2, "mamba_ssm-mamba_split_conv1d_scan_combined+torch-gated-norm", False)])
def test_mamba2_forward_runs_the_fused_split_conv_scan(stand_ins, ngroups, path, norm):
    theirs, ours = pair("mamba2", ngroups=ngroups, **M2)
    assert_same_function(theirs, ours, X)
    assert theirs.kernel_path == path
    assert called()[0] == "mamba_split_conv1d_scan_combined"
    info = CALLS[0][1]
    assert info["norm"] == norm and info["outproj"] == norm and not info["norm_before_gate"]


def test_mamba2_with_groups_would_differ_with_the_norm_inside_the_kernel(stand_ins):
    """Why ngroups > 1 keeps the norm outside the call: mamba-ssm's norm there is per group of
    ``dim // ngroups`` channels, the model's over all of them."""
    theirs, ours = pair("mamba2", ngroups=2, **M2)
    with torch.no_grad():
        inside = mamba_split_conv1d_scan_combined(
            theirs.in_proj(X), theirs.conv1d.weight.squeeze(1), theirs.conv1d.bias,
            theirs.dt_bias, -torch.exp(theirs.A_log.float()), theirs.D, M2["chunk"],
            rmsnorm_weight=theirs.norm_weight, rmsnorm_eps=theirs.config.norm_eps,
            outproj_weight=theirs.out_proj.weight, outproj_bias=theirs.out_proj.bias,
            headdim=M2["headdim"], ngroups=2, norm_before_gate=False)
        assert rel(theirs(X), ours(X)) < 2e-5
        assert rel(inside, ours(X)) > 1e-3


def test_mamba2_conv_width_not_a_multiple_of_8_runs_chunk_scan_combined(stand_ins):
    theirs, ours = pair("mamba2", headdim=8, d_state=3, chunk=8)  # conv channels 32 + 6
    assert theirs.conv_dim % 8
    assert_same_function(theirs, ours, X)
    assert theirs.kernel_path == "mamba_ssm-mamba_chunk_scan_combined"
    assert called() == ["mamba_chunk_scan_combined"]


@pytest.mark.parametrize("ngroups", [1, 2])
def test_mamba2_prefill_and_steps_run_mamba_ssm_kernels_and_equal_the_forward(stand_ins,
                                                                             ngroups):
    theirs, ours = pair("mamba2", ngroups=ngroups, **M2)
    with torch.no_grad():
        full = ours(X)
        _, state_ours = ours.prefill(X[:, :9])
    streamed, _ = stream(theirs, X, split=9)
    assert rel(streamed, full) < 2e-5
    assert theirs.kernel_path == "mamba_ssm-selective_state_update+causal_conv1d_update"
    prefill = CALLS[0]
    assert prefill[0] == "mamba_split_conv1d_scan_combined" and prefill[1]["return_final_states"]
    steps = [info for name, info in CALLS if name == "selective_state_update"]
    assert len(steps) == 23 - 9 and all(info["tie_hdim"] for info in steps)
    CALLS.clear()
    with torch.no_grad():
        _, state = theirs.prefill(X[:, :9])
    for k in ("conv", "ssm"):
        assert rel(state[k], state_ours[k]) < 2e-5, k


def test_an_explicit_mamba_ssm_backend_without_it_is_unavailable(stand_ins):
    stand_ins.setitem(sys.modules, "mamba_ssm.ops.selective_scan_interface", None)
    backends.import_error.cache_clear()
    cls = mixer_class("mamba")
    reason = cls.unavailable_reason(cls.Config(backend="mamba_ssm"), torch.device("cpu"))
    assert reason and "mamba_ssm.ops.selective_scan_interface" in reason
