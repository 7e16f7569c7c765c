"""The selective scan of Mamba (Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with
Selective State Spaces", Algorithm 2) in pure PyTorch: a fast chunked path and a naive reference.

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
   once (each step is one fused op over ``B x nc x D x N`` elements);
2. a *carry* of ``nc`` small steps passes the state across chunk boundaries, using each
   chunk's total decay ``exp(A * sum(delta))``;
3. a *correction sweep* of ``T`` steps adds each chunk's incoming state, decayed to every
   position.

Only products of decays in ``(0, 1]`` are ever formed (no division, no ``exp`` of a positive
number), so nothing overflows for any length or step size; decays that underflow to 0 are
exactly the contributions that vanish. The backward runs the same three passes in reverse
time order on the adjoint recurrence ``g_t = dL/dh_t + a_{t+1} g_{t+1}`` and then reduces to the
parameter gradients with batched matmuls. The matrix (segsum) form that serves Mamba-2 would need
a ``T x T`` decay matrix per (d, n) pair here, ``T x`` more memory than the states themselves, so
the sweeps win for Mamba-1's per-channel, per-state decays.

Inputs in bf16/fp16 are computed in fp32 (fp64 stays fp64) and the output is cast back, as
mamba-ssm does.
"""

from __future__ import annotations

import math

import torch

DEFAULT_CHUNK = 64  # steps per chunk; Python steps per pass ~ 2 * T + L / T, best near sqrt(L)


def chunk_len(seq_len: int, chunk: int | None = None) -> int:
    """Chunk length T for a sequence: ``chunk``, or about sqrt(L) (16..128) when None."""
    if chunk is None:
        chunk = min(128, max(16, 1 << round(math.log2(max(seq_len, 1)) / 2)))
    return max(1, min(chunk, seq_len))


def _pad_time(x: torch.Tensor, length: int) -> torch.Tensor:
    """Zero-pad dim 1 (time) to ``length``: delta = 0 there, so the decay is 1 and input 0."""
    if x.shape[1] == length:
        return x
    pad = x.new_zeros(x.shape[0], length - x.shape[1], *x.shape[2:])
    return torch.cat([x, pad], dim=1)


def _forward_states(dA: torch.Tensor, h: torch.Tensor, delta: torch.Tensor,
                    A: torch.Tensor, T: int) -> None:
    """In place: turn ``h`` (holding the inputs delta*u*B) into the states h_t.

    dA, h: (B, Lp, D, N) with Lp = nc * T; delta: (B, Lp, D) fp32; A: (D, N).
    """
    Bz, Lp, D, N = h.shape
    nc = Lp // T
    hc, ac = h.view(Bz, nc, T, D, N), dA.view(Bz, nc, T, D, N)
    for i in range(1, T):  # 1. local sweep, every chunk from a zero state
        hc[:, :, i].addcmul_(ac[:, :, i], hc[:, :, i - 1])
    if nc == 1:
        return
    # 2. carry: state entering chunk k; chunk k's total decay is exp(A * sum of its deltas)
    decay = torch.exp(delta.view(Bz, nc, T, D).sum(2).unsqueeze(-1) * A)  # (B, nc, D, N)
    incoming = h.new_empty(Bz, nc - 1, D, N)  # state entering chunks 1..nc-1
    state = hc[:, 0, T - 1]
    for k in range(1, nc):
        incoming[:, k - 1] = state
        if k < nc - 1:
            state = torch.addcmul(hc[:, k, T - 1], decay[:, k], state)
    # 3. correction: add the incoming state, decayed step by step, to every position
    r = incoming
    for i in range(T):
        r = r * ac[:, 1:, i]
        hc[:, 1:, i] += r


