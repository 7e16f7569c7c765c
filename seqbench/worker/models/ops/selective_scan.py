"""The selective scan of Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces", Algorithm 2): a fused C++ CPU kernel, a pure-PyTorch chunked path and a
naive reference.

Per batch element, channel ``d`` and state ``n`` (A is diagonal, so every (d, n) pair is an
independent scalar recurrence)::

    h_t = exp(delta_t A) * h_{t-1} + delta_t u_t B_t        h_{-1} = 0
    y_t = sum_n C_t[n] h_t[d, n]

Shapes: ``u, delta (B, L, D)``, ``A (D, N)`` (real, negative), ``B, C (B, L, N)``,
``y (B, L, D)``. The skip term ``D * u``, ``softplus`` of delta and the gate live in the block.

**Fast path** (:func:`selective_scan`): a chunked scan with a hand-written backward. The
sequence is cut into ``nc`` chunks of ``T`` steps. Three passes, none of which loops over all
``L`` time steps in Python:

1. a *local sweep* of ``T`` steps computes every chunk's states from a zero start, all chunks at
   once (each step is one fused op over ``B x nc x N x D`` elements);
2. a *carry* of ``nc`` small steps passes the state across chunk boundaries, using each
   chunk's total decay ``exp(A * sum(delta))``;
3. a *correction sweep* of ``T`` steps adds each chunk's incoming state, decayed to every
   position.

With ``A < 0`` and ``delta >= 0`` (as in Mamba: ``A = -exp(A_log)``, ``delta`` after softplus)
only products of decays in ``(0, 1]`` are ever formed (no division, no ``exp`` of a positive
number), so nothing overflows for any length or step size; decays that underflow to 0 are
exactly the contributions that vanish. The backward runs the same three passes in reverse
time order on the adjoint recurrence ``g_t = dL/dh_t + a_{t+1} g_{t+1}`` and then reduces to the
parameter gradients with batched matmuls. The matrix (segsum) form that serves Mamba-2 would need
a ``T x T`` decay matrix per (d, n) pair here, ``T x`` more memory than the states themselves, so
the sweeps win for Mamba-1's per-channel, per-state decays.

Inputs in bf16/fp16 are computed in fp32 (fp64 stays fp64) and the output is cast back, as
mamba-ssm does.

**Fused CPU kernel** (:func:`selective_scan_fused`, ``csrc/cpu_kernels.cpp``): the recurrence
itself, one task per (batch element, block of 32 channels), with the state (N x 32) in
registers and L1. The chunked path above materialises every state, ``(B, L, N, D)`` fp32
(134 MB at B = 8, L = 4096, D = 64, N = 16), several times forward and backward; the kernel
writes only the state entering every chunk of ``FUSED_CHUNK`` steps, and its backward
recomputes a chunk's states from there (as mamba-ssm's CUDA kernel recomputes them in shared
memory) before running the adjoint right to left. The D skip and the ``silu(z)`` gate are fused
in too. Measured side by side (``python -m seqbench.bench.scan``, B = 8, D = 64, N = 16, one
thread, fwd + bwd, load 4.5 on 2 cores): 0.155 s vs 1.195 s for the chunked scan at L = 4096
(7.7x; mambapy 4.06 s) with 104 vs 500 MiB peak.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.autograd.function import once_differentiable

from seqbench.worker.models.ops import native


def chunk_len(seq_len: int, chunk: int | None = None) -> int:
    """Chunk length T for a sequence: ``chunk``, or about sqrt(L) (16..128) when None.

    A pass takes about ``2 T + L / T`` Python-level steps, fewest near sqrt(L); on one CPU
    thread T from 8 to 128 measured within 10% of each other at L = 256..4096.
    """
    if chunk is None:
        chunk = min(128, max(16, 1 << round(math.log2(max(seq_len, 1)) / 2)))
    return max(1, min(chunk, seq_len))


def _pad_time(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad dim 1 (time) to ``length``: delta = 0 there, so the decay is 1 and input 0."""
    if x.shape[1] == length:
        return x
    pad = x.new_zeros(x.shape[0], length - x.shape[1], *x.shape[2:])
    return torch.cat([x, pad], dim=1)


