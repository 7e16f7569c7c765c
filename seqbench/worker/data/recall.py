"""Recall and selectivity: the synthetic tasks that separate state-space models from attention.

- :class:`SelectiveCopying`: Gu & Dao 2023, "Mamba: Linear-Time Sequence Modeling with Selective
  State Spaces" (arXiv 2312.00752), Section 4.1.1 and Appendix E.1; the layout of the S4
  repository's copying generator with ``variable=True`` (``state-spaces/s4``,
  ``src/dataloaders/datasets/copying.py``), or MAD's (``athms/mad-lab``,
  ``mad/data/instances.py``, ``generate_selective_copying_instance``).
- :class:`InductionHeads`: Mamba Section 4.1.2 and Appendix E.1; Olsson et al. 2022, "In-context
  Learning and Induction Heads".
- :class:`MQAR`: multi-query associative recall, Arora, Eyuboglu et al. 2024, "Zoology: Measuring
  and Improving Recall in Efficient Language Models" (ICLR), ``HazyResearch/zoology``,
  ``zoology/data/multiquery_ar.py``.

Every generator is vectorised over the batch and draws only from the ``torch.Generator`` it is
given, on the target device. The parameter helpers at the bottom are shared with
:mod:`seqbench.worker.data.mad`.
"""

from __future__ import annotations

import inspect
import math
from typing import Any

import torch

from seqbench.errors import SpecError
from seqbench.worker.data.base import IGNORE, Metric, Task, TaskInfo, pow2_slice_sums

VARIANTS = ("mamba", "mad")


def recall_metrics() -> tuple[Metric, ...]:
    return (Metric("loss", False, "nats"), Metric("accuracy", True))


def chance_baselines(n_choices: int, what: str) -> tuple[dict[str, float], dict[str, str]]:
    """Accuracy 1/n and cross-entropy ln n of guessing uniformly among ``n_choices``."""
    return ({"loss": math.log(n_choices), "accuracy": 1 / n_choices},
            {"loss": f"uniform over {what}", "accuracy": f"chance: uniform over {what}"})


def token_info(vocab_size: int, input_len: int, baselines: dict[str, float],
               notes: dict[str, str]) -> TaskInfo:
    """A per-position next-token classification over ``vocab_size`` tokens, scored by loss and
    accuracy (the recall and MAD tasks)."""
    return TaskInfo(
        input_kind="tokens", input_dim=vocab_size, output_kind="classes", output_dim=vocab_size,
        per_position=True, input_len=input_len, metrics=recall_metrics(),
        primary_metric="accuracy", baselines=baselines, baseline_notes=notes)


def chance_info(vocab_size: int, input_len: int, n_values: int, what: str) -> TaskInfo:
    """:func:`token_info` with the chance baselines of guessing among ``n_values``."""
    return token_info(vocab_size, input_len, *chance_baselines(n_values, what))