def _adjoint_states(dA: torch.Tensor, g: torch.Tensor, delta: torch.Tensor,
                    A: torch.Tensor, T: int) -> None:
    """In place: turn ``g`` (holding dL/dh_t) into the adjoint g_t = dL/dh_t + a_{t+1} g_{t+1}.

    The mirror image of :func:`_forward_states`: the same three passes, right to left.
    """
    Bz, Lp, D, N = g.shape
    nc = Lp // T
    gc, ac = g.view(Bz, nc, T, D, N), dA.view(Bz, nc, T, D, N)
    for i in range(T - 2, -1, -1):  # 1. local sweep, every chunk from a zero end
        gc[:, :, i].addcmul_(ac[:, :, i + 1], gc[:, :, i + 1])
    if nc == 1:
        return
    # 2. carry from the right: into chunk k flows a_{k+1,0} * g_{k+1,0}; inside chunk k it
    # reaches position 0 decayed by prod_{j=1}^{T-1} a_{k,j} = exp(A * sum_{j>=1} delta_{k,j})
    decay = torch.exp(delta.view(Bz, nc, T, D)[:, :, 1:].sum(2).unsqueeze(-1) * A)
    incoming = g.new_empty(Bz, nc - 1, D, N)  # flowing into chunks 0..nc-2 from the right
    first = gc[:, nc - 1, 0]  # g at the first position of the last chunk (nothing flows in)
    for k in range(nc - 2, -1, -1):
        incoming[:, k] = ac[:, k + 1, 0] * first
        if k > 0:
            first = torch.addcmul(gc[:, k, 0], decay[:, k], incoming[:, k])
    # 3. correction: position i of chunk k receives prod_{j=i+1}^{T-1} a_{k,j} * incoming
    r = incoming
    for i in range(T - 1, -1, -1):
        gc[:, :-1, i] += r
        if i > 0:
            r = r * ac[:, :-1, i]


class _SelectiveScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, u, delta, A, B, C, chunk):
        dtypes = (u.dtype, delta.dtype, A.dtype, B.dtype, C.dtype)
        L = u.shape[1]
        T = chunk_len(L, chunk)
        Lp = -(-L // T) * T
        f = torch.promote_types(u.dtype, torch.float32)  # fp32, or fp64 for references
        u, delta, B, C = (_pad_time(t.to(f), Lp).contiguous() for t in (u, delta, B, C))
        A = A.to(f)
        dA = (delta.unsqueeze(-1) * A).exp_()  # (B, Lp, D, N) decays in (0, 1]
        du = delta * u  # (B, Lp, D)
        h = du.unsqueeze(-1) * B.unsqueeze(2)  # (B, Lp, D, N) inputs, become the states
        _forward_states(dA, h, delta, A, T)
        y = (h @ C.unsqueeze(-1)).squeeze(-1)  # (B, Lp, D)
        ctx.save_for_backward(u, delta, A, B, C, dA, h)
        ctx.meta = (dtypes, L, T)
        return y[:, :L].to(dtypes[0])

    @staticmethod
    def backward(ctx, gy):
        u, delta, A, B, C, dA, h = ctx.saved_tensors
        dtypes, L, T = ctx.meta
        gy = _pad_time(gy.to(h.dtype), h.shape[1]).contiguous()  # (B, Lp, D)
        g = gy.unsqueeze(-1) * C.unsqueeze(2)  # (B, Lp, D, N) dL/dh_t through y_t only
        _adjoint_states(dA, g, delta, A, T)  # g_t = dL/dh_t, through all later outputs
        gC = (gy.unsqueeze(-2) @ h).squeeze(-2)  # (B, Lp, N)
        gdu = (g @ B.unsqueeze(-1)).squeeze(-1)  # (B, Lp, D)  d/d(delta u)
        gB = ((delta * u).unsqueeze(-2) @ g).squeeze(-2)  # (B, Lp, N)
        # d/d(delta A) at step t: g_t * a_t * h_{t-1}, computed in place in g
        g.mul_(dA)
        g[:, 1:].mul_(h[:, :-1])
        g[:, 0].zero_()
        gA = torch.einsum("bldn,bld->dn", g, delta)
        gdelta = gdu * u + torch.einsum("bldn,dn->bld", g, A)
        gu = gdu * delta
        grads = (gu, gdelta, gA, gB, gC)
        grads = tuple(gr if gr.dim() == 2 else gr[:, :L] for gr in grads)
        return (*(gr.to(dt) for gr, dt in zip(grads, dtypes, strict=True)), None)


def selective_scan(u: torch.Tensor, delta: torch.Tensor, A: torch.Tensor, B: torch.Tensor,
                   C: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
    """Fast chunked selective scan: ``y (B, L, D)`` from ``u, delta (B, L, D)``, ``A (D, N)``,
    ``B, C (B, L, N)``. ``chunk`` is the chunk length T (None: about sqrt(L))."""
    with torch.autocast(u.device.type, enabled=False):  # the scan itself stays in fp32
        return _SelectiveScan.apply(u, delta, A, B, C, chunk)


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