def _forward_states(dA: torch.Tensor, h: torch.Tensor, decay: torch.Tensor, T: int) -> None:
    """In place: turn ``h`` (holding the inputs delta u B) into the states h_t.

    dA, h: (B, Lp, N, D) with Lp = nc T; decay: (B, nc, N, D), each chunk's total decay.
    """
    Bz, Lp, N, D = h.shape
    nc = Lp // T
    hc, ac = h.view(Bz, nc, T, N, D), dA.view(Bz, nc, T, N, D)
    for i in range(1, T):  # 1. local sweep, every chunk from a zero state
        hc[:, :, i].addcmul_(ac[:, :, i], hc[:, :, i - 1])
    if nc == 1:
        return
    # 2. carry: the state entering chunk k
    incoming = h.new_empty(Bz, nc - 1, N, D)
    state = hc[:, 0, T - 1]
    for k in range(1, nc):
        incoming[:, k - 1] = state
        if k < nc - 1:
            state = torch.addcmul(hc[:, k, T - 1], decay[:, k], state)
    # 3. correction: add the incoming state, decayed step by step, to every position
    for i in range(T):
        incoming.mul_(ac[:, 1:, i])
        hc[:, 1:, i] += incoming


def _adjoint_states(dA: torch.Tensor, g: torch.Tensor, decay: torch.Tensor, T: int) -> None:
    """In place: turn ``g`` (holding dL/dh_t) into the adjoint g_t = dL/dh_t + a_{t+1} g_{t+1}.

    The mirror image of :func:`_forward_states`, right to left; ``decay`` (B, nc, N, D) is
    each chunk's decay from its position 0 to its end, prod_{j>=1} a_j.
    """
    Bz, Lp, N, D = g.shape
    nc = Lp // T
    gc, ac = g.view(Bz, nc, T, N, D), dA.view(Bz, nc, T, N, D)
    for i in range(T - 2, -1, -1):  # 1. local sweep, every chunk from a zero end
        gc[:, :, i].addcmul_(ac[:, :, i + 1], gc[:, :, i + 1])
    if nc == 1:
        return
    # 2. carry from the right: into chunk k flows a_{k+1,0} g_{k+1,0}
    incoming = g.new_empty(Bz, nc - 1, N, D)
    first = gc[:, nc - 1, 0]  # g at the first position of the last chunk (nothing flows in)
    for k in range(nc - 2, -1, -1):
        torch.mul(ac[:, k + 1, 0], first, out=incoming[:, k])
        if k > 0:
            first = torch.addcmul(gc[:, k, 0], decay[:, k], incoming[:, k])
    # 3. correction: position i of chunk k receives prod_{j=i+1}^{T-1} a_{k,j} incoming_k
    for i in range(T - 1, -1, -1):
        gc[:, :-1, i] += incoming
        if i > 0:
            incoming.mul_(ac[:, :-1, i])


