"""The mLSTM cell of xLSTM (Beck et al. 2024, "xLSTM: Extended Long Short-Term Memory", eqs.
19-27, with the stabiliser state of App. A), in pure PyTorch: a chunked parallel form and the
recurrent step it is tested against. The equations are those of NX-AI/xlstm
``xlstm/blocks/mlstm/backends.py`` (``recurrent_step_stabilized_simple``, ``chunkwise_simple``).

Per batch element and head (keys scaled by ``1 / sqrt(DH)``; ``i``, ``f`` the gate
pre-activations, ``log f = logsigmoid(f)``)::

    m_t = max(log f_t + m_{t-1}, i_t)                        stabiliser, m_{-1} = 0
    C_t = exp(log f_t + m_{t-1} - m_t) C_{t-1} + exp(i_t - m_t) k_t v_t^T     (DH, DH)
    n_t = exp(log f_t + m_{t-1} - m_t) n_{t-1} + exp(i_t - m_t) k_t           (DH,)
    h_t = q_t C_t / (max(|q_t . n_t|, exp(-m_t)) + eps)

Shapes: ``q, k, v (B, L, NH, DH)``, ``i, f (B, L, NH)``; ``h (B, L, NH, DH)``.

The chunked form reproduces the recurrence exactly, stabiliser included: with ``F_t`` the
cumulative sum of ``log f`` inside a chunk and ``(C, n, m)`` the state entering it,
``m_t = max(m + F_t, max_{s <= t} (F_t - F_s + i_s))`` (the unrolled recurrence), so every
``exp`` has an exponent ``<= 0``; inside a chunk the contributions form a masked ``Q x Q``
matrix as in the parallel form, and chunk states are carried by a loop over chunks.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

DEFAULT_CHUNK = 64
EPS = 1e-6  # xlstm's eps in the denominator


def mlstm_chunked(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor,
                  f: torch.Tensor, chunk: int = DEFAULT_CHUNK,
                  state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
                  eps: float = EPS
                  ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Chunked mLSTM: ``(h (B, L, NH, DH), (C, n, m) after the last step)``, fp32 inside."""
    with torch.autocast(q.device.type, enabled=False):
        return _mlstm_chunked(q, k, v, i, f, chunk, state, eps)


