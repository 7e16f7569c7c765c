"""The MAD suite: Poli et al. 2024, "Mechanistic Design and Scaling of Hybrid Architectures"
(arXiv 2403.17844), ``athms/mad-lab``: generators in ``mad/data/instances.py``, settings in
``configs/tasks/*.yml``, defaults in ``mad/configs.py`` (``MADConfig``).

Six tasks, each registered with MAD's baseline setting as its defaults (the one-axis changes are
params: ``vocab_size``, ``seq_len``, ``n_train``, ``frac_noise``, ...):

======================  =========================================  ===========================
seqbench task           MAD task (baseline setting)                changes in MAD's config
======================  =========================================  ===========================
``mad_recall``          in-context recall: vocab 16, length 128    vocab 32/64/128, length
                                                                   256/512/1024, n_train
                                                                   6400/3200/1600/800
``mad_noisy_recall``    noisy in-context recall: vocab 32, noise   vocab 48/80/144, length,
                        vocab 16, frac_noise 0.2, length 128       n_train, frac_noise 0.4/0.6/0.8
``mad_fuzzy_recall``    fuzzy in-context recall: vocab 16, length  vocab, length, n_train
                        128, key and value motifs of 1..3 tokens
``mad_selective_copy``  selective copying: vocab 16, length 256,   vocab, length 512/1024,
                        16 tokens                                  n_train, n_tokens 32/64/96
``mad_compression``     compression: vocab 16, length 32           vocab, length 64/128/256,
                                                                   n_train
``mad_memorization``    memorization: vocab 256, length 32,        vocab 512..8192
                        n_train 256
======================  =========================================  ===========================

Every setting trains on a fixed set of ``n_train`` examples (12,800 unless stated) for 200
epochs at batch 128 (20,000 steps; AdamW, cosine schedule, LR {1e-4, 5e-4, 1e-3} x WD {0, 0.1},
best run per setting) and is scored on 1,280 test examples; the MAD score of a task is the mean
over its settings of the best test accuracy. Those are spec settings (the lead's), not task
params, except ``n_train`` (``null`` draws fresh examples every step instead).

Differences from mad-lab, each deliberate and stated where it applies:

- Numbers are drawn with torch generators, so examples are not byte-identical to MAD's numpy
  streams; the distributions are MAD's (MAD's own quirks included, e.g. selective copying's
  blank placement and fuzzy recall's occasionally unanswerable probe).
- MAD's accuracy is torchmetrics' ``MulticlassAccuracy`` with its default ``average="macro"``
  (the mean of per-class accuracies); seqbench's is per scored token (micro). They agree when
  every class is scored equally often, which holds in expectation for the uniform values of the
  recall tasks but not exactly per test set.
- In-context recall guarantees one key-value pair in the context (MAD's ``not_noise_idx`` can
  point past the last generated pair, with probability ``f^(P-1)/P``, and then its generator
  fails).
- Compression: see :class:`Compression` (the decoder differs).
- MAD's ``multi_query=False`` variants of the recall tasks and the noise options of fuzzy
  recall, memorization and compression are not used by its benchmark configs and not offered.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F

from seqbench.errors import SpecError
from seqbench.worker.data.base import IGNORE, Task, TaskInfo, derive_seed
from seqbench.worker.data.recall import (
    SelectiveCopying,
    chance_baselines,
    chance_info,
    checked_params,
    need_float,
    need_int,
    need_n_train,
    recall_metrics,
    token_info,
)

MAD_N_TRAIN = 12_800  # MADConfig.num_train_examples


def shifted(tokens: torch.Tensor, targets: torch.Tensor, training: bool
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """MAD's autoregressive shift: input ``tokens[:-1]``; training labels are the next tokens,
    test labels ``targets[1:]`` (the recalled values only)."""
    return tokens[:, :-1], (tokens if training else targets)[:, 1:]


class InContextRecall(Task):
    """MAD's in-context recall (``generate_in_context_recall_instance``, ``multi_query=True``).

    With ``ns = vocab_size - noise_vocab_size``: keys ``0..ns//2-1``, values ``ns//2..ns-1``,
    noise ``ns..vocab_size-1``. ``seq_len/2 - 1`` slots follow each other; each is a noise pair
    (two uniform noise tokens) with probability ``frac_noise``, except one uniformly chosen slot
    that is always a key-value pair; otherwise a uniform key and its value, drawn uniformly the
    first time the key occurs in the example and repeated after. A final pair repeats a key
    chosen uniformly among the distinct keys presented. The model reads all but the last token
    (input length ``seq_len - 1``). It is scored (test labels) at every key position whose key
    was presented before, on that key's value, the final probe included. Training labels are
    MAD's: every next token (:meth:`sample_train`), so the training loss includes unpredictable
    keys and noise.

    Worked example, seq_len 10, vocab 8, no noise (keys 0..3, values 4..7), pairs
    ``(1,5) (2,4) (1,5) (3,7)``, final probe ``2``::

        tokens:  1 5 2 4 1 5 3 7 2 | 4     (the last token is not an input)
        x:       1 5 2 4 1 5 3 7 2
        y test:  . . . . 5 . . . 4
        y train: 5 2 4 1 5 3 7 2 4

    Baseline: uniform over the ``ns - ns//2`` values. ``n_train``: MAD's fixed training set.
    """

    version = 1

    def __init__(self, seq_len: int, vocab_size: int = 16, noise_vocab_size: int = 0,
                 frac_noise: float = 0.0, n_train: int | None = MAD_N_TRAIN) -> None:
        params = {"vocab_size": vocab_size, "noise_vocab_size": noise_vocab_size,
                  "frac_noise": frac_noise, "n_train": n_train}
        self.check(seq_len, params)
        super().__init__(seq_len, **params)
        self.vocab_size, self.noise_vocab_size = vocab_size, noise_vocab_size
        self.frac_noise, self.n_train = float(frac_noise), n_train
        ns = vocab_size - noise_vocab_size
        self.n_keys, self.n_values = ns // 2, ns - ns // 2
        self.info = chance_info(vocab_size, seq_len - 1, self.n_values,
                               f"the {self.n_values} values")

    @classmethod
    def input_len(cls, seq_len: int, params: dict[str, Any]) -> int:
        return seq_len - 1

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        p = checked_params(cls, seq_len, params)
        V = need_int("vocab_size", p["vocab_size"], 2)
        noise = need_int("noise_vocab_size", p["noise_vocab_size"], 0, V - 2,
                         why="at least one key and one value stay")
        frac = need_float("frac_noise", p["frac_noise"], lo=0.0, hi_open=1.0)
        need_n_train(p["n_train"])
        if frac > 0 and noise == 0:
            raise SpecError("params.noise_vocab_size", noise, "must be >= 1 when frac_noise > 0")
        if seq_len % 2 or seq_len < 4:
            raise SpecError("seq_len", seq_len, "must be even and >= 4 (key-value pairs and "
                            "the final probe pair)")

    def tokens(self, gen: torch.Generator, B: int, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole ``(B, seq_len)`` sequence and its test targets, before the shift."""
        P = self.seq_len // 2 - 1  # slots before the probe
        nk, ns = self.n_keys, self.vocab_size - self.noise_vocab_size
        keys = torch.randint(0, nk, (B, P), generator=gen, device=device)
        table = torch.randint(nk, ns, (B, nk), generator=gen, device=device)  # key -> value
        values = table.gather(1, keys)
        noise = torch.zeros(B, P, dtype=torch.bool, device=device)
        if self.frac_noise > 0:
            noise = torch.rand(B, P, generator=gen, device=device) < self.frac_noise
            keep = torch.randint(0, P, (B, 1), generator=gen, device=device)
            noise.scatter_(1, keep, False)  # one slot is always a key-value pair
            junk = torch.randint(ns, self.vocab_size, (B, P, 2), generator=gen, device=device)
            keys_in = torch.where(noise, junk[..., 0], keys)
            values_in = torch.where(noise, junk[..., 1], values)
        else:
            keys_in, values_in = keys, values
        slot = torch.arange(P, device=device).expand(B, P)
        column = torch.where(noise, nk, keys)  # noise slots go to a spare column
        first = torch.full((B, nk + 1), P, dtype=torch.long, device=device)
        first.scatter_reduce_(1, column, slot, reduce="amin")
        repeated = (first.gather(1, column) < slot) & ~noise
        presented = first[:, :nk] < P  # (B, nk)
        score = torch.rand(B, nk, generator=gen, device=device).masked_fill(~presented, -1.0)
        probe = score.argmax(dim=1, keepdim=True)  # uniform over the presented keys
        tokens = torch.stack([keys_in, values_in], dim=2).reshape(B, 2 * P)
        tokens = torch.cat([tokens, probe, table.gather(1, probe)], dim=1)  # (B, seq_len)
        targets = torch.full_like(tokens, IGNORE)
        targets[:, 1:2 * P:2] = torch.where(repeated, values, IGNORE)
        targets[:, -1] = tokens[:, -1]
        return tokens, targets

    def sample(self, gen: torch.Generator, batch_size: int, device: torch.device):
        return shifted(*self.tokens(gen, batch_size, device), training=False)

    def sample_train(self, gen: torch.Generator, batch_size: int, device: torch.device):
        return shifted(*self.tokens(gen, batch_size, device), training=True)


