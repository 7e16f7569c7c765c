"""Forward + backward of Mamba's selective scan on CPU, side by side in one run: seqbench's
chunked PyTorch scan (``seqbench``), seqbench's fused C++ kernel (``seqbench-fused``), the
``mambapy`` package's parallel (Blelloch) scan, and mamba-ssm's ``selective_scan_ref`` (the
pure-PyTorch reference of its CUDA kernel).

    python -m seqbench.bench.scan                       # batch 8, d_inner 128, state 16
    python -m seqbench.bench.scan --lengths 1024 4096 --d-inner 64 --threads 1 2

Every (implementation, length) runs in a fresh spawned process, with the same seeded inputs
(``u, delta, B, C`` and the S4D-Real ``A``), so one cannot warm the caches of another and a
run over the time limit is stopped and reported as ``> limit``. The timed call is
``y = scan(...); y.backward(gy)`` from leaf tensors; after one untimed warm-up call the median
of ``--repeats`` calls is reported (a first call longer than ``--single-call-s`` is reported on
its own instead: repeating a 50 s call adds nothing). Memory is the child's peak resident set
(``ru_maxrss``) minus its resident set just before the first call (after imports and inputs):
what the scan itself needed at its peak, forward and backward. No speed is reported for an
implementation whose outputs and gradients disagree with seqbench's beyond ``--rtol``
(relative to the largest magnitude): the row says ``MISMATCH`` and the exit status is 1.

mamba-ssm on a machine without CUDA: install it as the README says (``MAMBA_SKIP_CUDA_BUILD``
...); ``import mamba_ssm`` then fails on the missing compiled ``selective_scan_cuda``, so the
worker puts an empty stand-in module under that name in ``sys.modules`` before importing
``selective_scan_ref`` (which never calls it). Without mamba-ssm the column says why.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

IMPLEMENTATIONS = ("seqbench", "seqbench-fused", "mambapy", "selective_scan_ref")
REFERENCE = "seqbench"  # the others are checked against it


def make_inputs(batch: int, length: int, d_inner: int, d_state: int, seed: int
                ) -> dict[str, torch.Tensor]:
    """Seeded leaf tensors in seqbench's layout: u, delta (B, L, D), A (D, N), B, C (B, L, N)."""
    gen = torch.Generator().manual_seed(seed)
    # per-channel step sizes log-uniform in [1e-3, 1e-1] (Mamba's init), jittered per position
    dt = torch.exp(torch.rand(d_inner, generator=gen) * (torch.log(torch.tensor(100.0)))
                   + torch.log(torch.tensor(1e-3)))
    bias = dt + torch.log(-torch.expm1(-dt))  # inverse softplus
    delta = F.softplus(bias + 0.5 * torch.randn(batch, length, d_inner, generator=gen))
    return {
        "u": torch.randn(batch, length, d_inner, generator=gen),
        "delta": delta,
        "A": -torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1),
        "B": torch.randn(batch, length, d_state, generator=gen),
        "C": torch.randn(batch, length, d_state, generator=gen),
    }


def _load(impl: str) -> Callable[..., torch.Tensor]:
    """The scan of ``impl`` as ``f(u, delta, A, B, C) -> y``, all in seqbench's layout."""
    if impl == "seqbench":
        from seqbench.worker.models.ops import selective_scan

        return selective_scan
    if impl == "seqbench-fused":
        from seqbench.worker.models.ops import native, selective_scan_fused

        if native.library() is None:
            raise RuntimeError(native.unavailable_reason())
        return selective_scan_fused
    if impl == "mambapy":
        from mambapy.mamba import MambaBlock

        def mambapy_scan(u, delta, A, B, C):
            # MambaBlock.selective_scan does not use self; D = 0 leaves the scan alone
            return MambaBlock.selective_scan(None, u, delta, A, B, C, u.new_zeros(u.shape[-1]))

        return mambapy_scan
    if impl == "selective_scan_ref":
        sys.modules.setdefault("selective_scan_cuda", types.ModuleType("selective_scan_cuda"))
        from mamba_ssm.ops.selective_scan_interface import selective_scan_ref

        def ref_scan(u, delta, A, B, C):  # its layout: (B, D, L) and (B, N, L)
            u, delta, B, C = (x.transpose(1, 2) for x in (u, delta, B, C))
            return selective_scan_ref(u, delta, A, B, C).transpose(1, 2)

        return ref_scan
    raise ValueError(f"unknown implementation {impl!r}; known: {', '.join(IMPLEMENTATIONS)}")


def _worker(impl: str, shape: dict[str, int], seed: int, repeats: int, single_call_s: float,
            threads: int, out: str) -> None:
    """Child process: time fwd+bwd of ``impl``; save timings, outputs and gradients."""
    torch.set_num_threads(threads)
    try:
        scan = _load(impl)
    except Exception as exc:  # not installed, or broken: reported, not raised
        torch.save({"error": f"{type(exc).__name__}: {exc}".splitlines()[0]}, out)
        return
    inputs = make_inputs(seed=seed, **shape)
    for t in inputs.values():
        t.requires_grad_()
    gy = torch.randn(shape["batch"], shape["length"], shape["d_inner"],
                     generator=torch.Generator().manual_seed(seed + 1))

    def call() -> tuple[float, torch.Tensor]:
        for t in inputs.values():
            t.grad = None
        start = time.perf_counter()
        y = scan(*inputs.values())
        y.backward(gy)
        return time.perf_counter() - start, y.detach()

    base_rss = _rss_bytes()
    first, y = call()
    times = [first] if first > single_call_s else [call()[0] for _ in range(repeats)]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
    torch.save({"first_s": first, "times_s": times, "y": y, "peak_rss_bytes": peak,
                "scan_peak_bytes": peak - base_rss,
                "grads": {k: t.grad for k, t in inputs.items()}}, out)


