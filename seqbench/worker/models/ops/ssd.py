"""State space duality (SSD), the scan of Mamba-2 (Dao & Gu 2024, "Transformers are SSMs:
Generalized Models and Efficient Algorithms Through Structured State Space Duality", Listing 1
``ssd_minimal_discrete``), in pure PyTorch: a chunked path and a naive reference.

Per batch element and head ``h`` (A is one scalar per head, B and C are shared by the heads of
a group)::

    H_t = exp(dt_t A_h) * H_{t-1} + dt_t * outer(x_t, B_t)     H_t: (P, N), H_{-1} = 0
    y_t = H_t @ C_t                                            y_t: (P,)

Shapes: ``x (B, L, H, P)``, ``dt (B, L, H)`` (after softplus), ``A (H,)`` (negative),
``B, C (B, L, G, N)`` with ``H`` a multiple of ``G``; ``y (B, L, H, P)``. The skip ``D * x`` and
the gated norm live in the block.

The chunked path cuts the sequence into chunks of ``Q`` steps. Because the decay is a scalar per
head, the recurrence inside a chunk is a masked matrix product (the "attention-like" dual form):
``Y = (C B^T o exp(segsum(log a))) X``, where ``segsum`` holds differences of cumulative sums of
the log decays, masked to ``-inf`` above the diagonal *before* ``exp``, so every exponent is
``<= 0`` and nothing overflows. Chunk states are carried across chunks by a short loop over
chunks (``L / Q`` small steps). Autograd differentiates all of it.

The fused CPU kernel (:func:`ssd_fused`, ``csrc/cpu_kernels.cpp``) runs the recurrence itself,
one task per (batch element, head) with the (N, P) state in L1, vectorised over P: ``2 N P``
multiply-adds per step where the dual form spends ``2 Q (N + P) + 4 N P``, and no ``(Q, Q)``
decay and score tensors. It stores the state entering every chunk of ``FUSED_CHUNK`` steps; the
backward recomputes each chunk from there. A profile of one CPU training step (d_model 64,
batch 8, L = 2048, one thread) had the chunked path's segsum masks, chunk-carry loop and their
backward (``fill_``, ``copy_``, ``mul``, ``add_``: 40% of the step) outside matmuls.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd.function import once_differentiable

from seqbench.worker.models.ops import native

# mamba-ssm's Triton kernels default to 256; on CPU (1 thread, 2 heads x 64 x state 64, fwd+bwd)
# 64 and 128 measured fastest at L = 1024 and 4096, 256 about 1.5x slower
DEFAULT_CHUNK = 64


def segsum(x: torch.Tensor) -> torch.Tensor:
    """``out[..., i, j] = x[..., j+1] + ... + x[..., i]`` for ``j <= i``, ``-inf`` above.

    Built by a masked cumulative sum rather than a difference of two long cumulative sums, so
    no precision is lost to cancellation: (..., T) -> (..., T, T).
    """
    T = x.shape[-1]
    x = x.unsqueeze(-1).expand(*x.shape, T)  # x[..., i, j] = x[..., i]
    strict = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device), diagonal=-1)
    out = torch.cumsum(x.masked_fill(~strict, 0.0), dim=-2)
    lower = torch.tril(torch.ones(T, T, dtype=torch.bool, device=x.device))
    return out.masked_fill(~lower, float("-inf"))


def _heads(t: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, L, G, N) group tensor -> (B, L, H, N), each group shared by H / G heads."""
    return t.repeat_interleave(n_heads // t.shape[2], dim=2) if t.shape[2] != n_heads else t


def ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                C: torch.Tensor, chunk: int = DEFAULT_CHUNK, return_state: bool = False) -> Any:
    """Chunked SSD: ``y (B, L, H, P)``; computed in at least fp32, returned in ``x``'s dtype.
    ``return_state``: also the state after the last step, ``(B, H, P, N)`` in the compute
    dtype (the state :func:`ssd_step` continues from)."""
    with torch.autocast(x.device.type, enabled=False):  # the scan itself stays in fp32
        y, state = _ssd_chunked(x, dt, A, B, C, chunk)
    return (y, state) if return_state else y