class NoisyInContextRecall(InContextRecall):
    """MAD's noisy in-context recall: :class:`InContextRecall` with MAD's noisy baseline
    (vocab 32 of which 16 noise tokens, ``frac_noise`` 0.2; MAD's vocab changes 48/80/144 keep
    the 16 noise tokens)."""

    def __init__(self, seq_len: int, vocab_size: int = 32, noise_vocab_size: int = 16,
                 frac_noise: float = 0.2, n_train: int | None = MAD_N_TRAIN) -> None:
        super().__init__(seq_len, vocab_size=vocab_size, noise_vocab_size=noise_vocab_size,
                         frac_noise=frac_noise, n_train=n_train)


def distinct_tuples(gen: torch.Generator, shape: tuple[int, ...], size: int, n: int,
                    device: torch.device) -> torch.Tensor:
    """Uniform ordered ``size``-tuples of distinct integers in ``0..n-1``: ``(*shape, size)``.

    The i-th element is uniform on the ``n - i`` values not yet taken (sequential draws without
    replacement), so every prefix is itself a uniform ordered tuple.
    """
    out: list[torch.Tensor] = []
    for i in range(size):
        r = torch.randint(0, n - i, shape, generator=gen, device=device)
        if out:
            for taken in torch.stack(out, dim=-1).sort(dim=-1).values.unbind(-1):
                r = r + (r >= taken).long()  # skip the taken values, smallest first
        out.append(r)
    return torch.stack(out, dim=-1)