def _mlstm_chunked(q, k, v, i, f, chunk, state, eps):
    dtype = q.dtype
    fp = torch.promote_types(dtype, torch.float32)
    Bz, L, NH, DH = q.shape
    Q = max(1, min(chunk, L))
    nc = -(-L // Q)
    pad = nc * Q - L
    log_f = F.logsigmoid(f.to(fp))
    # padded steps keep the state as it is: forget gate 1 (log 0), input gate 0 (log -inf)
    log_f = F.pad(log_f, (0, 0, 0, pad))
    i = F.pad(i.to(fp), (0, 0, 0, pad), value=float("-inf"))
    q, k, v = (F.pad(t.to(fp), (0, 0, 0, 0, 0, pad)) for t in (q, k, v))
    k = k / math.sqrt(DH)

    def chunks(t: torch.Tensor) -> torch.Tensor:  # (B, L, NH, ...) -> (B, NH, nc, Q, ...)
        t = t.view(Bz, nc, Q, NH, *t.shape[3:])
        return t.permute(0, 3, 1, 2, *range(4, t.dim()))

    q, k, v, i, log_f = chunks(q), chunks(k), chunks(v), chunks(i), chunks(log_f)
    Fc = torch.cumsum(log_f, dim=-1)  # (B, NH, nc, Q)
    causal = torch.tril(torch.ones(Q, Q, dtype=torch.bool, device=q.device))
    log_D = (Fc.unsqueeze(-1) - Fc.unsqueeze(-2) + i.unsqueeze(-2)).masked_fill(
        ~causal, float("-inf"))  # (B, NH, nc, Q_t, Q_s)
    m_intra = log_D.max(dim=-1).values  # (B, NH, nc, Q)

    # each chunk's own contribution to its end state, stabilised by its own maximum
    m_own = m_intra[..., -1]  # (B, NH, nc)
    w_end = torch.exp(log_D[..., -1, :] - m_own.unsqueeze(-1))  # (B, NH, nc, Q), exponent <= 0
    kv_own = (k * w_end.unsqueeze(-1)).transpose(-1, -2) @ v  # (B, NH, nc, DH, DH)
    n_own = (k * w_end.unsqueeze(-1)).sum(dim=-2)  # (B, NH, nc, DH)
    F_last = Fc[..., -1]  # (B, NH, nc)

    if state is None:
        C = q.new_zeros(Bz, NH, DH, DH)
        n = q.new_zeros(Bz, NH, DH)
        m = q.new_zeros(Bz, NH)
    else:
        C, n, m = (s.to(fp) for s in state)
    C_in, n_in, m_in = [], [], []
    # unbind, not x[..., c]: each indexing op's backward would write a full-size zero gradient
    for F_c, m_c, kv_c, n_c in zip(F_last.unbind(-1), m_own.unbind(-1), kv_own.unbind(2),
                                   n_own.unbind(2), strict=True):
        C_in.append(C)
        n_in.append(n)
        m_in.append(m)
        m_new = torch.maximum(m + F_c, m_c)
        carry = torch.exp(m + F_c - m_new)  # (B, NH), exponent <= 0
        own = torch.exp(m_c - m_new)
        C = carry[..., None, None] * C + own[..., None, None] * kv_c
        n = carry[..., None] * n + own[..., None] * n_c
        m = m_new
    C0 = torch.stack(C_in, dim=2)  # (B, NH, nc, DH, DH)
    n0 = torch.stack(n_in, dim=2)  # (B, NH, nc, DH)
    m0 = torch.stack(m_in, dim=2).unsqueeze(-1)  # (B, NH, nc, 1)

    m_t = torch.maximum(m0 + Fc, m_intra)  # (B, NH, nc, Q): the recurrent stabiliser
    inter = torch.exp(m0 + Fc - m_t).unsqueeze(-1)  # (B, NH, nc, Q, 1), exponent <= 0
    W = torch.exp(log_D - m_t.unsqueeze(-1)) * (q @ k.transpose(-1, -2))  # (B, NH, nc, Q, Q)
    num = W @ v + inter * (q @ C0)  # (B, NH, nc, Q, DH)
    qn = W.sum(dim=-1, keepdim=True) + inter * (q @ n0.unsqueeze(-1))  # (B, NH, nc, Q, 1)
    h = num / (torch.maximum(qn.abs(), torch.exp(-m_t).unsqueeze(-1)) + eps)
    h = h.permute(0, 2, 3, 1, 4).reshape(Bz, nc * Q, NH, DH)[:, :L]
    return h.to(dtype), (C, n, m)


def mlstm_step(q_t: torch.Tensor, k_t: torch.Tensor, v_t: torch.Tensor, i_t: torch.Tensor,
               f_t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
               eps: float = EPS
               ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """One step: ``q_t, k_t, v_t (B, NH, DH)``, ``i_t, f_t (B, NH)``, state ``(C (B, NH, DH,
    DH), n (B, NH, DH), m (B, NH))`` kept in its own dtype. Returns ``(h_t, state)``."""
    C, n, m = state
    fp, dtype = C.dtype, q_t.dtype
    q_t, k_t, v_t = q_t.to(fp), k_t.to(fp) / math.sqrt(q_t.shape[-1]), v_t.to(fp)
    log_f = F.logsigmoid(f_t.to(fp))
    m_new = torch.maximum(log_f + m, i_t.to(fp))  # (B, NH)
    fg = torch.exp(log_f + m - m_new)
    ig = torch.exp(i_t.to(fp) - m_new)
    C = fg[..., None, None] * C + ig[..., None, None] * (k_t.unsqueeze(-1) * v_t.unsqueeze(-2))
    n = fg[..., None] * n + ig[..., None] * k_t
    num = (q_t.unsqueeze(-2) @ C).squeeze(-2)  # (B, NH, DH)
    qn = (q_t * n).sum(-1, keepdim=True)  # (B, NH, 1)
    h = num / (torch.maximum(qn.abs(), torch.exp(-m_new).unsqueeze(-1)) + eps)
    return h.to(dtype), (C, n, m_new)


def mlstm_init_state(batch: int, heads: int, head_dim: int, device: torch.device,
                     dtype: torch.dtype = torch.float32
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The zero state ``(C, n, m)``; ``m = 0`` as in xlstm's step."""
    return (torch.zeros(batch, heads, head_dim, head_dim, device=device, dtype=dtype),
            torch.zeros(batch, heads, head_dim, device=device, dtype=dtype),
            torch.zeros(batch, heads, device=device, dtype=dtype))


def mlstm_naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, i: torch.Tensor,
                f: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None
                = None, eps: float = EPS
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Reference: the recurrence, one Python step per position, in at least fp32."""
    Bz, _, NH, DH = q.shape
    fp = torch.promote_types(q.dtype, torch.float32)
    if state is None:
        state = mlstm_init_state(Bz, NH, DH, q.device, fp)
    hs = []  # unbind: indexing x[:, t] would give every step a full-size zero gradient
    for q_t, k_t, v_t, i_t, f_t in zip(*(x.unbind(1) for x in (q, k, v, i, f)), strict=True):
        h_t, state = mlstm_step(q_t, k_t, v_t, i_t, f_t, state, eps)
        hs.append(h_t)
    return torch.stack(hs, dim=1), state