class SelectiveCopying(Task):
    """Selective copying: ``n_tokens`` data tokens at random positions among noise tokens, then
    output them in order; ``seq_len`` is the whole input length, markers included.

    ``variant="mamba"`` (the Mamba paper's task, in the layout of the S4 repository's
    ``torch_copying_data(..., variable=True)``): noise token 0, data tokens uniform on
    ``1..vocab_size-2``, marker ``vocab_size-1``. The first ``seq_len - n_tokens`` positions hold
    the data tokens at a uniformly random set of positions (in order) and noise elsewhere; the
    last ``n_tokens`` positions are markers, at which the data tokens are scored in order. The
    paper's setting: vocab 16 (noise and marker included), 16 data tokens, "length 4096"; the
    paper does not say whether 4096 counts the 16 markers and its code was not released
    (``state-spaces/mamba`` issue 343), so a spec reproducing it should say which it means
    (``seq_len: 4096`` here counts them; the S4 generator's ``L`` counts noise tokens only, its
    input length being ``L + 2 n``).

    ``variant="mad"`` (MAD's ``generate_selective_copying_instance``): data tokens uniform on
    ``0..vocab_size-3``, blank ``vocab_size-2``, copy token ``vocab_size-1``. The first
    ``seq_len - n_tokens - 1`` positions hold the data tokens in order with
    ``seq_len - 2 n_tokens - 1`` blanks inserted, each blank independently before a uniformly
    chosen data token (MAD's ``np.insert`` at ``randint(0, n)``: so no blank ever follows the
    last data token, which always sits just before the copy token); then one copy token and
    ``n_tokens`` blanks, at which the data tokens are scored in order. MAD requires
    ``seq_len > 2 n_tokens + 1``; its benchmark uses vocab 16, length 256, 16 tokens.

    Worked example, ``variant="mamba"``, seq_len 10, vocab 6, n_tokens 3 (noise 0, marker 5)::

        x: 0 3 0 0 1 4 0 | 5 5 5
        y: . . . . . . . | 3 1 4        (. = -100, not scored)

    Worked example, ``variant="mad"``, seq_len 10, vocab 6, n_tokens 3 (blank 4, copy 5)::

        x: 4 4 2 4 0 3 | 5 | 4 4 4
        y: . . . . . . | . | 2 0 3

    Metrics: cross-entropy and accuracy over the ``n_tokens`` scored positions. Baseline:
    uniform over the ``vocab_size - 2`` data values (accuracy ``1/(vocab_size-2)``, loss
    ``ln(vocab_size-2)``). ``n_train`` fixes a training set of that many examples (MAD trains
    on 12,800); ``None`` draws fresh examples every step (the Mamba paper).
    """

    version = 1

    def __init__(self, seq_len: int, variant: str = "mamba", vocab_size: int = 16,
                 n_tokens: int = 16, n_train: int | None = None) -> None:
        params = {"variant": variant, "vocab_size": vocab_size, "n_tokens": n_tokens,
                  "n_train": n_train}
        self.check(seq_len, params)
        super().__init__(seq_len, **params)
        self.variant, self.vocab_size, self.n_tokens = variant, vocab_size, n_tokens
        self.n_train = n_train
        V = vocab_size
        if variant == "mamba":
            self.data_lo, self.fill, self.marker = 1, 0, V - 1  # data 1..V-2, noise 0
        else:
            self.data_lo, self.fill, self.marker = 0, V - 2, V - 1  # data 0..V-3, blank V-2
        baselines, notes = chance_baselines(V - 2, f"the {V - 2} data values")
        self.info = TaskInfo(
            input_kind="tokens", input_dim=V, output_kind="classes", output_dim=V,
            per_position=True, input_len=seq_len, metrics=recall_metrics(),
            primary_metric="accuracy", baselines=baselines, baseline_notes=notes)

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        p = checked_params(cls, seq_len, params)
        need_choice("variant", p["variant"], VARIANTS)
        need_int("vocab_size", p["vocab_size"], 3, why="noise/blank, marker/copy and >= 1 data "
                 "value")
        n = need_int("n_tokens", p["n_tokens"], 1)
        need_n_train(p["n_train"])
        if p["variant"] == "mamba" and seq_len < 2 * n:
            raise SpecError("seq_len", seq_len, f"must be >= 2 * n_tokens = {2 * n} (n_tokens "
                            "data tokens among the first seq_len - n_tokens positions)")
        if p["variant"] == "mad" and seq_len <= 2 * n + 1:
            raise SpecError("seq_len", seq_len, f"must be > 2 * n_tokens + 1 = {2 * n + 1} "
                            "(MAD's layout needs at least one blank)")

    def sample(self, gen: torch.Generator, batch_size: int, device: torch.device):
        B, L, n, V = batch_size, self.seq_len, self.n_tokens, self.vocab_size
        data = torch.randint(self.data_lo, self.data_lo + V - 2, (B, n), generator=gen,
                             device=device)
        x = torch.full((B, L), self.fill, dtype=torch.long, device=device)
        if self.variant == "mamba":
            region = L - n
            # a uniformly random n-subset of the region, in increasing order
            pos = torch.rand(B, region, generator=gen, device=device).topk(n, dim=1).indices
            pos = pos.sort(dim=1).values  # (B, n)
            x[:, region:] = self.marker
        else:
            region = L - n - 1
            n_blank = region - n
            # each blank goes before data token g ~ U{0..n-1}: blanks before token j = #{g <= j}
            before = torch.randint(0, n, (B, n_blank), generator=gen, device=device)
            counts = torch.zeros(B, n, dtype=torch.long, device=device)
            counts.scatter_add_(1, before, torch.ones_like(before))
            pos = torch.arange(n, device=device) + counts.cumsum(dim=1)  # (B, n)
            x[:, region] = self.marker
        x.scatter_(1, pos, data)
        y = torch.full((B, L), IGNORE, dtype=torch.long, device=device)
        y[:, L - n:] = data
        return x, y  # (B, L) each


