"""First-order linear recurrences ``h_t = a_t * h_{t-1} + b_t`` (elementwise, ``h_{-1} = 0``)
along dimension 1, in pure PyTorch: two parallel forms and the step loop they are tested
against.

- :func:`linear_scan`: a chunked scan with a hand-written backward. The sequence is cut into
  ``n`` chunks of ``Q`` steps (``Q ~ sqrt(L)``); one loop of ``Q`` steps runs the recurrence
  inside every chunk at once (each step one fused multiply-add over all chunks), a loop of
  ``n`` steps carries the chunk ends, and one multiply-add adds each carried state times the
  running product of coefficients. So ``2 sqrt(L)`` small sequential steps instead of ``L``,
  no product is ever divided by (products of coefficients ``|a| <= 1`` can only underflow to
  0, their true value), and the backward is the same scan run in reverse on the adjoint
  recurrence ``g_t = dL/dh_t + conj(a_{t+1}) g_{t+1}``, ``dL/db_t = g_t``,
  ``dL/da_t = g_t conj(h_{t-1})`` (PyTorch's convention for complex tensors), instead of
  autograd through ``2 sqrt(L)`` graph nodes. Real or complex; ``a`` broadcastable to ``b``,
  with length 1 along time for a time-invariant recurrence (the LRU's).
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


def _chunked(a: torch.Tensor, b: torch.Tensor, chunk: int, reverse: bool) -> torch.Tensor:
    """No-graph chunked scan: ``h_t = a_t h_{t -+ 1} + b_t`` (``reverse`` runs from the end).

    ``b (B, L, ...)``; ``a`` broadcastable to ``b`` with length ``L`` or 1 along dim 1.
    """
    if reverse:
        a, b = a.flip(1), b.flip(1)
    Bz, L = b.shape[:2]
    rest = b.shape[2:]
    Q = max(1, min(chunk, L))
    nc = -(-L // Q)
    pad = nc * Q - L
    varying = a.shape[1] != 1
    a = a.expand(Bz, a.shape[1], *rest)
    if pad:  # padded steps come after every real one and are dropped
        widths = [0, 0] * len(rest) + [0, pad]
        b = F.pad(b, widths)
        if varying:
            a = F.pad(a, widths)

    def steps_first(t: torch.Tensor) -> torch.Tensor:  # (B, nc * Q, ...) -> (Q, nc, B, ...)
        t = t.reshape(Bz, nc, Q, *rest)
        return t.permute(2, 1, 0, *range(3, t.dim())).contiguous()

    bq = steps_first(b)  # (Q, nc, B, ...): each step of the inner loop is one contiguous slice
    aq = steps_first(a) if varying else a[:, 0].unsqueeze(0)  # (Q, nc, B, ...) or (1, B, ...)
    h = torch.empty_like(bq)
    P = torch.empty_like(bq) if varying else None  # product of a from the chunk start to q
    h[0] = bq[0]
    if varying:
        P[0] = aq[0]
    for q in range(1, Q):
        a_q = aq[q] if varying else aq
        torch.addcmul(bq[q], a_q, h[q - 1], out=h[q])
        if varying:
            torch.mul(a_q, P[q - 1], out=P[q])
    if nc > 1:
        if not varying:  # powers a^1 .. a^Q, shared by every chunk
            P = torch.cumprod(aq.expand(Q, *aq.shape[1:]), dim=0).unsqueeze(1)  # (Q, 1, B, ...)
        ends, total = h[-1], P[-1]  # (nc, B, ...) and (nc | 1, B, ...)
        carried = torch.zeros_like(ends)  # the state entering each chunk
        for c in range(1, nc):
            torch.addcmul(ends[c - 1], total[c - 1 if varying else 0], carried[c - 1],
                          out=carried[c])
        h.addcmul_(P, carried.unsqueeze(0))
    h = h.permute(2, 1, 0, *range(3, h.dim())).reshape(Bz, nc * Q, *rest)[:, :L]
    return h.flip(1) if reverse else h


def _reduce_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum ``grad`` over the dimensions that were broadcast from ``shape``."""
    dims = [d for d, (g, s) in enumerate(zip(grad.shape, shape, strict=True)) if s == 1 != g]
    return grad.sum(dim=dims, keepdim=True) if dims else grad


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, a: torch.Tensor, b: torch.Tensor, chunk: int) -> torch.Tensor:
        h = _chunked(a, b, chunk, reverse=False)
        ctx.save_for_backward(a, h)
        ctx.chunk = chunk
        return h

    @staticmethod
    def backward(ctx: Any, grad_h: torch.Tensor) -> tuple[Any, ...]:
        a, h = ctx.saved_tensors
        ac = a.conj() if a.is_complex() else a
        if a.shape[1] != 1:  # g_t = grad_t + a_{t+1} g_{t+1}: coefficients shifted one step
            ac = torch.cat([ac[:, 1:], torch.zeros_like(ac[:, :1])], dim=1)
        g = _chunked(ac, grad_h.to(h.dtype), ctx.chunk, reverse=True)
        grad_a = None
        if ctx.needs_input_grad[0]:
            h_prev = torch.cat([torch.zeros_like(h[:, :1]), h[:, :-1]], dim=1)
            grad_a = _reduce_to(g * (h_prev.conj() if h_prev.is_complex() else h_prev), a.shape)
        return grad_a, g if ctx.needs_input_grad[1] else None, None


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
