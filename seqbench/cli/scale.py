"""``seqbench scale [SPEC]``: run a ``kind: scale`` suite up to each model's frontier.

For every model the length doubles until the model runs out of memory (under the spec's CPU
memory cap) or past its time budget; longer lengths are recorded as ``skipped``. Streaming
latency is measured at the spec's context positions. Afterwards the log-log slopes of time and
memory against length are fitted per model and written to ``complexity.json`` beside the rows,
a table prints each model's frontier, slopes and FLOP utilisation, and a report is written to
``<out>/report`` as ``seqbench run`` does (frontier, slopes with the points used, throughput,
memory, streaming latency and state size; ``--no-report`` skips it). A rerun into the same
directory resumes: recorded jobs are not run again and the frontier is decided from them.
"""

from __future__ import annotations

import argparse
import datetime as dt
import math
import sys
from pathlib import Path
from typing import Any

from seqbench.cli.run import add_spawn_argument
from seqbench.config.expand import resolve_device, spec_hash
from seqbench.config.spec import Suite
from seqbench.errors import SpecError
from seqbench.recording.schema import Row

DEFAULT_SCALE_SPEC = "scale-cpu"
COMPLEXITY_FILE = "complexity.json"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from seqbench.cli.run import add_override_arguments

    p.add_argument("spec", nargs="?", default=DEFAULT_SCALE_SPEC,
                   help=f"a kind: scale spec file or shipped name (default: {DEFAULT_SCALE_SPEC})")
    p.add_argument("-o", "--out", default=None,
                   help="results directory (default: results/<suite name>)")
    p.add_argument("--retry", action="store_true",
                   help="rerun jobs whose recorded status is not ok")
    p.add_argument("--dry-run", action="store_true",
                   help="list the jobs (marking those already recorded) and exit")
    p.add_argument("--fit-only", action="store_true",
                   help="run nothing: refit the stored rows and print the tables")
    p.add_argument("--probe", action="store_true",
                   help="measure the device's matmul/copy peak again (keeps the best seen)")
    p.add_argument("--no-report", action="store_true",
                   help="skip the report (figures, tables, fits) written after the sweep")
    add_spawn_argument(p)
    add_override_arguments(p)