class InductionHeads(Task):
    """Induction heads: recall the token that followed the trigger's only earlier occurrence.

    Tokens ``0..vocab_size-2`` are uniform; the trigger is ``vocab_size-1``. The trigger is
    written at one position ``p`` uniform on ``0..seq_len-3`` (so the target ``x[p+1]`` is a
    random token, never the final trigger), and at the last position ``seq_len-1``; the model
    must output ``x[p+1]`` at the last position, the only scored one. This is the task as the
    Mamba paper states it (Section 4.1.2, Appendix E.1: vocab 16, train length 256; its code was
    not released). H3's generator (``HazyResearch/safari``, ``src/dataloaders/synthetics.py``)
    differs: it trains on next-token targets over the whole sequence and writes the trigger
    more than once in half of its examples.

    Worked example, seq_len 8, vocab 5 (trigger 4), p = 2::

        x: 1 0 4 3 2 0 1 | 4
        y: . . . . . . . | 3

    Metrics: cross-entropy and accuracy at the last position. Baseline: uniform over the
    ``vocab_size - 1`` ordinary tokens. Slices (:meth:`slice_sums`): ``trigger_distance``, the
    distance ``seq_len - 1 - p`` from the trigger's first occurrence to the end, in power-of-two
    buckets.
    """

    version = 1

    def __init__(self, seq_len: int, vocab_size: int = 16) -> None:
        self.check(seq_len, {"vocab_size": vocab_size})
        super().__init__(seq_len, vocab_size=vocab_size)
        self.vocab_size = vocab_size
        self.trigger = vocab_size - 1
        self.info = chance_info(vocab_size, seq_len, vocab_size - 1,
                                f"the {vocab_size - 1} ordinary tokens")

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        p = checked_params(cls, seq_len, params)
        need_int("vocab_size", p["vocab_size"], 3, why="the trigger and >= 2 ordinary tokens")
        if seq_len < 3:
            raise SpecError("seq_len", seq_len, "must be >= 3 (trigger, target, final trigger)")

    def sample(self, gen: torch.Generator, batch_size: int, device: torch.device):
        B, L = batch_size, self.seq_len
        x = torch.randint(0, self.trigger, (B, L), generator=gen, device=device)
        p = torch.randint(0, L - 2, (B, 1), generator=gen, device=device)  # 0..L-3
        x.scatter_(1, p, self.trigger)
        x[:, -1] = self.trigger
        y = torch.full((B, L), IGNORE, dtype=torch.long, device=device)
        y[:, -1] = x.gather(1, p + 1).squeeze(1)
        return x, y  # (B, L) each

    def slice_sums(self, out: torch.Tensor, y: torch.Tensor, x: torch.Tensor
                   ) -> dict[str, dict[str, tuple[float, int]]]:
        first = (x == self.trigger).int().argmax(dim=1, keepdim=True)  # (B, 1) first trigger
        distance = (x.shape[1] - 1 - first).expand_as(y)  # (B, L)
        return pow2_slice_sums(out, y, distance, "trigger_distance")


