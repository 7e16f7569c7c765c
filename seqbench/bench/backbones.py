"""The shared backbone against the papers' bare model shape, side by side on one task.

    python -m seqbench.bench.backbones                       # adding T=50, 1000 steps, 20K params
    python -m seqbench.bench.backbones --models lstm --steps 300 --seeds 0 1

Each model is trained twice per seed, once with ``backbone: shared`` (embedding/projection,
pre-norm mixer + residual, pre-norm MLP + residual, final norm, head) and once with
``backbone: bare`` (projection -> the mixer -> head, the ``nn.LSTM`` + linear head of the TCN
study's baselines), each sized to the same parameter budget, with the same seed, data and
optimizer settings. The jobs are built by the config layer from a spec dict per backbone (a
suite names each model once) and run in this process by the worker's own
:func:`seqbench.worker.job.run_job` (no second training loop), so the numbers are those a
``seqbench run`` of the same specs records, timings aside. The table
gives the held-out metric (the task's primary one: MSE for adding) and its trivial baseline,
the median training step and the job's wall time (both noisy on a shared machine).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from typing import Any

from seqbench.config import expand, parse_suite
from seqbench.recording.schema import Row

BACKBONES = ("shared", "bare")


def spec(backbone: str, models: list[str], task: str, seq_len: int, steps: int, budget: int,
         seeds: list[int], batch_size: int, lr: float, threads: int) -> dict[str, Any]:
    """One suite: every model under ``backbone`` at the budget and training settings given."""
    return {
        "name": f"bench-backbones-{backbone}",
        "seeds": seeds,
        "device": "cpu",
        "models": [{"name": m, "params": {"param_budget": budget, "backbone": backbone}}
                   for m in models],
        "tasks": [{"name": task, "seq_lens": [seq_len]}],
        "train": {"steps": steps, "batch_size": batch_size, "lr": lr, "eval_examples": 2048},
        "measure": {"warmup_steps": 3, "fwd_min_repeats": 1, "fwd_max_repeats": 3,
                    "fwd_budget_s": 0.05, "threads": threads},
        "timeout_s": 3600,
    }


def run(specs: list[dict[str, Any]]) -> list[Row]:
    """Every job of the suites, in this process, each model's backbones next to each other."""
    from seqbench.worker.job import run_job

    jobs = [job for s in specs for job in expand(parse_suite(s))]
    order = {name: i for i, name in enumerate(dict.fromkeys(j.model.name for j in jobs))}
    jobs.sort(key=lambda j: (order[j.model.name], j.seed))  # stable: shared before bare
    rows = []
    for job in jobs:
        rows.append(run_job(job))
        print(table(rows[-1:]).splitlines()[-1], file=sys.stderr, flush=True)  # progress
    return rows


def table(rows: list[Row]) -> str:
    header = ("model", "backbone", "seed", "d_model", "params", "status", "metric", "value",
              "baseline", "step ms", "job s")
    lines = [header]
    for r in rows:
        metric = r.get("primary_metric", "")
        value = r.get(f"metric_{metric}") if metric else None
        base = r.get(f"baseline_{metric}") if metric else None
        step_ms = 1e3 * (r.get("train_step_s_median") or math.nan)
        lines.append((r.model, str(r.get("backbone", "")), str(r.seed), str(r.get("d_model", "")),
                      f"{r.get('param_count', 0):,}", r.status + (f" ({r.error[:60]})"
                                                                  if r.error else ""),
                      metric, "-" if value is None else f"{value:.3g}",
                      "-" if base is None else f"{base:.3g}", f"{step_ms:.1f}", f"{r.wall_s:.0f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True))
                     for line in lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seqbench.bench.backbones",
                                description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["lstm", "gru", "rnn"])
    p.add_argument("--task", default="adding")
    p.add_argument("--seq-len", type=int, default=50)
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--budget", type=int, default=20_000, help="param_budget of every model")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=3e-3)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads (on a shared, loaded machine 1 is much faster than 2)")
    args = p.parse_args(argv)
    specs = [spec(b, args.models, args.task, args.seq_len, args.steps, args.budget, args.seeds,
                  args.batch_size, args.lr, args.threads) for b in BACKBONES]
    rows = run(specs)
    train = specs[0]["train"]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(f"{args.task} T={args.seq_len}, {args.steps} steps, batch {train['batch_size']}, "
          f"adamw lr {train['lr']}, clip 1.0, {args.threads} thread(s), "
          f"param_budget {args.budget:,}; load average {load}")
    print(table(rows))
    return 0 if all(r.status == "ok" for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
