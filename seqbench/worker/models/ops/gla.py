"""Gated linear attention (Yang, Wang, Shen, Panda & Kim 2024, "Gated Linear Attention
Transformers with Hardware-Efficient Training"), in pure PyTorch: a chunked form and the
recurrent reference (flash-linear-attention's ``fla/ops/gla/naive.py`` computes the same).

Per batch element and head, with a diagonal gate ``alpha_t = exp(log_a_t)`` over the key dim::

    S_t = diag(alpha_t) S_{t-1} + k_t^T v_t          S_t: (K, V), S_{-1} = 0 (or a given state)
    o_t = scale * q_t S_t                             o_t: (V,)

Shapes: ``q, k (B, L, H, K)``, ``v (B, L, H, V)``, ``log_a (B, L, H, K)`` (data-dependent, <= 0),
or ``(B, L, H, 1)`` / ``(H, 1)``-broadcastable for one decay per head (RetNet's fixed decay is
``log_a = log(gamma_h)`` everywhere). ``o (B, L, H, V)``.

The chunked form cuts the sequence into chunks of ``Q`` steps. With ``b_t`` the cumulative sum
of ``log_a`` inside a chunk (``b`` decreases):

- inside a chunk, ``o_t += scale * sum_{s <= t} (sum_k q_tk k_sk exp(b_tk - b_sk)) v_s``. With
  a per-key decay, when the chunk's total log decay ``|b_last|`` is at most ``FACTOR_RANGE``
  (80), ``exp(b_t - b_s) = exp(b_t - r) exp(r - b_s)`` about the midpoint ``r = b_last / 2``
  makes the scores one matrix product of factors within ``exp(+-40)`` (products within fp32's
  range, above the diagonal too, where they are masked). A chunk that decays more (a gate
  logit near -1000 with GLA's normaliser 16) takes the exact pairwise form instead,
  :func:`per_key_scores`: the exponent differences masked to ``-inf`` above the diagonal
  *before* ``exp``, every exponent ``<= 0``, at ``Q x Q x K`` per chunk and head (the reason
  the paper's kernels chunk twice). With one decay per head, ``b_t - b_s`` is a scalar and
  the masked decay matrix multiplies ``q k^T`` directly;
- the state entering a chunk adds ``scale * (q_t * exp(b_t)) S_in`` (exponent <= 0);
- chunk states are carried by :func:`~seqbench.worker.models.ops.linear_scan.linear_scan` over
  the chunks:
  ``S_out = exp(b_last) S_in + sum_s (k_s * exp(b_last - b_s))^T v_s`` (exponents <= 0).

Everything runs in at least fp32; the result comes back in ``q``'s dtype.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from seqbench.worker.models.ops.linear_scan import linear_scan

DEFAULT_CHUNK = 16  # CPU, 4 heads of K 8: 16 and 32 measured fastest (fwd + bwd, L = 4096)
# a chunk whose log decay spans at most this factors exp(b_t - b_s) about its midpoint: the
# factors stay within exp(+-40), their products within fp32's range (exp(88))
FACTOR_RANGE = 80.0


def gla_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_a: torch.Tensor,
                scale: float, chunk: int = DEFAULT_CHUNK, state: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Chunked GLA: ``(o (B, L, H, V), final state (B, H, K, V) fp32)``."""
    with torch.autocast(q.device.type, enabled=False):
        return _gla_chunked(q, k, v, log_a, scale, chunk, state)