class MQAR(Task):
    """Multi-query associative recall, in zoology's layout (``multiquery_ar``, one pass).

    Per example, ``num_kv_pairs`` distinct keys drawn from ``1..vocab_size//2 - 1`` and as many
    distinct values from ``vocab_size//2..vocab_size-1``, both in random order, fill the context
    ``k0 v0 k1 v1 ...`` (``2 num_kv_pairs`` positions). The rest of the sequence has
    ``space = (seq_len - 2 num_kv_pairs) // 2`` even slots; key ``i`` is queried at slot
    ``gap_i``, position ``2 num_kv_pairs + 2 gap_i``, the gaps drawn without replacement with
    ``p(g) ~ a (g+1)^(a-1)`` (``power_a`` = a = 0.01: near queries are likelier), sampled
    sequentially, key 0 first, exactly as ``np.random.choice(replace=False, p=p)`` does (here by
    the Gumbel top-k trick, which gives the same distribution). The label at a query's position
    is its key's value; every other label is -100. With ``random_non_queries`` (zoology's
    default) every other position after the context holds a token uniform on the whole
    vocabulary ``0..vocab_size-1`` (it may equal a key or value: a distractor), else 0.
    Zoology also asserts ``vocab_size > seq_len``; the layout does not need it and seqbench
    does not require it.

    Worked example, seq_len 16, vocab 12, 2 pairs, ``random_non_queries=False``, keys (2, 4),
    values (8, 7), gaps (4, 1) (zoology's docstring example)::

        x: 2 8 4 7 | 0 0 4 0 0 0 0 0 2 0 0 0
        y: . . . . | . . 7 . . . . . 8 . . .

    Metrics: cross-entropy and accuracy over the ``num_kv_pairs`` queries. Baseline: a guess
    uniform among the example's ``num_kv_pairs`` values (no key-value binding) scores accuracy
    ``1/num_kv_pairs`` and loss ``ln num_kv_pairs``; uniform over all ``vocab_size -
    vocab_size//2`` values would score far less. Slices (:meth:`slice_sums`):
    ``query_distance``, from a key's context position to its query (>= 2), in power-of-two
    buckets. Accuracy by ``num_kv_pairs`` comes from evaluating at several settings.
    """

    version = 1

    def __init__(self, seq_len: int, vocab_size: int = 8192, num_kv_pairs: int = 8,
                 power_a: float = 0.01, random_non_queries: bool = True) -> None:
        params = {"vocab_size": vocab_size, "num_kv_pairs": num_kv_pairs, "power_a": power_a,
                  "random_non_queries": random_non_queries}
        self.check(seq_len, params)
        super().__init__(seq_len, **params)
        self.vocab_size, self.num_kv_pairs = vocab_size, num_kv_pairs
        self.power_a, self.random_non_queries = float(power_a), random_non_queries
        kv = num_kv_pairs
        self.info = token_info(
            vocab_size, seq_len, {"loss": math.log(kv), "accuracy": 1 / kv}, {
                "loss": f"uniform over the example's {kv} values (no key-value binding)",
                "accuracy": f"a guess among the example's {kv} values (no binding); uniform "
                            f"over all {vocab_size - vocab_size // 2} values: "
                            f"{1 / (vocab_size - vocab_size // 2):.2g}"})

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        p = checked_params(cls, seq_len, params)
        V = need_int("vocab_size", p["vocab_size"], 4)
        kv = need_int("num_kv_pairs", p["num_kv_pairs"], 1)
        need_float("power_a", p["power_a"], lo_open=0.0)
        need_bool("random_non_queries", p["random_non_queries"])
        if kv > V // 2 - 1:
            raise SpecError("params.num_kv_pairs", kv, f"must be <= vocab_size//2 - 1 = "
                            f"{V // 2 - 1} (distinct keys from 1..vocab_size//2 - 1)")
        if seq_len % 2:
            raise SpecError("seq_len", seq_len, "must be even (zoology's layout)")
        if seq_len < 4 * kv:
            raise SpecError("seq_len", seq_len, f"must be >= 4 * num_kv_pairs = {4 * kv} "
                            "(the context and one query slot per key)")

    def sample(self, gen: torch.Generator, batch_size: int, device: torch.device):
        B, L, V, kv = batch_size, self.seq_len, self.vocab_size, self.num_kv_pairs
        half, context = V // 2, 2 * self.num_kv_pairs
        # uniformly random ordered subsets: the top-kv of i.i.d. uniforms
        keys = torch.rand(B, half - 1, generator=gen, device=device).topk(kv, dim=1).indices + 1
        values = torch.rand(B, V - half, generator=gen, device=device).topk(kv, dim=1).indices
        values = values + half  # (B, kv)
        space = (L - context) // 2
        g = torch.arange(1, space + 1, device=device, dtype=torch.float64)
        log_p = math.log(self.power_a) + (self.power_a - 1) * torch.log(g)  # (space,)
        u = torch.rand(B, space, generator=gen, device=device, dtype=torch.float64)
        gumbel = -torch.log(-torch.log(u.clamp(min=1e-300)))
        gaps = (log_p + gumbel).topk(kv, dim=1).indices  # (B, kv): draw order = key order
        query_pos = context + 2 * gaps
        x = torch.zeros(B, L, dtype=torch.long, device=device)
        x[:, 0:context:2] = keys
        x[:, 1:context:2] = values
        x.scatter_(1, query_pos, keys)
        y = torch.full((B, L), IGNORE, dtype=torch.long, device=device)
        y.scatter_(1, query_pos, values)
        if self.random_non_queries:
            fill = torch.randint(0, V, (B, L), generator=gen, device=device)
            x = torch.where(x == 0, fill, x)
        return x, y  # (B, L) each

    def slice_sums(self, out: torch.Tensor, y: torch.Tensor, x: torch.Tensor
                   ) -> dict[str, dict[str, tuple[float, int]]]:
        B, L = x.shape
        context = 2 * self.num_kv_pairs
        where = torch.full((B, self.vocab_size), -1, dtype=torch.long, device=x.device)
        key_pos = torch.arange(0, context, 2, device=x.device).expand(B, -1)  # (B, kv)
        where.scatter_(1, x[:, 0:context:2], key_pos)  # context position of each key
        distance = torch.arange(L, device=x.device) - where.gather(1, x)  # (B, L)
        return pow2_slice_sums(out, y, distance, "query_distance")


