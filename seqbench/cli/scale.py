"""``seqbench scale [SPEC]``: run a ``kind: scale`` suite up to each model's frontier.

For every model the length doubles until the model runs out of memory (under the spec's CPU
memory cap) or past its time budget; longer lengths are recorded as ``skipped``. Streaming
latency is measured at the spec's context positions. Afterwards the log-log slopes of time and
memory against length are fitted per model and written to ``complexity.json`` beside the rows,
and a table prints each model's frontier, slopes and FLOP utilisation. A rerun into the same
directory resumes: recorded jobs are not run again and the frontier is decided from them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import time
from pathlib import Path
from typing import Any

from seqbench.cli.run import add_spawn_argument
from seqbench.config.spec import expand, job_id, load_suite, resolve_device, spec_hash
from seqbench.errors import SpecError

DEFAULT_SCALE_SPEC = "scale-cpu"
COMPLEXITY_FILE = "complexity.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("spec", nargs="?", default=DEFAULT_SCALE_SPEC,
                   help=f"a kind: scale spec file or shipped name (default: {DEFAULT_SCALE_SPEC})")
    p.add_argument("-o", "--out", default=None,
                   help="results directory (default: results/<suite name>)")
    p.add_argument("--retry", action="store_true",
                   help="rerun jobs whose recorded status is not ok")
    p.add_argument("--dry-run", action="store_true", help="list the jobs and exit")
    p.add_argument("--fit-only", action="store_true",
                   help="run nothing: refit the stored rows and print the tables")
    p.add_argument("--probe", action="store_true",
                   help="measure the device's matmul/copy peak again (keeps the best seen)")
    add_spawn_argument(p)


def main(args: argparse.Namespace) -> int:
    from rich.console import Console

    console = Console()
    if not console.is_terminal:  # a log file: wide enough for the tables
        console = Console(width=150)
    suite, path = load_suite(args.spec)
    if suite.kind != "scale":
        raise SpecError("spec", str(path), f"is kind: {suite.kind}; seqbench scale runs kind: "
                        "scale suites (use seqbench run)")
    jobs = expand(suite, str(path))
    out = Path(args.out) if args.out else Path("results") / suite.name
    if args.dry_run:
        from seqbench.cli.run import print_jobs

        print_jobs(console, jobs,
                   f"{len(jobs)} jobs (longer lengths past a model's frontier will be skipped)")
        return 0
    from seqbench.recording.store import ResultStore, write_json_atomic

    store = ResultStore(out)
    s_hash = spec_hash(suite)
    store.open_for(suite.name, s_hash, suite.model_dump(mode="json"))
    if not args.fit_only:
        run_sweep(suite, path, jobs, store, s_hash, args, console)
    ids = {job_id(j) for j in jobs}
    rows = [r for r in store.rows() if r.get("job_id") in ids]
    from seqbench.worker.scale import complexity

    curves = complexity(rows)
    overhead = measurement_overhead(rows)
    write_json_atomic(out / COMPLEXITY_FILE, {
        "suite": suite.name, "spec_hash": s_hash,
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "measurement_overhead": overhead, "curves": curves})
    print_tables(curves, rows, overhead, console)
    console.print(f"results: {out / 'results.jsonl'}; fits: {out / COMPLEXITY_FILE}")
    return 0


def run_sweep(suite, path: Path, jobs: list[dict[str, Any]], store, s_hash: str,
              args: argparse.Namespace, console) -> None:
    from seqbench.cli.run import local_executor
    from seqbench.recording.provenance import code_provenance
    from seqbench.worker.scale import FrontierExecutor, StopPolicy

    recorded = {r["job_id"]: r for r in store.rows()
                if not (args.retry and r.get("status") != "ok")}
    todo = sum(1 for j in jobs if recorded.get(job_id(j), {}).get("status") in (None, "skipped"))
    policy = StopPolicy.from_suite(suite)
    console.print(f"seqbench scale: suite [bold]{suite.name}[/] ({path}), {len(jobs)} jobs, "
                  f"{len(jobs) - todo} already recorded -> {store.root}\n  stop policy: "
                  f"{policy.describe()}")
    probe_peaks(suite, jobs, refresh=args.probe, console=console)
    context: dict[str, Any] = {"suite": suite.name, "spec_hash": s_hash, **code_provenance()}
    started = time.perf_counter()

    def on_row(row: dict[str, Any]) -> None:
        store.write(row)
        console.print(describe_row(row))

    FrontierExecutor(local_executor(args, 1), policy, recorded).run(jobs, context, on_row)
    console.print(f"done in {time.perf_counter() - started:.0f} s")


def probe_peaks(suite, jobs: list[dict[str, Any]], refresh: bool, console) -> None:
    """Measure the device peaks once, here, before any job: the workers then read the cache
    (a probe inside a job would count against its memory cap and its wall time)."""
    import torch

    from seqbench.worker.scale import compute_dtype, device_peak

    device = torch.device(resolve_device(suite.device))
    if device.type == "cuda" and not torch.cuda.is_available():
        return
    threads = suite.measure.threads
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        for dtype in {compute_dtype(j, device) for j in jobs}:
            peak = device_peak(device, dtype, refresh=refresh)
            console.print(f"  device peak ({device.type}, {dtype}, {torch.get_num_threads()} "
                          f"threads): {peak['peak_flops_per_s'] / 1e9:.0f} GFLOP/s matmul, "
                          f"{peak['peak_bytes_per_s'] / 1e9:.1f} GB/s copy "
                          f"(measured {peak['measured_at']})")
    finally:
        torch.set_num_threads(before)


def _fmt(value: Any, spec: str = ".3g", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return format(value * scale, spec)


def describe_row(row: dict[str, Any]) -> str:
    head = (f"  {row['kind']} {row['task']} L={row['seq_len']} {row['model']} "
            f"B={row.get('batch_size', '?')}: ")
    status = row["status"]
    if status != "ok":
        return head + f"[red]{status}[/] {row.get('error', '')[:160]}"
    if row["kind"] == "stream":
        return head + (f"ok step {_fmt(row.get('stream_step_s_median'), '.3g', 1e3)} ms, "
                       f"state {_fmt(row.get('state_bytes'), '.0f', 2**-10)} KiB, prefill "
                       f"{_fmt(row.get('prefill_s'))} s "
                       f"({_fmt(row.get('worker_wall_s'), '.1f')} s)")
    return head + (f"ok train {_fmt(row.get('train_step_s_median'))} s/step, fwd "
                   f"{_fmt(row.get('fwd_step_s_median'))} s, peak "
                   f"{_fmt(row.get('peak_mem_bytes'), '.0f', 2**-20)} MiB, util "
                   f"{_fmt(row.get('flops_utilization'), '.1%')} "
                   f"({_fmt(row.get('worker_wall_s'), '.1f')} s)")


def measurement_overhead(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """How much of a job's time is the measured region: timed seconds over the worker's
    in-process wall time (model build, data, probes) and over the whole worker process as the
    driver saw it (interpreter start and imports included)."""
    ran = [r for r in rows if r.get("status") == "ok" and r.get("timed_s")
           and r.get("worker_wall_s")]
    if not ran:
        return {}
    timed = sum(r["timed_s"] for r in ran)
    return {
        "jobs": len(ran),
        "timed_s": timed,
        "worker_run_s": sum(r["wall_s"] for r in ran),
        "worker_process_s": sum(r["worker_wall_s"] for r in ran),
        "timed_fraction_of_run": timed / sum(r["wall_s"] for r in ran),
        "timed_fraction_of_process": timed / sum(r["worker_wall_s"] for r in ran),
        "median_process_overhead_s": _median([r["worker_wall_s"] - r["timed_s"] for r in ran]),
    }


def _median(values: list[float]) -> float:
    values = sorted(values)
    n = len(values)
    return (values[n // 2] + values[(n - 1) // 2]) / 2 if n else math.nan


def print_tables(curves: list[dict[str, Any]], rows: list[dict[str, Any]],
                 overhead: dict[str, Any], console) -> None:
    from rich.table import Table

    def slope(curve: dict[str, Any], metric: str) -> str:
        fit = curve["fits"].get(metric)
        if not fit:
            return "-"
        return (f"{fit['slope']:.2f} / {_fmt(fit['tail_slope'], '.2f')} / "
                f"{_fmt(fit['increment_slope'], '.2f')}")

    at = {(r["kind"], r["model"], r.get("input_len") if r["kind"] == "scale"
           else r.get("context_len")): r for r in rows if r.get("status") == "ok"}
    scale = Table(title="scaling: frontier and log-log slopes vs length (all points / longest 3 "
                        "/ increments between lengths)")
    for column in ("model", "policy", "frontier L", "stopped by", "train time", "time/seq",
                   "fwd time", "peak memory", "util at frontier", "best util"):
        scale.add_column(column)
    stream = Table(title="streaming: per-token latency and state vs context length (slopes: all "
                         "/ longest 3 / increments)")
    for column in ("model", "max context", "stopped by", "step latency", "state bytes",
                   "state at max", "latency at max"):
        stream.add_column(column)
    for c in curves:
        last = at.get((c["kind"], c["model"], c["frontier_len"]), {})
        if c["kind"] == "scale":
            utils = [r.get("flops_utilization") for r in rows if r.get("status") == "ok"
                     and r["model"] == c["model"] and r["kind"] == "scale"]
            best = max((u for u in utils if u is not None), default=None)
            scale.add_row(c["model"], c["batch_policy"], str(c["frontier_len"]),
                          c["stopped_by"] or "-", slope(c, "train_step_s_median"),
                          slope(c, "train_s_per_seq"), slope(c, "fwd_step_s_median"),
                          slope(c, "peak_mem_bytes"),
                          _fmt(last.get("flops_utilization"), ".1%"), _fmt(best, ".1%"))
        else:
            stream.add_row(c["model"], str(c["frontier_len"]), c["stopped_by"] or "-",
                           slope(c, "stream_step_s_median"), slope(c, "state_bytes"),
                           _fmt(last.get("state_bytes"), ".0f"),
                           f"{_fmt(last.get('stream_step_s_median'), '.3g', 1e3)} ms")
    console.print(scale)
    console.print(stream)
    if overhead:
        console.print(f"measurement overhead: timed regions are "
                      f"{overhead['timed_fraction_of_run']:.0%} of the workers' run time and "
                      f"{overhead['timed_fraction_of_process']:.0%} of their process wall time "
                      f"(median {overhead['median_process_overhead_s']:.1f} s per job outside "
                      f"the timed regions, {overhead['jobs']} jobs)")