def _ssd_chunked(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                 C: torch.Tensor, chunk: int) -> tuple[torch.Tensor, torch.Tensor]:
    dtype = x.dtype
    f = torch.promote_types(dtype, torch.float32)
    Bz, L, H, P = x.shape
    Q = max(1, min(chunk, L))
    Lp = -(-L // Q) * Q
    pad = (0, 0, 0, 0, 0, Lp - L)  # zero steps at the end: decay 1, input 0
    x = F.pad(x.to(f), pad)
    dt = F.pad(dt.to(f), pad[2:])
    B = F.pad(_heads(B.to(f), H), pad)
    C = F.pad(_heads(C.to(f), H), pad)
    nc = Lp // Q
    N = B.shape[-1]
    xdt = (x * dt.unsqueeze(-1)).view(Bz, nc, Q, H, P)  # input scaled by its step
    B, C = B.view(Bz, nc, Q, H, N), C.view(Bz, nc, Q, H, N)
    log_a = (dt * A.to(f)).view(Bz, nc, Q, H).permute(0, 3, 1, 2)  # (B, H, nc, Q) <= 0
    cum = torch.cumsum(log_a, dim=-1)  # (B, H, nc, Q)

    # 1. inside each chunk: the masked "attention" form
    decay = torch.exp(segsum(log_a))  # (B, H, nc, Q, Q), 0 above the diagonal
    scores = torch.einsum("bcqhn,bcshn->bhcqs", C, B) * decay
    y = torch.einsum("bhcqs,bcshp->bcqhp", scores, xdt)

    # 2. each chunk's final state from its own inputs, decayed to the chunk end (exponent <= 0)
    to_end = torch.exp(cum[..., -1:] - cum)  # (B, H, nc, Q)
    states = torch.einsum("bcqhn,bhcq,bcqhp->bchpn", B, to_end, xdt)  # (B, nc, H, P, N)

    last = states[:, -1]  # (B, H, P, N): padded steps (decay 1, input 0) leave it unchanged
    if nc > 1:
        # 3. carry across chunks: a short loop over chunks, with each chunk's total decay
        chunk_decay = torch.exp(cum[..., -1]).permute(0, 2, 1)[..., None, None]  # (B, nc, H, 1, 1)
        carried = [states.new_zeros(Bz, H, P, N)]
        for k in range(1, nc):
            carried.append(chunk_decay[:, k - 1] * carried[-1] + states[:, k - 1])
        last = chunk_decay[:, -1] * carried[-1] + last
        incoming = torch.stack(carried[1:], dim=1)  # (B, nc - 1, H, P, N) entering chunks 1..
        # 4. the incoming state's contribution to every position of its chunk
        from_start = torch.exp(cum[:, :, 1:])  # (B, H, nc - 1, Q), exponent <= 0
        y_in = torch.einsum("bcqhn,bchpn,bhcq->bcqhp", C[:, 1:], incoming, from_start)
        y = torch.cat([y[:, :1], y[:, 1:] + y_in], dim=1)
    return y.reshape(Bz, Lp, H, P)[:, :L].to(dtype), last


def ssd_naive(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
              C: torch.Tensor, state: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the recurrence, one Python step per time step, in at least fp32.

    Returns ``(y (B, L, H, P), last state (B, H, P, N))``.
    """
    dtype = torch.promote_types(x.dtype, torch.float32)
    H = x.shape[2]
    x, dt, A = x.to(dtype), dt.to(dtype), A.to(dtype)
    B, C = _heads(B.to(dtype), H), _heads(C.to(dtype), H)
    if state is None:
        state = x.new_zeros(x.shape[0], H, x.shape[3], B.shape[-1])
    ys = []
    for t in range(x.shape[1]):
        y_t, state = ssd_step(x[:, t], dt[:, t], A, B[:, t], C[:, t], state)
        ys.append(y_t)
    return torch.stack(ys, dim=1), state


def ssd_step(x_t: torch.Tensor, dt_t: torch.Tensor, A: torch.Tensor, B_t: torch.Tensor,
             C_t: torch.Tensor, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: ``x_t (B, H, P)``, ``dt_t (B, H)``, ``B_t, C_t (B, G, N)``, state
    ``(B, H, P, N)`` (kept in its own dtype). Returns ``(y_t (B, H, P), new state)``."""
    H = x_t.shape[1]
    f = state.dtype
    B_t = B_t.to(f).repeat_interleave(H // B_t.shape[1], dim=1)  # (B, H, N)
    C_t = C_t.to(f).repeat_interleave(H // C_t.shape[1], dim=1)
    dt_t = dt_t.to(f)
    a = torch.exp(dt_t * A.to(f))[..., None, None]  # (B, H, 1, 1)
    state = a * state + (dt_t.unsqueeze(-1) * x_t.to(f)).unsqueeze(-1) * B_t.unsqueeze(-2)
    y = (state @ C_t.unsqueeze(-1)).squeeze(-1)  # (B, H, P)
    return y.to(x_t.dtype), state


# --- the fused CPU kernel ---------------------------------------------------------------------
FUSED_CHUNK = 32  # steps between stored states (the backward recomputes this many at a time)


class _FusedSSD(torch.autograd.Function):
    """The SSD recurrence with the D skip, ``ssd(x) + D x``, in one C++ pass per (batch
    element, head) (:mod:`seqbench.worker.models.ops.native`): the (P, N) state stays in cache,
    only the state entering every chunk of ``T`` steps is stored, and the backward recomputes
    each chunk's states from it."""

    @staticmethod
    def forward(ctx, x, dt, A, B, C, D, chunk, want_last):
        dtypes = [t.dtype if t is not None else None for t in (x, dt, A, B, C, D)]
        f = native.compute_dtype(x, dt, A, B, C, D)
        x, B, C = (native.operand(t, f, inner=2) for t in (x, B, C))
        dt = native.operand(dt, f)
        A = A.to(f).contiguous()
        D = None if D is None else D.to(f).contiguous()
        Bz, L, H, P = x.shape
        G, N = B.shape[2], B.shape[3]
        T = max(1, min(chunk, L))
        y = x.new_empty(Bz, L, H, P)
        Pp = -(-P // 16) * 16  # P padded to 16 lanes
        ck = x.new_empty(Bz, H, -(-L // T), N, Pp)
        last = x.new_zeros(Bz, H, N, Pp) if want_last else None  # the state after the last step
        args = native.fill(native.SsdArgs(), x=native.rows(x), dt=native.rows(dt),
                           A=A.data_ptr(), B=native.rows(B), C=native.rows(C),
                           Dskip=native.ptr(D), y=y.data_ptr(), ck=ck.data_ptr(),
                           last=native.ptr(last), Bz=Bz, L=L, H=H, P=P, G=G, N=N, T=T,
                           nthreads=native.num_threads())
        if L > 0:
            native.call("ssd", "fwd", f, args)
        ctx.save_for_backward(x, dt, A, B, C, D, ck)
        ctx.meta = (dtypes, T)
        if last is None:
            return y.to(dtypes[0])
        last = last[..., :P].transpose(-1, -2).contiguous()  # (B, H, P, N): ssd_step's layout
        ctx.mark_non_differentiable(last)
        return y.to(dtypes[0]), last

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, *_):  # the last state has no gradient
        x, dt, A, B, C, D, ck = ctx.saved_tensors
        dtypes, T = ctx.meta
        Bz, L, H, P = x.shape
        G, N = B.shape[2], B.shape[3]
        gy = gy.to(x.dtype).contiguous()
        gx, gdt = x.new_empty(Bz, L, H, P), x.new_empty(Bz, L, H)
        gA = x.new_zeros(Bz, H)  # partial sums per batch element
        gB, gC = x.new_empty(H, Bz, L, N), x.new_empty(H, Bz, L, N)  # per head, all written
        gD = None if D is None else x.new_zeros(Bz, H)
        args = native.fill(native.SsdArgs(), x=native.rows(x), dt=native.rows(dt),
                           A=A.data_ptr(), B=native.rows(B), C=native.rows(C),
                           Dskip=native.ptr(D), ck=ck.data_ptr(), gy=gy.data_ptr(),
                           gx=gx.data_ptr(), gdt=gdt.data_ptr(), gA=gA.data_ptr(),
                           gB=gB.data_ptr(), gC=gC.data_ptr(), gD=native.ptr(gD), Bz=Bz, L=L,
                           H=H, P=P, G=G, N=N, T=T, nthreads=native.num_threads())
        if L > 0:
            native.call("ssd", "bwd", x.dtype, args)

        def per_group(g: torch.Tensor) -> torch.Tensor:  # (H, B, L, N) -> (B, L, G, N)
            g = g if H == G else g.view(G, H // G, Bz, L, N).sum(1)
            return g.permute(1, 2, 0, 3)

        grads = [gx, gdt, gA.sum(0), per_group(gB), per_group(gC),
                 None if gD is None else gD.sum(0)]
        return (*(None if g is None else g.to(t) for g, t in zip(grads, dtypes, strict=True)),
                None, None)


def ssd_fused(x: torch.Tensor, dt: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
              C: torch.Tensor, D: torch.Tensor | None = None,
              chunk: int = FUSED_CHUNK, return_state: bool = False) -> Any:
    """Fused CPU SSD: ``ssd(x) + D[h] x`` with the shapes of :func:`ssd_chunked` (``D`` (H,)
    optional). Needs :func:`native.library`; computed in fp32 (fp64 stays fp64), returned in
    ``x``'s dtype. ``return_state``: also the state after the last step, ``(B, H, P, N)`` in
    the compute dtype (no gradient flows through it)."""
    with torch.autocast(x.device.type, enabled=False):
        return _FusedSSD.apply(x, dt, A, B, C, D, chunk, return_state)