# --- parameter checks shared by the recall and MAD tasks ---------------------------------------

def checked_params(cls: type[Task], seq_len: Any, params: dict[str, Any]) -> dict[str, Any]:
    """The base checks (names, positive length) plus a strict int ``seq_len``; returns every
    constructor param, defaults filled in from the signature."""
    if isinstance(seq_len, bool) or not isinstance(seq_len, int):
        raise SpecError("seq_len", seq_len, "must be an integer")
    Task.check.__func__(cls, seq_len, params)  # type: ignore[attr-defined]
    signature = inspect.signature(cls.__init__).parameters
    return {name: params.get(name, p.default) for name, p in signature.items()
            if name not in ("self", "seq_len")}


def need_int(name: str, value: Any, lo: int, hi: int | None = None, why: str = "") -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo or (
            hi is not None and value > hi):
        span = f"an integer >= {lo}" if hi is None else f"an integer in {lo}..{hi}"
        raise SpecError(f"params.{name}", value, span + (f" ({why})" if why else ""))
    return value


def need_float(name: str, value: Any, lo: float | None = None, lo_open: float | None = None,
               hi_open: float | None = None) -> float:
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    ok = ok and (lo is None or value >= lo) and (lo_open is None or value > lo_open)
    ok = ok and (hi_open is None or value < hi_open)
    if not ok:
        parts = [f">= {lo}" if lo is not None else "", f"> {lo_open}" if lo_open is not None
                 else "", f"< {hi_open}" if hi_open is not None else ""]
        raise SpecError(f"params.{name}", value,
                        "a number " + " and ".join(p for p in parts if p))
    return float(value)


def need_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise SpecError(f"params.{name}", value, "must be true or false")
    return value


def need_choice(name: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices or not isinstance(value, str):
        raise SpecError(f"params.{name}", value, f"one of: {', '.join(choices)}")
    return value


def need_n_train(value: Any) -> int | None:
    if value is None:
        return None
    return need_int("n_train", value, 1, why="a fixed training set; null draws fresh examples")