class _PerKeyScores(torch.autograd.Function):
    """``A[..., t, s] = sum_k q_tk k_sk exp(b_tk - b_sk)`` for ``s <= t``, 0 above, from
    ``q, k, b (..., Q, K)``, with a hand-written backward: autograd through the broadcast
    ``(Q, Q, K)`` products made about 25 passes over that tensor, this makes about 12
    (``dq = sum_s dA_ts k_s E_ts``, ``dk = sum_t dA_ts q_t E_ts``, ``db = q dq - k dk``)."""

    @staticmethod
    def forward(ctx: Any, q: torch.Tensor, k: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        Q = q.shape[-2]
        causal = torch.tril(torch.ones(Q, Q, dtype=torch.bool, device=q.device))
        E = b.unsqueeze(-2) - b.unsqueeze(-3)  # (..., Q_t, Q_s, K): b_t - b_s
        E.masked_fill_(~causal.unsqueeze(-1), float("-inf")).exp_()  # masked before exp: <= 1
        ctx.save_for_backward(q, k, E)
        return ((E * k.unsqueeze(-3)) @ q.unsqueeze(-1)).squeeze(-1)  # (..., Q_t, Q_s)

    @staticmethod
    def backward(ctx: Any, dA: torch.Tensor) -> tuple[torch.Tensor, ...]:
        q, k, E = ctx.saved_tensors
        dq = (dA.unsqueeze(-2) @ (E * k.unsqueeze(-3))).squeeze(-2)  # (..., Q_t, K)
        dk = (E * dA.unsqueeze(-1) * q.unsqueeze(-2)).sum(-3)  # (..., Q_s, K)
        return dq, dk, q * dq - k * dk


def per_key_scores(q: torch.Tensor, k: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Intra-chunk scores with a decay per key dimension: ``q, k, b (..., Q, K)`` ->
    ``(..., Q, Q)``, ``b`` the cumulative log decay inside the chunk."""
    return _PerKeyScores.apply(q, k, b)


def _gla_chunked(q, k, v, log_a, scale, chunk, state):
    dtype = q.dtype
    f = torch.promote_types(dtype, torch.float32)
    Bz, L, H, K = q.shape
    V = v.shape[-1]
    Q = max(1, min(chunk, L))
    nc = -(-L // Q)
    pad = nc * Q - L
    log_a = log_a.to(f).expand(Bz, L, H, log_a.shape[-1])
    per_key = log_a.shape[-1] != 1
    # padded steps: zero inputs, decay 1 (log 0), so the final state is the state after L steps
    q, k, v, log_a = (F.pad(t.to(f), (0, 0, 0, 0, 0, pad)) for t in (q, k, v, log_a))
    q = q.view(Bz, nc, Q, H, K).permute(0, 3, 1, 2, 4).contiguous()  # (B, H, nc, Q, K)
    k = k.view(Bz, nc, Q, H, K).permute(0, 3, 1, 2, 4).contiguous()
    v = v.view(Bz, nc, Q, H, V).permute(0, 3, 1, 2, 4).contiguous()  # (B, H, nc, Q, V)
    b = torch.cumsum(log_a.view(Bz, nc, Q, H, -1).permute(0, 3, 1, 2, 4), dim=3)  # (B,H,nc,Q,K|1)
    causal = torch.tril(torch.ones(Q, Q, dtype=torch.bool, device=q.device))

    # 1. inside each chunk
    if per_key:
        b_last = b[:, :, :, -1:]  # (B, H, nc, 1, K): the chunk's total log decay, <= 0
        if float(-b_last.detach().min()) <= FACTOR_RANGE:
            # exp(b_t - b_s) = exp(b_t - r) exp(r - b_s) about the chunk's midpoint r: both
            # exponents within +-FACTOR_RANGE / 2, so nothing overflows, even above the diagonal
            r = b_last / 2
            scores = (q * torch.exp(b - r)) @ (k * torch.exp(r - b)).transpose(-1, -2)
            scores = scores.masked_fill(~causal, 0.0)
        else:  # a chunk decays by more than exp(-FACTOR_RANGE): the pairwise form
            scores = per_key_scores(q, k, b)  # (B, H, nc, Q_t, Q_s)
    else:
        diff = b - b.transpose(-1, -2)  # (B, H, nc, Q_t, Q_s): b_t - b_s
        decay = torch.exp(diff.masked_fill(~causal, float("-inf")))
        scores = (q @ k.transpose(-1, -2)) * decay
    o = scale * (scores @ v)  # (B, H, nc, Q, V)

    # 2. each chunk's own contribution to its final state, and its total decay
    b_last = b[:, :, :, -1:]  # (B, H, nc, 1, K|1)
    k_to_end = k * torch.exp(b_last - b)  # (B, H, nc, Q, K), exponent <= 0
    own = k_to_end.transpose(-1, -2) @ v  # (B, H, nc, K, V)
    chunk_decay = torch.exp(b_last).transpose(-1, -2)  # (B, H, nc, K|1, 1)

    # 3. carry across chunks: S_after_c = decay_c * S_after_{c-1} + own_c, a linear scan over
    # the chunks (the given initial state enters through the first chunk)
    if state is not None:
        own = torch.cat([own[:, :, :1] + chunk_decay[:, :, :1] * state.to(f).unsqueeze(2),
                         own[:, :, 1:]], dim=2)
    after = linear_scan(chunk_decay.transpose(1, 2), own.transpose(1, 2)).transpose(1, 2)
    first = own.new_zeros(Bz, H, 1, K, V) if state is None else state.to(f).unsqueeze(2)
    S_in = torch.cat([first, after[:, :, :-1]], dim=2)  # (B, H, nc, K, V) entering each chunk
    o = o + scale * ((q * torch.exp(b)) @ S_in)  # (B, H, nc, Q, V)
    o = o.permute(0, 2, 3, 1, 4).reshape(Bz, nc * Q, H, V)[:, :L]
    return o.to(dtype), after[:, :, -1]


def gla_step(q_t: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor, log_a_t: torch.Tensor,
             scale: float, state: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """One step: ``q_t, k_t (B, H, K)``, ``v_t (B, H, V)``, ``log_a_t`` broadcastable to
    ``(B, H, K)``, state ``(B, H, K, V)`` (kept in its own dtype). Returns ``(o_t, state)``."""
    f = state.dtype
    alpha = torch.exp(log_a_t.to(f)).expand(*k_t.shape[:2], -1).unsqueeze(-1)  # (B, H, K|1, 1)
    state = alpha * state + k_t.to(f).unsqueeze(-1) * v_t.to(f).unsqueeze(-2)
    o = scale * (q_t.to(f).unsqueeze(-2) @ state).squeeze(-2)  # (B, H, V)
    return o.to(q_t.dtype), state


def gla_naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, log_a: torch.Tensor,
              scale: float, state: torch.Tensor | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Reference: the recurrence, one Python step per position, in at least fp32."""
    Bz, L, H, K = q.shape
    f = torch.promote_types(q.dtype, torch.float32)
    log_a = log_a.expand(Bz, L, H, log_a.shape[-1])
    if state is None:
        state = q.new_zeros(Bz, H, K, v.shape[-1], dtype=f)
    outs = []  # unbind: indexing x[:, t] would give every step a full-size zero gradient
    for q_t, k_t, v_t, a_t in zip(q.unbind(1), k.unbind(1), v.unbind(1), log_a.unbind(1),
                                  strict=True):
        o_t, state = gla_step(q_t, k_t, v_t, a_t, scale, state)
        outs.append(o_t)
    return torch.stack(outs, dim=1), state
