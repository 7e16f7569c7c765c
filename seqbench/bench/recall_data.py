"""Data generation of the recall tasks against a small Mamba's training step, side by side.

    python -m seqbench.bench.recall_data [--threads 1] [--rounds 3]

For each setting (the largest CPU-relevant ones: selective copying at 4096, induction heads at
4096, MQAR at 1024 with 256 pairs, MAD's recall tasks at 1024) it times drawing one batch
(``sample`` on the CPU) and one training step (forward, backward, AdamW) of a 2-layer Mamba,
d_model 64, on that batch, alternating in rounds so machine noise hits both alike. The report
is examples/s of generation and the ratio of median times (generation / step): well below 1
means data generation costs little of a training step.
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

import torch

from seqbench.worker.data import build_task
from seqbench.worker.data.base import generator
from seqbench.worker.models import build_model

SETTINGS: list[tuple[str, int, dict[str, Any], int]] = [  # (task, seq_len, params, batch)
    ("selective_copy", 4096, {}, 64),
    ("induction", 4096, {}, 8),
    ("mqar", 1024, {"num_kv_pairs": 256}, 64),
    ("mad_recall", 1024, {"n_train": None}, 128),
    ("mad_fuzzy_recall", 1024, {"n_train": None}, 128),
    ("mad_selective_copy", 1024, {"n_train": None}, 128),
]


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--d-model", type=int, default=64)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cpu = torch.device("cpu")
    print(f"{'task':<20}{'L':>6}{'batch':>6}{'gen ex/s':>11}{'gen s':>9}{'step s':>9}"
          f"{'gen/step':>10}")
    for name, L, params, batch in SETTINGS:
        task = build_task(name, L, params)
        model = build_model("mamba", {"d_model": args.d_model, "n_layers": 2}, task.info.io)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        gen = generator(0, "train", cpu)
        x, y = task.sample_train(gen, batch, cpu)

        def step(x=x, y=y, model=model, opt=opt, task=task) -> None:
            loss = task.loss(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

        step()  # warm-up
        gen_s, step_s = [], []
        for _ in range(args.rounds):
            gen_s.append(median_time(lambda t=task, g=gen, b=batch: t.sample_train(g, b, cpu),
                                     3))
            step_s.append(median_time(step, 1))
        g, s = statistics.median(gen_s), statistics.median(step_s)
        print(f"{name:<20}{L:>6}{batch:>6}{batch / g:>11,.0f}{g:>9.4f}{s:>9.3f}{g / s:>10.4f}",
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
