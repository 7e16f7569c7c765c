"""First-order linear recurrences ``h_t = a_t * h_{t-1} + b_t`` (elementwise, ``h_{-1} = 0``)
along dimension 1, in pure PyTorch: two parallel forms and the step loop they are tested
against.

- :func:`linear_scan`: a chunked scan with a hand-written backward. The sequence is cut into
  ``n`` chunks of ``Q`` steps (``Q ~ sqrt(L)``) laid out steps-first, ``(Q, n, B, ...)``; one
  loop of ``Q`` steps runs the recurrence inside every chunk at once (each step one fused
  multiply-add over a contiguous slice holding all chunks), a loop of ``n`` steps carries the
  chunk ends, and one multiply-add adds each carried state times the running product of
  coefficients. So ``2 sqrt(L)`` small sequential steps instead of ``L``, and no product is
  ever divided by (products of coefficients ``|a| <= 1`` can only underflow to 0, their true
  value). The backward runs the adjoint recurrence the same way from the end,
  ``g_t = dL/dh_t + conj(a_{t+1}) g_{t+1}``, ``dL/db_t = g_t``, ``dL/da_t = g_t conj(h_{t-1})``
  (PyTorch's convention for complex tensors), instead of autograd through ``2 sqrt(L)`` graph
  nodes. Real or complex; ``a`` broadcastable to ``b``, with length 1 along time for a
  time-invariant recurrence (the LRU's). On CPU it is memory-bound (about 15 passes over
  ``b``'s size forward and backward), so a step loop over few channels, which pays Python
  overhead per step instead, is only 2-4x slower (``python -m seqbench.bench.mixers``).
- :func:`log_linear_scan`: the recurrence for positive ``a`` and ``b`` given in log space
  (Heinsen 2023, "Efficient Parallelization of a Ubiquitous Sequential Computation",
  github.com/glassroom/heinsen_sequence; the form minGRU and minLSTM train with, Feng et al.
  2024, App. B): ``log h_t = a*_t + logcumsumexp_s(log b_s - a*_s)`` with ``a*_t`` the cumulative
  sum of ``log a``. Over one long sequence ``a*`` reaches ``-L`` times the mean log coefficient
  and the final sum ``a* + logcumsumexp(...)`` cancels two large numbers (fp32, L = 4096, minGRU
  gates from N(0, 1) pre-activations: relative error 4e-4, measured), so the heinsen form runs
  inside chunks of ``chunk`` steps, where ``|a*|`` stays small, and the chunks are joined in
  linear space by :func:`linear_scan` over their last positions (all terms positive).
- :func:`linear_scan_naive`: the step loop, one Python step per position.

Both parallel forms compute in at least fp32 and return ``b``'s dtype (complex for complex).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from seqbench.worker.models.ops import native


def _steps_first(x: torch.Tensor, Q: int, nc: int) -> torch.Tensor:
    """``(B, nc * Q, ...) -> (Q, nc, B, ...)``, contiguous: each step of a chunk loop is then one
    contiguous slice (strided slices of ``(B, nc, Q, ...)`` ran about 5x slower, measured)."""
    x = x.reshape(x.shape[0], nc, Q, *x.shape[2:])
    return x.permute(2, 1, 0, *range(3, x.dim())).contiguous()


def _time_major(x: torch.Tensor, L: int) -> torch.Tensor:
    """Inverse of :func:`_steps_first`: ``(Q, nc, B, ...) -> (B, L, ...)``, the padding cut."""
    x = x.permute(2, 1, 0, *range(3, x.dim()))
    return x.reshape(x.shape[0], -1, *x.shape[3:])[:, :L]


def _forward_sf(a: torch.Tensor, b: torch.Tensor, varying: bool) -> torch.Tensor:
    """``h_t = a_t h_{t-1} + b_t`` on steps-first ``b (Q, nc, B, ...)``; ``a`` likewise, or
    ``(B | 1, ...)`` when time-invariant. No graph."""
    Q, nc = b.shape[:2]
    h = torch.empty_like(b)  # the recurrence inside every chunk, from h = 0 at its start
    h[0] = b[0]
    P = None  # product of a from the chunk start to each step
    if varying:
        P = torch.empty_like(b)
        P[0] = a[0]
    for q in range(1, Q):  # one multiply-add over all chunks per step
        torch.addcmul(b[q], a[q] if varying else a, h[q - 1], out=h[q])
        if varying:
            torch.mul(a[q], P[q - 1], out=P[q])
    if nc > 1:
        if not varying:  # a^1 .. a^Q, shared by every chunk
            P = torch.cumprod(a.unsqueeze(0).expand(Q, *a.shape), dim=0).unsqueeze(1)
        total = P[-1]  # (nc | 1, B, ...): the whole chunk's product
        carried = torch.zeros_like(h[0])  # (nc, B, ...): the state entering each chunk
        for c in range(1, nc):
            torch.addcmul(h[-1, c - 1], total[c - 1] if varying else total[0], carried[c - 1],
                          out=carried[c])
        h.addcmul_(P, carried.unsqueeze(0))
    return h


def _adjoint_sf(a: torch.Tensor, g: torch.Tensor, varying: bool) -> torch.Tensor:
    """The adjoint recurrence ``u_t = g_t + a_{t+1} u_{t+1}`` (zero after the end), run from the
    end, on steps-first tensors as in :func:`_forward_sf` (``a`` unshifted). No graph."""
    Q, nc = g.shape[:2]
    u = torch.empty_like(g)  # inside every chunk, from u = 0 after its end
    u[-1] = g[-1]
    P = None  # product of the links a_{q+1} .. a_{Q-1} from each step to the chunk end
    if varying:
        P = torch.empty_like(g)
        P[-1] = 1
    for q in range(Q - 2, -1, -1):
        a_next = a[q + 1] if varying else a
        torch.addcmul(g[q], a_next, u[q + 1], out=u[q])
        if varying:
            torch.mul(a_next, P[q + 1], out=P[q])
    if nc > 1:
        if not varying:  # a^(Q-1) .. a^0
            ones = torch.ones_like(a).unsqueeze(0)
            powers = torch.cumprod(torch.cat([ones, a.unsqueeze(0).expand(Q - 1, *a.shape)]), 0)
            P = powers.flip(0).unsqueeze(1)  # (Q, 1, B | 1, ...)
        # E[c]: what enters chunk c from the right, a_{first step of chunk c+1} times u there
        E = torch.zeros_like(u[0])  # (nc, B, ...)
        for c in range(nc - 2, -1, -1):
            link = a[0, c + 1] if varying else a
            P0 = P[0, c + 1] if varying else P[0, 0]
            torch.mul(link, torch.addcmul(u[0, c + 1], P0, E[c + 1]), out=E[c])
        u.addcmul_(P, E.unsqueeze(0))
    return u


def _layout(L: int, chunk: int) -> tuple[int, int, int]:
    """(steps per chunk Q, chunks, padded steps)."""
    Q = max(1, min(chunk, L))
    nc = -(-L // Q)
    return Q, nc, nc * Q - L


def _pad_time(x: torch.Tensor, pad: int) -> torch.Tensor:
    return F.pad(x, [0, 0] * (x.dim() - 2) + [0, pad]) if pad else x


def _reduce_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum ``grad`` over the dimensions that were broadcast from ``shape``."""
    dims = [d for d, (g, s) in enumerate(zip(grad.shape, shape, strict=True)) if s == 1 != g]
    return grad.sum(dim=dims, keepdim=True) if dims else grad


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
        L = b.shape[1]
        Q, nc, pad = _layout(L, chunk)
        varying = a.shape[1] != 1
        # padded steps come last: dropped going forward; a = 0 and g = 0 there going back
        b_sf = _steps_first(_pad_time(b, pad), Q, nc)
        if varying:
            a_sf = _steps_first(_pad_time(a.expand(b.shape[0], *b.shape[1:]), pad), Q, nc)
        else:
            a_sf = a[:, 0]  # (B | 1, ...)
        h_sf = _forward_sf(a_sf, b_sf, varying)
        ctx.save_for_backward(a_sf, h_sf)
        ctx.a_shape, ctx.L, ctx.varying = a.shape, L, varying
        return _time_major(h_sf, L)

    @staticmethod
    def backward(ctx: Any, grad_h: torch.Tensor) -> tuple[Any, ...]:
        a_sf, h_sf = ctx.saved_tensors
        Q, nc = h_sf.shape[:2]
        pad = Q * nc - ctx.L
        ac = a_sf.conj() if a_sf.is_complex() else a_sf
        g_sf = _adjoint_sf(ac, _steps_first(_pad_time(grad_h.to(h_sf.dtype), pad), Q, nc),
                           ctx.varying)  # dL/db, steps first
        grad_a = None
        if ctx.needs_input_grad[0]:  # dL/da_t = g_t conj(h_{t-1}), h_{-1} = 0
            hc = h_sf.conj() if h_sf.is_complex() else h_sf
            ga = torch.empty_like(g_sf)
            torch.mul(g_sf[1:], hc[:-1], out=ga[1:])
            ga[0, 0] = 0
            torch.mul(g_sf[0, 1:], hc[-1, :-1], out=ga[0, 1:])
            if ctx.varying:
                grad_a = _reduce_to(_time_major(ga, ctx.L), ctx.a_shape)
            else:
                grad_a = _reduce_to(ga.sum(dim=(0, 1)).unsqueeze(1), ctx.a_shape)
        grad_b = _time_major(g_sf, ctx.L) if ctx.needs_input_grad[1] else None
        return grad_a, grad_b, None