def main(args: argparse.Namespace) -> int:
    from seqbench.cli.progress import RichProgress, console, print_jobs
    from seqbench.cli.run import local_executor, overrides_of
    from seqbench.config.load import load_suite
    from seqbench.execution.sweep import plan, require_kind, run_sweep
    from seqbench.recording.store import write_json_atomic
    from seqbench.results.complexity import complexity, measurement_overhead

    out_console = console(150)
    overrides = overrides_of(args)
    suite, path = load_suite(args.spec, overrides)
    require_kind(suite, str(path), "scale", "seqbench scale")
    out = Path(args.out) if args.out else Path("results") / suite.name
    sweep = plan(suite, str(path), out, overrides, retry=args.retry)
    if args.dry_run:
        print_jobs(out_console, sweep, f"{len(sweep.jobs)} jobs (longer lengths past a model's "
                                       "frontier will be skipped)")
        return 0
    if args.fit_only:
        if not out.is_dir():
            raise SpecError("--out", str(out), "holds no results to fit")
    else:
        from seqbench.execution.frontier import StopPolicy

        out_console.print(f"  stop policy: {StopPolicy.from_suite(suite).describe()}")
        probe_peaks(suite, refresh=args.probe, console=out_console)
        try:
            run_sweep(sweep, local_executor(args, 1),
                      RichProgress(out_console, header="seqbench scale", describe=describe_row))
        except KeyboardInterrupt:
            print(f"seqbench: interrupted; finished jobs are kept in {out}; rerun the same "
                  "command to resume", file=sys.stderr)
            return 130
    rows = sweep.rows()
    curves = complexity(rows)
    overhead = measurement_overhead(rows)
    write_json_atomic(out / COMPLEXITY_FILE, {
        "suite": suite.name, "spec_hash": spec_hash(suite),
        "written_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "measurement_overhead": overhead, "curves": curves})
    print_tables(curves, rows, overhead, out_console)
    if not args.no_report:
        from seqbench.cli.run import write_report

        write_report(out, out_console)
    out_console.print(f"results: {out / 'results.jsonl'}; fits: {out / COMPLEXITY_FILE}")
    return 0


PROBE = r"""
import json, sys, torch
from seqbench.worker.peaks import device_peak
device, dtype, threads, refresh = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
if threads:
    torch.set_num_threads(threads)
peak = device_peak(torch.device(device), getattr(torch, dtype), refresh=refresh)
print(json.dumps({**peak, "threads": torch.get_num_threads()}))
"""


def probe_peaks(suite: Suite, refresh: bool, console: Any) -> None:
    """Measure the device peaks once, before any job, in a worker process of their own (the
    driver imports no torch; a probe inside a job would count against its memory cap and its
    wall time). The workers then read the cache."""
    import json
    import subprocess

    device = resolve_device(suite.device)
    dtype = "bfloat16" if suite.dtype == "bfloat16" or (
        device == "cuda" and suite.train.autocast != "off") else "float32"
    command = [sys.executable, "-c", PROBE, device, dtype, str(suite.measure.threads or 0),
               "1" if refresh else "0"]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        console.print(f"  device peak: probe failed ({last}); utilisation will be missing")
        return
    peak = json.loads(done.stdout.strip().splitlines()[-1])
    console.print(f"  device peak ({device}, {dtype}, {peak['threads']} threads): "
                  f"{peak['peak_flops_per_s'] / 1e9:.0f} GFLOP/s matmul, "
                  f"{peak['peak_bytes_per_s'] / 1e9:.1f} GB/s copy "
                  f"(measured {peak['measured_at']})")


def _fmt(value: Any, spec: str = ".3g", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    text = format(value * scale, spec)
    return text.replace("-", "", 1) if text.lstrip("-0.") == "" and text.startswith("-") else text


def describe_row(row: Row) -> str:
    """One finished scale or stream job with its measurements."""
    from seqbench.cli.progress import row_line
    from seqbench.results.columns import fmt_bytes

    r = row.to_dict()
    if row.status != "ok":
        return row_line(row)
    head = f"  {row.kind} {row.task} L={row.seq_len} {row.model} B={row.batch_size}: "
    if row.kind == "stream":
        return head + (f"ok step {_fmt(r.get('stream_step_s_median'), '.3g', 1e3)} ms, "
                       f"state {fmt_bytes(r.get('state_bytes'))}, prefill "
                       f"{_fmt(r.get('prefill_s'))} s "
                       f"({_fmt(r.get('worker_wall_s'), '.1f')} s)")
    return head + (f"ok train {_fmt(r.get('train_step_s_median'))} s/step, fwd "
                   f"{_fmt(r.get('fwd_step_s_median'))} s, peak "
                   f"{_fmt(r.get('peak_mem_bytes'), '.0f', 2**-20)} MiB, util "
                   f"{_fmt(r.get('flops_utilization'), '.1%')} "
                   f"({_fmt(r.get('worker_wall_s'), '.1f')} s)")


def print_tables(curves: list[dict[str, Any]], rows: list[dict[str, Any]],
                 overhead: dict[str, Any], console) -> None:
    from rich.table import Table

    from seqbench.results.columns import fmt_bytes

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
                           fmt_bytes(last.get("state_bytes")),
                           f"{_fmt(last.get('stream_step_s_median'), '.3g', 1e3)} ms")
    console.print(scale)
    console.print(stream)
    if overhead:
        console.print(f"measurement overhead: timed regions are "
                      f"{overhead['timed_fraction_of_run']:.0%} of the workers' run time and "
                      f"{overhead['timed_fraction_of_process']:.0%} of their process wall time "
                      f"(median {overhead['median_process_overhead_s']:.1f} s per job outside "
                      f"the timed regions, {overhead['jobs']} jobs)")