def _rss_bytes() -> int:
    """Current resident set of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def run(impl: str, shape: dict[str, int], threads: int, args: argparse.Namespace
        ) -> dict[str, Any]:
    """Run one (implementation, shape) in a fresh process under the time limit."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result.pt")
        proc = mp.get_context("spawn").Process(
            target=_worker, args=(impl, shape, args.seed, args.repeats, args.single_call_s,
                                  threads, out))
        proc.start()
        proc.join(args.timeout)
        if proc.is_alive():
            proc.kill()
            proc.join()
            return {"timeout": True}
        if proc.exitcode != 0 or not os.path.exists(out):
            return {"error": f"worker exited with status {proc.exitcode}"}
        return torch.load(out)


def max_rel_diff(result: dict[str, Any], ref: dict[str, Any]) -> float:
    """Largest |a - b| / max |b| over the output and every gradient."""
    pairs = [(result["y"], ref["y"])]
    pairs += [(result["grads"][k], ref["grads"][k]) for k in ref["grads"]]
    return max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-30)) for a, b in pairs)


def header(args: argparse.Namespace) -> dict[str, Any]:
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=Path(__file__).parent).stdout.strip()
    except OSError:
        sha = ""
    versions = {}
    for dist in ("torch", "mambapy", "mamba-ssm"):
        try:
            from importlib.metadata import version

            versions[dist] = version(dist)
        except Exception:
            versions[dist] = "not installed"
    return {"git_sha": sha, "python": platform.python_version(), "versions": versions,
            "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": args.threads, "load_avg_before": os.getloadavg(),
            "shape": {"batch": args.batch, "d_inner": args.d_inner, "d_state": args.d_state}}


def cell(result: dict[str, Any], args: argparse.Namespace) -> str:
    if result.get("timeout"):
        return f"> {args.timeout:.0f} s"
    if "error" in result:
        return f"n/a ({result['error']})"
    if result.get("mismatch"):
        return f"MISMATCH ({result['rel_diff']:.1e})"
    calls = len(result["times_s"])
    mem = f", {result['scan_peak_bytes'] / 2**20:.0f} MiB"
    return f"{result['median_s']:.3f} s{mem}" + (" (1 call)" if calls == 1 else "")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m seqbench.bench.scan", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lengths", type=int, nargs="+", default=[256, 1024, 4096])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--d-inner", type=int, default=128,
                   help="scan channels (a Mamba block of width 64 with expand 2 has 128)")
    p.add_argument("--d-state", type=int, default=16)
    p.add_argument("--impl", nargs="+", default=list(IMPLEMENTATIONS), choices=IMPLEMENTATIONS)
    p.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()],
                   help="thread counts, each a run of every implementation")
    p.add_argument("--repeats", type=int, default=3, help="timed calls after one warm-up call")
    p.add_argument("--single-call-s", type=float, default=10.0,
                   help="a first call longer than this is the only measurement")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per implementation")
    p.add_argument("--rtol", type=float, default=1e-4, help="agreement required before timing")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    impls = [REFERENCE] + [i for i in args.impl if i != REFERENCE]

    info = header(args)
    print(json.dumps(info))
    rows, ok = [], True
    for threads, length in ((t, n) for t in args.threads for n in args.lengths):
        shape = {"batch": args.batch, "length": length, "d_inner": args.d_inner,
                 "d_state": args.d_state}
        results = {impl: run(impl, shape, threads, args) for impl in impls}
        ref = results[REFERENCE]
        row: dict[str, Any] = {"length": length, "threads": threads,
                               "load_avg": os.getloadavg()[0]}
        for impl, res in results.items():
            if "times_s" in res:
                res["median_s"] = statistics.median(res["times_s"])
                if impl != REFERENCE and "y" in ref:
                    res["rel_diff"] = max_rel_diff(res, ref)
                    res["mismatch"] = res["rel_diff"] > args.rtol
                    ok &= not res["mismatch"]
            row[impl] = {k: v for k, v in res.items() if k not in ("y", "grads")}
        base = row[REFERENCE].get("median_s")
        for impl in impls[1:]:
            r = row[impl]
            if base and "median_s" in r and not r.get("mismatch"):
                r["slowdown_vs_seqbench"] = r["median_s"] / base
                r["memory_vs_seqbench"] = (r["scan_peak_bytes"]
                                           / max(row[REFERENCE]["scan_peak_bytes"], 1))
            elif base and r.get("timeout"):
                r["slowdown_vs_seqbench_at_least"] = args.timeout / base
        rows.append(row)
        cells = [f"{impl}: {cell(row[impl], args)}" for impl in impls]
        ratios = [f"{impl}/seqbench {row[impl]['slowdown_vs_seqbench']:.2f}x time, "
                  f"{row[impl]['memory_vs_seqbench']:.2f}x memory"
                  for impl in impls[1:] if "slowdown_vs_seqbench" in row[impl]]
        ratios += [f"{impl}/seqbench > {row[impl]['slowdown_vs_seqbench_at_least']:.0f}x"
                   for impl in impls[1:] if "slowdown_vs_seqbench_at_least" in row[impl]]
        diffs = [f"{impl} max rel diff {row[impl]['rel_diff']:.0e}"
                 for impl in impls[1:] if "rel_diff" in row[impl]]
        print(f"threads={threads} L={length:<6} load {row['load_avg']:.1f} | "
              + " | ".join(cells + ratios + diffs), flush=True)
    info["load_avg_after"] = os.getloadavg()
    if args.json:
        args.json.write_text(json.dumps({"header": info, "rows": rows}, indent=2))
    if not ok:
        print("outputs disagree: speeds of mismatching implementations are not reported")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