def linear_scan(a: torch.Tensor, b: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """``h_t = a_t h_{t-1} + b_t`` along dim 1: ``b (B, L, ...)``, ``a`` broadcastable to ``b``
    (length ``L`` or 1 along dim 1). ``chunk`` defaults to ``ceil(sqrt(L))``. Returns ``h`` in
    ``b``'s dtype (complex if either is), computed in at least fp32."""
    L = b.shape[1]
    if chunk is None:
        chunk = math.isqrt(L - 1) + 1 if L > 1 else 1
    common = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    out = torch.promote_types(b.dtype, common if common.is_complex else b.dtype)
    with torch.autocast(b.device.type, enabled=False):
        h = _LinearScan.apply(a.to(common), b.to(common), chunk)
    return h.to(out)


def linear_scan_naive(a: torch.Tensor, b: torch.Tensor, h0: torch.Tensor | None = None
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the step loop. Returns ``(h (B, L, ...), h_{L-1})``; ``h0`` is ``h_{-1}``."""
    h = torch.zeros_like(b[:, 0]) if h0 is None else h0
    # unbind, not b[:, t]: each indexing op's backward would write a full-size zero gradient
    a_t = a.unbind(1) if a.shape[1] > 1 else [a[:, 0]] * b.shape[1]
    hs = []
    for a_s, b_s in zip(a_t, b.unbind(1), strict=True):
        h = a_s * h + b_s
        hs.append(h)
    return torch.stack(hs, dim=1), h


def log_linear_scan(log_a: torch.Tensor, log_b: torch.Tensor, chunk: int = 64) -> torch.Tensor:
    """``h_t = a_t h_{t-1} + b_t`` for ``a, b > 0`` given as ``log_a, log_b (B, L, ...)``, real.

    Returns ``h`` (not its log), in at least fp32. Inside each chunk of ``chunk`` steps the
    heinsen form; the chunk ends are joined by :func:`linear_scan` in linear space.
    """
    f = torch.promote_types(log_b.dtype, torch.float32)
    log_a, log_b = log_a.to(f), log_b.to(f)
    Bz, L = log_b.shape[:2]
    rest = log_b.shape[2:]
    Q = max(1, min(chunk, L))
    nc = -(-L // Q)
    pad = nc * Q - L
    if pad:  # padded steps come after every real one and are dropped: any finite values do
        widths = [0, 0] * len(rest) + [0, pad]
        log_a, log_b = F.pad(log_a, widths), F.pad(log_b, widths)
    la = log_a.reshape(Bz, nc, Q, *rest)
    lb = log_b.reshape(Bz, nc, Q, *rest)
    a_star = torch.cumsum(la, dim=2)  # (B, nc, Q, ...): log of the product since the chunk start
    h = torch.exp(a_star + torch.logcumsumexp(lb - a_star, dim=2))  # from h = 0 at each start
    if nc > 1:
        decay = torch.exp(a_star)  # (B, nc, Q, ...), <= 1 when a <= 1
        ends = linear_scan(decay[:, :, -1], h[:, :, -1])  # h after each chunk: (B, nc, ...)
        carried = torch.cat([torch.zeros_like(ends[:, :1]), ends[:, :-1]], dim=1)
        h = h + decay * carried.unsqueeze(2)
    return h.reshape(Bz, nc * Q, *rest)[:, :L]


# --- the fused CPU kernel ---------------------------------------------------------------------
class _FusedLinearScan(torch.autograd.Function):
    """:func:`linear_scan` in one C++ pass per (batch element, block of channels)
    (``csrc/cpu_kernels.cpp``, :mod:`~seqbench.worker.models.ops.native`): the state stays in
    registers; the backward runs the adjoint right to left and reads ``h_{t-1}`` from the
    saved output."""

    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        Bz, L = b.shape[:2]
        inner = b.shape[2:]
        C = math.prod(inner)
        cplx = b.is_complex()
        a_full = a.expand(a.shape[0], a.shape[1], *inner)  # inner dims as b's (views if equal)
        a3 = a_full.reshape(a.shape[0], a.shape[1], C)
        b3 = b.reshape(Bz, L, C)
        a3, b3 = (torch.view_as_real(t.contiguous()) if cplx else t for t in (a3, b3))
        a3, b3 = (native.operand(t, t.dtype, inner=t.dim() - 2) for t in (a3, b3))
        scalars = C * (2 if cplx else 1)
        h = b3.new_empty(Bz, L, scalars)
        args = native.fill(native.LinScanArgs(), a=_rows(a3, Bz, L), b=_rows(b3, Bz, L),
                           h=h.data_ptr(), Bz=Bz, L=L, C=scalars, cplx=int(cplx),
                           nthreads=native.num_threads())
        if L > 0:
            native.call("linscan", "fwd", h.dtype, args)
        ctx.save_for_backward(a3, h)
        ctx.meta = (a.shape, b.shape, cplx)
        h = h.view(Bz, L, C, 2) if cplx else h
        out = torch.view_as_complex(h) if cplx else h
        return out.view(b.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_h: torch.Tensor) -> tuple[Any, ...]:
        a3, h = ctx.saved_tensors
        a_shape, b_shape, cplx = ctx.meta
        Bz, L, scalars = h.shape
        gh = grad_h.reshape(Bz, L, -1)
        gh = (torch.view_as_real(gh.contiguous()) if cplx else gh).reshape(Bz, L, scalars)
        gh = gh.to(h.dtype).contiguous()
        gb = torch.empty_like(h)
        varying = a_shape[1] != 1
        ga = None
        if ctx.needs_input_grad[0]:
            ga = torch.empty_like(h) if varying else h.new_empty(Bz, scalars)
        args = native.fill(native.LinScanArgs(), a=_rows(a3, Bz, L), h=h.data_ptr(),
                           gh=gh.data_ptr(), gb=gb.data_ptr(), ga=native.ptr(ga), Bz=Bz, L=L,
                           C=scalars, cplx=int(cplx), nthreads=native.num_threads())
        if L > 0:
            native.call("linscan", "bwd", h.dtype, args)
        if cplx:
            gb = torch.view_as_complex(gb.view(Bz, L, -1, 2))
        grad_b = gb.view(b_shape) if ctx.needs_input_grad[1] else None
        grad_a = None
        if ga is not None:
            if cplx:
                ga = torch.view_as_complex(ga.view(*ga.shape[:-1], -1, 2))
            if not varying:
                ga = ga.unsqueeze(1)  # (B, 1, C): summed over time by the kernel
            ga = ga.view(Bz, ga.shape[1], *b_shape[2:])
            grad_a = ga.sum_to_size(a_shape)  # over the dims ``a`` was broadcast along
        return grad_a, grad_b


def _rows(t: torch.Tensor, Bz: int, L: int) -> tuple[int, int, int]:
    """(pointer, batch stride, time stride) with stride 0 where ``t`` is shared by the batch
    (size 1 along dim 0) or by every step (size 1 along dim 1)."""
    return (t.data_ptr(), t.stride(0) if t.shape[0] == Bz > 1 else 0,
            t.stride(1) if t.shape[1] == L > 1 else 0)


def linear_scan_fused(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """:func:`linear_scan` by the fused C++ kernel: ``b (B, L, ...)``, ``a`` broadcastable to
    ``b`` with length ``L`` or 1 along time and ``B`` or 1 along the batch. Real or complex;
    computed in at least fp32 (fp64 and complex128 stay), returned as :func:`linear_scan`
    returns. Needs :func:`native.library` (check :func:`native.unavailable_reason` first); CPU
    tensors."""
    common = torch.promote_types(torch.promote_types(a.dtype, b.dtype), torch.float32)
    out = torch.promote_types(b.dtype, common if common.is_complex else b.dtype)
    if a.dim() != b.dim():
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} need the same rank")
    with torch.autocast(b.device.type, enabled=False):
        h = _FusedLinearScan.apply(a.to(common), b.to(common))
    return h.to(out)


class _FusedGatedScan(torch.autograd.Function):
    """minGRU's recurrence with its coefficients computed inside the kernel (``gate = 1`` in
    ``csrc/cpu_kernels.cpp``): ``h_t = sigmoid(-z_t) h_{t-1} + sigmoid(z_t) g(x_t)``."""

    @staticmethod
    def forward(ctx: Any, z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        Bz, L = x.shape[:2]
        C = math.prod(x.shape[2:])
        z3, x3 = (native.operand(t.reshape(Bz, L, C), t.dtype) for t in (z, x))
        h = x3.new_empty(Bz, L, C)
        args = native.fill(native.LinScanArgs(), a=native.rows(z3), b=native.rows(x3),
                           h=h.data_ptr(), Bz=Bz, L=L, C=C, cplx=0, gate=1,
                           nthreads=native.num_threads())
        if L > 0:
            native.call("linscan", "fwd", h.dtype, args, label="gated_scan")
        ctx.save_for_backward(z3, x3, h)
        ctx.shape = x.shape
        return h.view(x.shape)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_h: torch.Tensor) -> tuple[Any, ...]:
        z3, x3, h = ctx.saved_tensors
        Bz, L, C = h.shape
        gh = grad_h.reshape(Bz, L, C).to(h.dtype).contiguous()
        gz, gx = torch.empty_like(h), torch.empty_like(h)
        args = native.fill(native.LinScanArgs(), a=native.rows(z3), b=native.rows(x3),
                           h=h.data_ptr(), gh=gh.data_ptr(), gb=gx.data_ptr(), ga=gz.data_ptr(),
                           Bz=Bz, L=L, C=C, cplx=0, gate=1, nthreads=native.num_threads())
        if L > 0:
            native.call("linscan", "bwd", h.dtype, args, label="gated_scan")
        return gz.view(ctx.shape), gx.view(ctx.shape)


def gated_scan_fused(z: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """minGRU's and minLSTM's recurrence (Feng et al. 2024) in one C++ pass, coefficients
    included: ``h_t = sigmoid(-z_t) h_{t-1} + sigmoid(z_t) g(x_t)`` along dim 1 with
    ``g(x) = x + 1/2`` for ``x >= 0`` and ``sigmoid(x)`` below, ``z, x (B, L, ...)`` real of
    one shape (any row strides: the halves of a projection are read in place). The same
    function as ``linear_scan(sigmoid(-z), sigmoid(z) * g(x))``; computed in fp32 (fp64
    stays), returned in ``x``'s dtype. Needs :func:`native.library`; CPU tensors."""
    if z.shape != x.shape or z.is_complex() or x.is_complex():
        raise ValueError(f"z {tuple(z.shape)} and x {tuple(x.shape)}: real, of one shape")
    f = native.compute_dtype(z, x)
    with torch.autocast(x.device.type, enabled=False):
        return _FusedGatedScan.apply(z.to(f), x.to(f)).to(x.dtype)