def _chunk_decay(delta: torch.Tensor, At: torch.Tensor, T: int, skip_first: bool) -> torch.Tensor:
    """exp(A * sum of a chunk's deltas): (B, nc, N, D), without forming T products."""
    Bz, Lp, D = delta.shape
    chunks = delta.view(Bz, Lp // T, T, D)
    total = (chunks[:, :, 1:] if skip_first else chunks).sum(2)  # (B, nc, D)
    return torch.exp(total.unsqueeze(2) * At)


class _SelectiveScan(torch.autograd.Function):
    """The states live as (B, L, N, D): every contraction over N or D is then a batched matmul
    with D = d_inner as the long, contiguous side."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk, want_last):
        dtypes = (u.dtype, delta.dtype, A.dtype, B.dtype, C.dtype)
        L = u.shape[1]
        T = chunk_len(L, chunk)
        Lp = -(-L // T) * T
        f = torch.promote_types(u.dtype, torch.float32)  # fp32, or fp64 for references
        u, delta, B, C = (_pad_time(t.to(f), Lp).contiguous() for t in (u, delta, B, C))
        At = A.to(f).t().contiguous()  # (N, D)
        dA = (delta.unsqueeze(2) * At).exp_()  # (B, Lp, N, D) decays in (0, 1]
        h = B.unsqueeze(-1) * (delta * u).unsqueeze(2)  # (B, Lp, N, D) inputs -> states
        if Lp > T:
            _forward_states(dA, h, _chunk_decay(delta, At, T, skip_first=False), T)
        else:
            _forward_states(dA, h, dA, T)  # one chunk: no carry
        y = (C.unsqueeze(2) @ h).squeeze(2)  # (B, Lp, D)
        ctx.save_for_backward(u, delta, At, B, C, dA, h)
        ctx.meta = (dtypes, L, T)
        if not want_last:
            return y[:, :L].to(dtypes[0])
        last = h[:, L - 1].transpose(1, 2).clone()  # (B, D, N), selective_scan_step's layout
        ctx.mark_non_differentiable(last)
        return y[:, :L].to(dtypes[0]), last

    @staticmethod
    @once_differentiable
    def backward(ctx, gy, *_):  # the last state has no gradient
        u, delta, At, B, C, dA, h = ctx.saved_tensors
        dtypes, L, T = ctx.meta
        gy = _pad_time(gy.to(h.dtype), h.shape[1]).contiguous()  # (B, Lp, D)
        g = C.unsqueeze(-1) * gy.unsqueeze(2)  # (B, Lp, N, D) dL/dh_t through y_t only
        decay = _chunk_decay(delta, At, T, skip_first=True) if h.shape[1] > T else dA
        _adjoint_states(dA, g, decay, T)  # g_t = dL/dh_t through every later output
        du = delta * u
        gC = (h @ gy.unsqueeze(-1)).squeeze(-1)  # (B, Lp, N)
        gB = (g @ du.unsqueeze(-1)).squeeze(-1)  # (B, Lp, N)
        gdu = (B.unsqueeze(2) @ g).squeeze(2)  # (B, Lp, D)  dL/d(delta u)
        # dL/d(delta A)_t = g_t a_t h_{t-1}, in place in g (saved tensors stay untouched, so
        # a second backward through a retained graph is still right)
        g.mul_(dA)
        g[:, 1:].mul_(h[:, :-1])
        g[:, 0].zero_()
        gdelta = gdu * u  # (B, Lp, D)
        for n in range(g.shape[2]):  # sum over the N states of A_n * dL/d(delta A)_n
            gdelta.addcmul_(g[:, :, n], At[n])
        gA = g.mul_(delta.unsqueeze(2)).sum((0, 1)).t()  # (D, N)
        gu = gdu * delta
        grads = [gr[:, :L] for gr in (gu, gdelta)] + [gA] + [gr[:, :L] for gr in (gB, gC)]
        return (*(gr.to(dt) for gr, dt in zip(grads, dtypes, strict=True)), None, None)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, chunk: int | None = None, return_state: bool = False) -> Any:
    """Fast chunked selective scan: ``y (B, L, D)`` from ``u, delta (B, L, D)``, ``A (D, N)``,
    ``B, C (B, L, N)``. ``chunk`` is the chunk length T (None: about sqrt(L)).
    ``return_state``: also the state after the last step, ``(B, D, N)`` in the compute dtype
    (no gradient flows through it)."""
    with torch.autocast(u.device.type, enabled=False):  # the scan itself stays in fp32
        return _SelectiveScan.apply(u, delta, A, B, C, chunk, return_state)


def selective_scan_naive(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                         C: torch.Tensor, h0: torch.Tensor | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the recurrence written out, one Python step per time step.

    Computes in the inputs' dtype promoted to at least fp32 (pass fp64 for a reference).
    Returns ``(y (B, L, D), last state (B, D, N))``.
    """
    dtype = torch.promote_types(u.dtype, torch.float32)
    u, delta, A, B, C = (t.to(dtype) for t in (u, delta, A, B, C))
    Bz, L, D = u.shape
    h = u.new_zeros(Bz, D, A.shape[1]) if h0 is None else h0.to(dtype)
    ys = []
    for t in range(L):
        a = torch.exp(delta[:, t, :, None] * A)  # (B, D, N)
        h = a * h + (delta[:, t] * u[:, t])[:, :, None] * B[:, t, None, :]
        ys.append((h * C[:, t, None, :]).sum(-1))  # (B, D)
    return torch.stack(ys, dim=1), h


def selective_scan_step(u_t: torch.Tensor, delta_t: torch.Tensor, A: torch.Tensor,
                        B_t: torch.Tensor, C_t: torch.Tensor, h: torch.Tensor
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """One recurrent step: ``u_t, delta_t (B, D)``, ``B_t, C_t (B, N)``, state ``h (B, D, N)``
    in fp32. Returns ``(y_t (B, D) in u_t's dtype, new state)``."""
    a = torch.exp(delta_t.float().unsqueeze(-1) * A.float())  # (B, D, N)
    h = a * h + (delta_t.float() * u_t.float()).unsqueeze(-1) * B_t.float().unsqueeze(1)
    y = (h @ C_t.float().unsqueeze(-1)).squeeze(-1)  # (B, D)
    return y.to(u_t.dtype), h


# --- the fused CPU kernel ---------------------------------------------------------------------
FUSED_CHUNK = 64  # steps between stored states: the backward recomputes this many at a time


class _FusedScan(torch.autograd.Function):
    """The selective scan with the skip and the gate, ``(scan(u) + D u) * silu(z)``, in one
    C++ pass (:mod:`seqbench.worker.models.ops.native`); only the state entering every chunk of
    ``T`` steps is stored, the backward recomputes the rest chunk by chunk."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, D, z, chunk, want_last):
        dtypes = [t.dtype if t is not None else None for t in (u, delta, A, B, C, D, z)]
        f = native.compute_dtype(u, delta, A, B, C, D, z)
        u, delta, B, C, z = (native.operand(t, f) for t in (u, delta, B, C, z))
        At = A.to(f).t().contiguous()  # (N, D)
        D = None if D is None else D.to(f).contiguous()
        Bz, L, Dd = u.shape
        N, T = At.shape[0], max(1, min(chunk, L))
        out = u.new_empty(Bz, L, Dd)
        ck = u.new_empty(Bz, -(-L // T), N, Dd)  # the state entering each chunk
        last = u.new_zeros(Bz, N, Dd) if want_last else None  # the state after the last step
        args = native.fill(native.ScanArgs(), u=native.rows(u), delta=native.rows(delta),
                           At=At.data_ptr(), B=native.rows(B), C=native.rows(C),
                           Dskip=native.ptr(D), z=native.rows(z), out=out.data_ptr(),
                           ck=ck.data_ptr(), last=native.ptr(last), Bz=Bz, L=L, D=Dd, N=N, T=T,
                           nthreads=native.num_threads())
        if L > 0:
            native.call("scan", "fwd", f, args)
        ctx.save_for_backward(u, delta, At, B, C, D, z, ck)
        ctx.meta = (dtypes, T)
        if last is None:
            return out.to(dtypes[0])
        last = last.transpose(1, 2)  # (B, D, N): the layout of selective_scan_step's state
        ctx.mark_non_differentiable(last)
        return out.to(dtypes[0]), last

    @staticmethod
    @once_differentiable
    def backward(ctx, gout, *_):  # the last state has no gradient
        u, delta, At, B, C, D, z, ck = ctx.saved_tensors
        dtypes, T = ctx.meta
        lib = native.library()
        Bz, L, Dd = u.shape
        N = At.shape[0]
        nblk = -(-Dd // lib.sb_scan_block())
        gout = gout.to(u.dtype).contiguous()
        gu, gdelta = torch.empty_like(u), torch.empty_like(u)
        gz = None if z is None else torch.empty_like(u)
        gA = u.new_zeros(Bz, N, Dd)  # partial sums: per batch element
        gB, gC = u.new_empty(nblk, Bz, L, N), u.new_empty(nblk, Bz, L, N)  # per block, all set
        gD = None if D is None else u.new_zeros(Bz, Dd)
        args = native.fill(native.ScanArgs(), u=native.rows(u), delta=native.rows(delta),
                           At=At.data_ptr(), B=native.rows(B), C=native.rows(C),
                           Dskip=native.ptr(D), z=native.rows(z), ck=ck.data_ptr(),
                           gout=gout.data_ptr(), gu=gu.data_ptr(), gdelta=gdelta.data_ptr(),
                           gz=native.ptr(gz), gA=gA.data_ptr(), gB=gB.data_ptr(),
                           gC=gC.data_ptr(), gD=native.ptr(gD), Bz=Bz, L=L, D=Dd, N=N, T=T,
                           nthreads=native.num_threads())
        if L > 0:
            native.call("scan", "bwd", u.dtype, args)
        grads = [gu, gdelta, gA.sum(0).t(), gB[0] if nblk == 1 else gB.sum(0),
                 gC[0] if nblk == 1 else gC.sum(0),
                 None if gD is None else gD.sum(0), gz]
        return (*(None if g is None else g.to(dt) for g, dt in zip(grads, dtypes, strict=True)),
                None, None)


def selective_scan_fused(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                         C: torch.Tensor, D: torch.Tensor | None = None,
                         z: torch.Tensor | None = None, chunk: int = FUSED_CHUNK,
                         return_state: bool = False) -> Any:
    """Fused CPU selective scan: ``(y + D u) * silu(z)`` with ``y`` the scan of
    :func:`selective_scan` (``D`` (D,) and ``z`` (B, L, D) optional: no skip, no gate).

    Needs :func:`native.library` (check :func:`native.unavailable_reason` first); CPU tensors.
    Computed in fp32 (fp64 stays fp64), returned in ``u``'s dtype. ``return_state``: also the
    state after the last step, ``(B, D, N)`` in the compute dtype, the state
    :func:`selective_scan_step` continues from (no gradient flows through it, as in
    mamba-ssm's ``return_last_state``).
    """
    with torch.autocast(u.device.type, enabled=False):
        return _FusedScan.apply(u, delta, A, B, C, D, z, chunk, return_state)
