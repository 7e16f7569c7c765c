"""Generation speed of the generated datasets, side by side in one process: Pathfinder at each
resolution (images per second) and ListOps at the LRA length bounds (expressions per second).

    python -m seqbench.bench.generators [--images 256] [--expressions 2000] [--rounds 3]

Rounds alternate over the generators so machine noise hits all alike; the report is the
median rate per generator and its ratio to Pathfinder 32x32. Generation runs once per seed
(the data is cached), so these rates say how long the first job of a new seed waits.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable

import numpy as np


def main(argv: list[str] | None = None) -> int:
    from seqbench.worker.data import listops, pathfinder

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=256)
    p.add_argument("--expressions", type=int, default=2000)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--difficulty", default="hard", choices=list(pathfinder.DIFFICULTY))
    args = p.parse_args(argv)
    length = pathfinder.DIFFICULTY[args.difficulty]

    def pf(res: int) -> Callable[[int], int]:
        def run(r: int) -> int:
            pathfinder.generate(args.images, np.random.default_rng(r), res, length)
            return args.images
        return run

    def lo(r: int) -> int:
        listops.draw(random.Random(r), args.expressions, (500, 2000), 10, 10, set(), True)
        return args.expressions

    jobs = {f"pathfinder {res}x{res} {args.difficulty} (img/s)": pf(res)
            for res in sorted(pathfinder.STYLES)}
    jobs["listops 500<len<2000 (expr/s)"] = lo
    rates: dict[str, list[float]] = {k: [] for k in jobs}
    for r in range(args.rounds):
        for name, run in jobs.items():
            t = time.perf_counter()
            n = run(r)
            rates[name].append(n / (time.perf_counter() - t))
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"load average {load:.2f}, {args.rounds} rounds")
    first = statistics.median(next(iter(rates.values())))
    for name, values in rates.items():
        median = statistics.median(values)
        print(f"  {name:<40} {median:8.1f}   x{median / first:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
