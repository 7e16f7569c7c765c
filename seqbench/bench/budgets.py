"""How close every registered model lands to its parameter budget, without and with
``budget_tolerance`` (:func:`seqbench.worker.models.fit_budget`; a count, not a timing):

    python -m seqbench.bench.budgets [--budgets 20000 70000] [--tolerance 0.05]

One line per (model, task, length, budget) at the shipped quick spec's tasks (adding T=50,
copy T=10): the width and achieved/target of the first format's sizing (d_model only) and of
the sizing with the tolerance (d_model and the MLP width).
"""

from __future__ import annotations

import argparse

SETTINGS = (("adding", 50), ("copy", 10))


def main(argv: list[str] | None = None) -> int:
    from seqbench.catalog import MODELS
    from seqbench.worker.data import build_task
    from seqbench.worker.models import fit_budget, mixer_class, split_params

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--budgets", type=int, nargs="+", default=[20_000, 70_000])
    p.add_argument("--tolerance", type=float, default=0.05)
    args = p.parse_args(argv)
    print(f"{'model':12s} {'task':7s} {'L':>4s} {'budget':>7s}  {'d_model only':>16s}  "
          f"{f'tolerance {args.tolerance}':>28s}")
    for name in MODELS.names():
        for task, seq_len in SETTINGS:
            io = build_task(task, seq_len).info.io
            for budget in args.budgets:
                cells = []
                for tolerance in (None, args.tolerance):
                    params: dict[str, float] = {"param_budget": budget}
                    if tolerance is not None:
                        params["budget_tolerance"] = tolerance
                    bb, cfg, spec_budget = split_params(name, params)
                    assert spec_budget is not None
                    sizing = fit_budget(mixer_class(name), cfg, bb, io, spec_budget)
                    cells.append((sizing.d_model, sizing.mlp_ratio,
                                  100 * (sizing.achieved / budget - 1), sizing.matched))
                (d0, _, r0, _), (d1, m1, r1, ok) = cells
                print(f"{name:12s} {task:7s} {seq_len:4d} {budget:7d}  d={d0:3d} {r0:+6.1f}%  "
                      f"   d={d1:3d} mlp={m1:.2f} {r1:+6.1f}% {'ok' if ok else 'NOT MATCHED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