def first_occurrence(code: torch.Tensor) -> torch.Tensor:
    """For each position of ``code`` (B, S), the index of the first position in its row that
    holds the same code."""
    B, S = code.shape
    order = torch.arange(S, device=code.device).expand(B, S)
    keyed, perm = (code * S + order).sort(dim=1)  # by code, then position
    sorted_code = keyed // S
    start = torch.ones_like(sorted_code, dtype=torch.bool)
    start[:, 1:] = sorted_code[:, 1:] != sorted_code[:, :-1]
    start_at = torch.where(start, order, 0).cummax(dim=1).values  # index of the group start
    first_sorted = perm.gather(1, start_at)
    return torch.empty_like(perm).scatter_(1, perm, first_sorted)


class FuzzyInContextRecall(Task):
    """MAD's fuzzy in-context recall (``generate_fuzzy_in_context_recall_instance``,
    ``multi_query=True``): keys and values are motifs of several tokens.

    With ``ns = vocab_size - 1`` (token ``vocab_size-1`` pads): key tokens ``0..ns//2-1``, value
    tokens ``ns//2..ns-1``. A key is an ordered tuple of distinct key tokens, 1 to
    ``k_motif_size`` long (training: the length is uniform on 1..k_motif_size; test: always
    ``k_motif_size``); a value likewise, 1 to ``v_motif_size`` long (uniform, train and test).
    A probe key and value are drawn first, and ``probe_idx`` uniform on
    ``0..seq_len - 2 (k+v probe length) - 1``. Slots are appended while the sequence is shorter
    than ``seq_len - probe length - (k_motif_size + v_motif_size)``: the first slot that starts
    at or after ``probe_idx`` is the probe pair, unless the probe key already occurred by chance;
    every other slot is a random key with its value (drawn at the key's first occurrence, the
    probe key's being the probe value). Then the probe key and value end the sequence, which is
    left-padded to ``seq_len + 1`` tokens. As in MAD, the probe pair is sometimes not in the
    context (when ``probe_idx`` falls late): that final query is then unanswerable. Input: all
    but the last token (``seq_len``). Test labels: the value tokens of every key presented
    before (the final probe included), each predicted at the token before it; training labels:
    every next token.

    Worked example, seq_len 16, vocab 9 (pad 8; key tokens 0..3, values 4..7), test mode with
    motifs of up to 2 tokens (so slots are appended while the length is below 16 - 4 - 4 = 8),
    context ``(0 1 -> 5)`` ``(2 3 -> 6 4)`` ``(0 1 -> 5)``, probe ``(2 3 -> 6 4)``::

        tokens: 8 8 8 0 1 5 2 3 6 4 0 1 5 2 3 6 | 4
        y test: . . . . . . . . . . . 5 . . 6 4

    Baseline: uniform over the ``ns - ns//2`` value tokens (a model that knows values never
    repeat a token within a motif does a little better on second and third value tokens).
    """

    version = 1

    def __init__(self, seq_len: int, vocab_size: int = 16, k_motif_size: int = 3,
                 v_motif_size: int = 3, n_train: int | None = MAD_N_TRAIN) -> None:
        params = {"vocab_size": vocab_size, "k_motif_size": k_motif_size,
                  "v_motif_size": v_motif_size, "n_train": n_train}
        self.check(seq_len, params)
        super().__init__(seq_len, **params)
        self.vocab_size, self.km, self.vm, self.n_train = (vocab_size, k_motif_size,
                                                           v_motif_size, n_train)
        ns = vocab_size - 1
        self.n_keys, self.n_values = ns // 2, ns - ns // 2
        self.info = chance_info(vocab_size, seq_len, self.n_values,
                               f"the {self.n_values} value tokens")

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        p = checked_params(cls, seq_len, params)
        V = need_int("vocab_size", p["vocab_size"], 3)
        km = need_int("k_motif_size", p["k_motif_size"], 1)
        vm = need_int("v_motif_size", p["v_motif_size"], 1)
        need_n_train(p["n_train"])
        nk = (V - 1) // 2
        if km > nk:
            raise SpecError("params.k_motif_size", km, f"must be <= {nk}, the number of key "
                            "tokens ((vocab_size - 1)//2): a key's tokens are distinct")
        if vm > V - 1 - nk:
            raise SpecError("params.v_motif_size", vm, f"must be <= {V - 1 - nk}, the number "
                            "of value tokens: a value's tokens are distinct")
        if (nk + 1) ** km >= 2 ** 62:
            raise SpecError("params.k_motif_size", km, "too many distinct keys to index")
        if seq_len <= 2 * (km + vm):
            raise SpecError("seq_len", seq_len, f"must be > 2 (k_motif_size + v_motif_size) = "
                            f"{2 * (km + vm)} (MAD draws probe_idx below seq_len - 2 probe "
                            "length)")

    def _sizes(self, gen: torch.Generator, shape: tuple[int, ...], m: int, fixed: bool,
               device: torch.device) -> torch.Tensor:
        if fixed:
            return torch.full(shape, m, dtype=torch.long, device=device)
        return torch.randint(1, m + 1, shape, generator=gen, device=device)

    def _code(self, keys: torch.Tensor, sizes: torch.Tensor) -> torch.Tensor:
        """An injective integer per key tuple: digits token+1 in base n_keys+1, up to size."""
        base = self.n_keys + 1
        digit = torch.arange(self.km, device=keys.device)
        weight = base ** digit  # (km,)
        used = digit < sizes.unsqueeze(-1)
        return ((keys + 1) * weight * used).sum(-1)

    def tokens(self, gen: torch.Generator, B: int, device: torch.device, training: bool
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """The whole ``(B, seq_len + 1)`` sequence and its test targets, before the shift."""
        L, km, vm, nk, nv = self.seq_len, self.km, self.vm, self.n_keys, self.n_values
        W = km + vm  # tokens per slot, at most
        S = L // 2 + 1  # slots: each has >= 2 tokens and they stop before length L
        # the probe, then the slots' own draws (sizes, key tuples, fresh values)
        pk_size = self._sizes(gen, (B,), km, not training, device)
        pv_size = self._sizes(gen, (B,), vm, False, device)
        pk = distinct_tuples(gen, (B,), km, nk, device)  # (B, km)
        pv = distinct_tuples(gen, (B,), vm, nv, device) + nk  # (B, vm)
        p_len = pk_size + pv_size
        u = torch.rand(B, generator=gen, device=device, dtype=torch.float64)
        probe_idx = (u * (L - 2 * p_len)).long()  # U{0..L-2p-1}
        stop = L - p_len - W  # slots are appended while the length is below this
        k_size = self._sizes(gen, (B, S), km, not training, device)
        v_size = self._sizes(gen, (B, S), vm, False, device)
        k_tok = distinct_tuples(gen, (B, S), km, nk, device)  # (B, S, km)
        v_tok = distinct_tuples(gen, (B, S), vm, nv, device) + nk  # (B, S, vm)
        p_code = self._code(pk, pk_size)  # (B,)

        def resolve(code: torch.Tensor, v_tok: torch.Tensor, v_size: torch.Tensor):
            """Each slot's value: the probe value for the probe key, else its first
            occurrence's; and each slot's start (tokens before it)."""
            is_probe = code == p_code.unsqueeze(1)
            src = first_occurrence(code)
            vt = torch.where(is_probe.unsqueeze(-1), pv.unsqueeze(1),
                             v_tok.gather(1, src.unsqueeze(-1).expand(-1, -1, vm)))
            vs = torch.where(is_probe, pv_size.unsqueeze(1), v_size.gather(1, src))
            size = k_size + vs
            return vt, vs, src, size.cumsum(1) - size, is_probe

        code = self._code(k_tok, k_size)  # (B, S)
        _, _, _, start, is_probe = resolve(code, v_tok, v_size)
        # the probe slot: the first slot starting at or after probe_idx, if it runs and the
        # probe key has not occurred before it
        j0 = (start < probe_idx.unsqueeze(1)).sum(1)  # (B,) first slot with start >= probe_idx
        j0c = j0.clamp(max=S - 1).unsqueeze(1)
        probe_seen = (is_probe.long().cumsum(1) - is_probe.long()).gather(1, j0c).squeeze(1) > 0
        inserted = (j0 < S) & (start.gather(1, j0c).squeeze(1) < stop) & ~probe_seen
        at = F.one_hot(j0c.squeeze(1), S).bool() & inserted.unsqueeze(1)  # (B, S)
        k_size = torch.where(at, pk_size.unsqueeze(1), k_size)
        k_tok = torch.where(at.unsqueeze(-1), pk.unsqueeze(1), k_tok)
        code = torch.where(at, p_code.unsqueeze(1), code)
        vt, vs, src, start, _ = resolve(code, v_tok, v_size)
        runs = start < stop.unsqueeze(1)  # (B, S): the slots MAD's loop appends
        scored = runs & (src < torch.arange(S, device=device))  # key presented before

        # lay out every slot's key and value tokens, then the final probe pair
        lane = torch.arange(W, device=device)
        is_key = lane < km
        slot_tok = torch.cat([k_tok, vt], dim=-1)  # (B, S, W)
        valid = torch.where(is_key, lane < k_size.unsqueeze(-1),
                            lane - km < vs.unsqueeze(-1)) & runs.unsqueeze(-1)
        slot_tgt = torch.where(is_key | ~scored.unsqueeze(-1), IGNORE, slot_tok)
        final_tok = torch.cat([pk, pv], dim=-1).unsqueeze(1)  # (B, 1, W)
        final_valid = torch.where(is_key, lane < pk_size.unsqueeze(-1),
                                  lane - km < pv_size.unsqueeze(-1)).unsqueeze(1)
        final_tgt = torch.where(is_key, IGNORE, final_tok)
        tok = torch.cat([slot_tok, final_tok], dim=1).reshape(B, -1)
        tgt = torch.cat([slot_tgt, final_tgt], dim=1).reshape(B, -1)
        valid = torch.cat([valid, final_valid], dim=1).reshape(B, -1)
        # right-align the valid tokens in seq_len + 1 positions, pad tokens on the left
        n_valid = valid.sum(1, keepdim=True)
        dest = torch.where(valid, L + 1 - n_valid + valid.long().cumsum(1) - 1, L + 1)
        tokens = torch.full((B, L + 2), self.vocab_size - 1, dtype=torch.long, device=device)
        targets = torch.full((B, L + 2), IGNORE, dtype=torch.long, device=device)
        tokens.scatter_(1, dest, tok)  # invalid entries land in the spare column L + 1
        targets.scatter_(1, dest, tgt)
        return tokens[:, :L + 1], targets[:, :L + 1]

    def sample(self, gen: torch.Generator, batch_size: int, device: torch.device):
        return shifted(*self.tokens(gen, batch_size, device, training=False), training=False)

    def sample_train(self, gen: torch.Generator, batch_size: int, device: torch.device):
        return shifted(*self.tokens(gen, batch_size, device, training=True), training=True)


class Memorization(Task):
    """MAD's memorization (``generate_memorization_instance``): a fixed key-value map, learned
    in the weights.

    With ``ns = vocab_size - 1`` (token ``vocab_size-1`` is the insert token): keys
    ``0..ns//2-1``, values ``ns//2..ns-1``; the map sends the i-th key of a random permutation
    of the keys to the i-th value of a random permutation of the values (an injection: with an
    odd ``ns`` one value is never used). It is drawn from ``map_seed`` alone, so training and
    evaluation (and every job seed) share it; MAD draws it from the run's seed (12345 by
    default). An example is ``seq_len/2`` uniform keys, each followed by the insert token at
    which its value is scored.

    Worked example, seq_len 6, vocab 8 (insert 7; keys 0..2, values 3..6), map
    ``0->5 1->3 2->6``::

        x: 2 7 0 7 2 7
        y: . 6 . 5 . 6

    Baseline: ignoring the key, a fixed value is right for one key in ``ns//2`` (accuracy
    ``1/(ns//2)``); uniform over the map's ``ns//2`` values gives loss ``ln(ns//2)``.
    """

    version = 1

    def __init__(self, seq_len: int, vocab_size: int = 256, map_seed: int = 12345,
                 n_train: int | None = 256) -> None:
        params = {"vocab_size": vocab_size, "map_seed": map_seed, "n_train": n_train}
        self.check(seq_len, params)
        super().__init__(seq_len, **params)
        self.vocab_size, self.map_seed, self.n_train = vocab_size, map_seed, n_train
        ns = vocab_size - 1
        self.n_keys = ns // 2
        gen = torch.Generator().manual_seed(derive_seed(map_seed, "mad_memorization/map"))
        keys = torch.randperm(self.n_keys, generator=gen)
        values = torch.randperm(ns - self.n_keys, generator=gen)[: self.n_keys] + self.n_keys
        self.table = torch.empty(self.n_keys, dtype=torch.long).scatter_(0, keys, values)
        baselines, notes = chance_baselines(self.n_keys, f"the map's {self.n_keys} values")
        notes["accuracy"] = f"a fixed value, right for 1 of the {self.n_keys} keys"
        self.info = token_info(vocab_size, seq_len, baselines, notes)

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        p = checked_params(cls, seq_len, params)
        need_int("vocab_size", p["vocab_size"], 3, why="the insert token, >= 1 key and value")
        need_int("map_seed", p["map_seed"], 0)
        need_n_train(p["n_train"])
        if seq_len % 2:
            raise SpecError("seq_len", seq_len, "must be even (key, insert token pairs)")

    def sample(self, gen: torch.Generator, batch_size: int, device: torch.device):
        B, P = batch_size, self.seq_len // 2
        keys = torch.randint(0, self.n_keys, (B, P), generator=gen, device=device)
        insert = torch.full_like(keys, self.vocab_size - 1)
        x = torch.stack([keys, insert], dim=2).reshape(B, 2 * P)
        values = self.table.to(device)[keys]
        y = torch.stack([torch.full_like(keys, IGNORE), values], dim=2).reshape(B, 2 * P)
        return x, y  # (B, seq_len) each


class Compression(Task):
    """MAD's compression (``generate_compression_instance``): encode a sequence into one vector,
    decode it back.

    Input: ``seq_len - 1`` tokens uniform on ``0..vocab_size-2``, then the compression token
    ``vocab_size-1``; the target is the input itself, all ``seq_len`` positions. MAD trains an
    autoencoder (``mad/model/auto_encoder.py``): the mixer stack, the state at the last position
    as the code, and a decoder (per position, a two-layer MLP with GELU and norms on the code
    plus a sinusoidal position embedding, then the unembedding). Here the backbone's pooled
    head does the decoding: ``per_position=False`` with ``output_dim = seq_len * vocab_size``,
    the last position's state mapped linearly to every position's logits. The bottleneck is
    MAD's (one vector at the last position, after a causal encoder); the decoder is linear and
    has its own weights per position, so scores are comparable in kind, not in number.

    Worked example, seq_len 5, vocab 4 (compression token 3)::

        x: 2 0 0 1 3
        y: 2 0 0 1 3      (all five positions scored, from the pooled output)

    Baseline: uniform over the ``vocab_size - 1`` tokens at the first ``seq_len - 1``
    positions and the compression token (always known) at the last.
    """

    version = 1

    def __init__(self, seq_len: int, vocab_size: int = 16,
                 n_train: int | None = MAD_N_TRAIN) -> None:
        params = {"vocab_size": vocab_size, "n_train": n_train}
        self.check(seq_len, params)
        super().__init__(seq_len, **params)
        self.vocab_size, self.n_train = vocab_size, n_train
        L, n = seq_len, vocab_size - 1
        self.info = TaskInfo(
            input_kind="tokens", input_dim=vocab_size, output_kind="classes",
            output_dim=seq_len * vocab_size, per_position=False, input_len=seq_len,
            metrics=recall_metrics(), primary_metric="accuracy",
            baselines={"loss": (L - 1) * math.log(n) / L, "accuracy": ((L - 1) / n + 1) / L},
            baseline_notes={"loss": f"uniform over the {n} tokens, the compression token known",
                            "accuracy": f"chance over the {n} tokens, the compression token "
                                        "known"})

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        p = checked_params(cls, seq_len, params)
        need_int("vocab_size", p["vocab_size"], 3, why="the compression token and >= 2 others")
        need_n_train(p["n_train"])
        if seq_len < 2:
            raise SpecError("seq_len", seq_len, "must be >= 2 (tokens, then the compression "
                            "token)")

    def sample(self, gen: torch.Generator, batch_size: int, device: torch.device):
        B, L, V = batch_size, self.seq_len, self.vocab_size
        x = torch.randint(0, V - 1, (B, L), generator=gen, device=device)
        x[:, -1] = V - 1
        return x, x.clone()  # (B, L) each

    def logits(self, out: torch.Tensor) -> torch.Tensor:
        return out.reshape(out.shape[0], self.seq_len, self.vocab_size)  # (B, L, V)

    def loss(self, out: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return super().loss(self.logits(out), y)

    def metric_sums(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[float, int]]:
        return super().metric_sums(self.logits(out), y)


class MADSelectiveCopying(SelectiveCopying):
    """MAD's selective copying: :class:`~seqbench.worker.data.recall.SelectiveCopying` with
    MAD's layout and baseline setting (vocab 16, length 256, 16 tokens, 12,800 training
    examples) as defaults."""

    def __init__(self, seq_len: int, variant: str = "mad", vocab_size: int = 16,
                 n_tokens: int = 16, n_train: int | None = MAD_N_TRAIN) -> None:
        super().__init__(seq_len, variant=variant, vocab_size=vocab_size, n_tokens=n_tokens,
                         n_train=n_train)
