"""The harness's training step against a bare hand-written PyTorch loop, side by side.

    python -m seqbench.bench.overhead [--model lstm] [--task adding] [--seq-len 200]

Both loops train the same freshly initialised model on the same task batches (generated on the
device in both), with the same optimizer and clipping. They alternate in rounds so machine noise
hits both alike; the report is the ratio of median step times (harness / bare). Target: <= 1.03.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import nn

from seqbench.config.spec import MeasureSpec, TrainSpec
from seqbench.worker.data import build_task
from seqbench.worker.models import build_model
from seqbench.worker.train import train


def bare_loop(model: nn.Module, task, steps: int, batch_size: int, lr: float, clip: float,
              seed: int) -> list[float]:
    """What a user would write by hand: no timing helpers, no schedule object, no checks."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    batches = task.train_batches(seed, batch_size, torch.device("cpu"))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        x, y = next(batches)
        loss = task.loss(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        loss.item()
        times.append(time.perf_counter() - start)
    return times


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="lstm")
    p.add_argument("--task", default="adding")
    p.add_argument("--seq-len", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--steps", type=int, default=30, help="steps per round and loop")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args(argv)

    task = build_task(args.task, args.seq_len)
    cfg = TrainSpec(steps=args.steps, batch_size=args.batch_size, weight_decay=0.0)
    measure = MeasureSpec(warmup_steps=3)
    harness, bare = [], []
    for r in range(args.rounds):
        torch.manual_seed(r)
        model = build_model(args.model, {"d_model": args.d_model}, task.info.io)
        harness += train(model, task, cfg, measure, torch.device("cpu"), seed=r).timing.samples_s
        torch.manual_seed(r)
        model = build_model(args.model, {"d_model": args.d_model}, task.info.io)
        bare += bare_loop(model, task, args.steps, args.batch_size, cfg.lr, cfg.clip,
                          seed=r)[3:]
    h, b = statistics.median(harness), statistics.median(bare)
    print(f"{args.model} {args.task} L={args.seq_len} batch={args.batch_size} "
          f"d_model={args.d_model}, {len(harness)} timed steps each, threads="
          f"{torch.get_num_threads()}")
    print(f"harness median step {h * 1e3:.2f} ms, bare loop {b * 1e3:.2f} ms, "
          f"ratio {h / b:.3f} (target <= 1.03)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
