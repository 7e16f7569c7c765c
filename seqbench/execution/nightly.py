"""The nightly run: test gate, nightly spec, comparison with the previous night, report, history.

``seqbench nightly`` does, in order:

1. **gate**: runs the test suite (``python -m pytest -q`` in the source checkout, the default
   selection of ``pyproject.toml``). A red gate publishes nothing: no benchmark runs, no report;
   the index records the failure and the log, and the command exits 3.
2. **run**: the nightly spec (default ``tasks/nightly.yaml``) into a dated directory
   ``HISTORY/runs/<UTC stamp>/results`` (every job in a fresh worker, like ``seqbench run``).
3. **compare**: with the newest published run of the same suite on the same device
   (``device_name`` of the rows: the GPU's name, or the CPU model), written to
   ``compare.md`` (rules in :mod:`seqbench.results.compare`).
4. **report**: :func:`seqbench.results.report.write_report` into ``report/``.
5. **reproductions**: every reproduction spec given (``seqbench nightly`` defaults to the shipped
   CPU-scale ones, :data:`REPRODUCTIONS`) runs into ``reproductions/<suite>/`` of the night and
   its expected orderings are checked (:mod:`seqbench.results.check`, written to
   ``reproductions/<suite>/check.md``). A flipped (or unevaluable) ordering is printed in capitals
   and fails the night (exit 1), like a regression.
6. **history**: one line per night in ``HISTORY/index.jsonl`` and a table of every night in
   ``HISTORY/index.md`` (links to each report and comparison).
7. optionally (``--asv``) the asv suite for the same commit and ``asv publish``.

Exit status: 0 published without regressions, 1 published with regressions (a speed, memory
or metric change against the previous night, a flipped ordering of a reproduction, or a failed
asv step), 2 bad input (spec, flags, or another nightly holding the history's lock), 3 red gate.

Exact commands (from the checkout; seqbench must be pip-installed in the interpreter used)::

    seqbench nightly                                  # gate, nightly spec, compare, report
    seqbench nightly --history /srv/seqbench/history  # keep the history elsewhere
    seqbench nightly --asv                            # also asv run + asv publish
    seqbench compare HISTORY/runs/<A>/results HISTORY/runs/<B>/results --markdown diff.md

    # asv alone (asv.conf.json: "environment_type": "existing", results under results/asv):
    asv machine --yes                                 # once per machine
    asv check -E existing                             # the suite imports and is consistent
    asv run -E existing:$(python -c 'import sys; print(sys.executable)') \
        --set-commit-hash $(git rev-parse HEAD)
    asv publish                                       # HTML history in results/asv/html
    asv preview                                       # serve it on http://127.0.0.1:8080
    .ci/asv-smoke.sh                                  # CI smoke: one grid point, saves nothing

asv keys its results by the interpreter path: keep the nightly venv at one fixed path.

cron (03:00 every night; ``crontab -e`` for the user owning the checkout in ``~/seqbench`` with
its venv in ``.venv``; history in ``~/seqbench/results/nightly``, output appended to
``~/seqbench/log``; one line, as cron has no line continuation)::

    0 3 * * * cd ~/seqbench && git pull -q --ff-only && .venv/bin/seqbench nightly --asv >>log 2>&1

systemd (``/etc/systemd/system/seqbench-nightly.service`` and ``.timer``; then
``systemctl daemon-reload && systemctl enable --now seqbench-nightly.timer``)::

    [Unit]
    Description=seqbench nightly benchmark
    [Service]
    Type=oneshot
    User=bench
    WorkingDirectory=/srv/seqbench
    ExecStartPre=/usr/bin/git pull --ff-only
    ExecStart=/srv/seqbench/.venv/bin/seqbench nightly --asv --history /srv/seqbench/history
    TimeoutStartSec=6h
    # exit 1 (regressions) or 3 (red gate) marks the unit failed: OnFailure= can notify

    [Unit]
    Description=seqbench nightly benchmark at 03:00
    [Timer]
    OnCalendar=*-*-* 03:00:00
    Persistent=true
    [Install]
    WantedBy=timers.target
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqbench.config.expand import resolve_device, spec_hash
from seqbench.config.spec import Suite
from seqbench.errors import SpecError
from seqbench.execution.sweep import plan, run_sweep
from seqbench.recording.provenance import SOURCE_ROOT, code_provenance, host_provenance
from seqbench.recording.reader import read_dir
from seqbench.recording.schema import Row
from seqbench.recording.store import dumps, write_text_atomic

DEFAULT_SPEC = "nightly"
# the CPU-scale reproductions of known results (docs/reproductions.md), run every night
REPRODUCTIONS = ("adding-tcn-cpu", "copy-tcn-cpu", "digits-tcn-cpu", "selective-copy-cpu",
                 "induction-cpu", "mqar-cpu", "chomsky-cpu", "vanishing-gradients-cpu")
DEFAULT_HISTORY = Path("results") / "nightly"
INDEX, INDEX_MD, LOCK = "index.jsonl", "index.md", ".lock"
GATE_TIMEOUT_S = 3600.0
EXIT_OK, EXIT_REGRESSION, EXIT_RED_GATE = 0, 1, 3

Say = Callable[[str], None]


# --- the gate ------------------------------------------------------------------------------

def gate_command(extra: Sequence[str] = ()) -> list[str]:
    """pytest in the source checkout, with the project's default selection (no slow tests)."""
    return [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *extra]


@dataclass
class Gate:
    status: str  # passed, failed, skipped
    returncode: int = 0
    seconds: float = 0.0
    summary: str = ""  # pytest's last line


def run_gate(command: Sequence[str], log: Path, cwd: Path = SOURCE_ROOT) -> Gate:
    """Run the gate command, its output into ``log``; passed when it exits 0."""
    if not (cwd / "tests").is_dir():
        log.write_text(f"no tests/ in {cwd}\n", encoding="utf-8")
        return Gate("failed", -1, 0.0, f"no test suite in {cwd}: run from a source checkout "
                    "or pass --skip-gate")
    start = time.perf_counter()
    with open(log, "wb") as out:
        try:
            code = subprocess.run(list(command), cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                  timeout=GATE_TIMEOUT_S, check=False).returncode
        except subprocess.TimeoutExpired:
            code = -9
    lines = [ln for ln in log.read_text(encoding="utf-8", errors="replace").splitlines()
             if ln.strip()]
    return Gate("passed" if code == 0 else "failed", code, time.perf_counter() - start,
                lines[-1].strip("= ") if lines else "")


# --- history -------------------------------------------------------------------------------

def read_index(history: Path) -> list[dict[str, Any]]:
    path = history / INDEX
    if not path.exists():
        return []
    entries = []
    for line in path.read_text(encoding="utf-8").splitlines():
        with contextlib.suppress(ValueError):  # a line cut by a crash loses one night, not all
            entries.append(json.loads(line))
    return entries


def previous_run(entries: Sequence[dict[str, Any]], suite: str, device: str
                 ) -> dict[str, Any] | None:
    """The newest published run of ``suite`` on ``device``."""
    for entry in reversed(entries):
        if (entry.get("status") == "published" and entry.get("suite") == suite
                and entry.get("device_name") == device):
            return entry
    return None


def new_run_dir(history: Path, now: dt.datetime) -> Path:
    """``runs/<UTC stamp>``, with a suffix if two runs start within the same second."""
    stamp = now.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H%M%SZ")
    path, n = history / "runs" / stamp, 1
    while path.exists():
        n += 1
        path = history / "runs" / f"{stamp}-{n}"
    path.mkdir(parents=True)
    return path


@contextlib.contextmanager
def locked(history: Path) -> Iterator[None]:
    """One nightly per history directory at a time (cron overlapping a slow night)."""
    history.mkdir(parents=True, exist_ok=True)
    with open(history / LOCK, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SpecError("--history", str(history),
                            "another seqbench nightly is running on it") from None
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _link(entry: dict[str, Any], key: str, text: str) -> str:
    return f"[{text}]({entry[key]})" if entry.get(key) else ""


def _orderings(entry: dict[str, Any]) -> str:
    """``12 held, 1 flipped`` over the night's reproductions ('' when none ran)."""
    counts: Counter[str] = Counter()
    for rep in (entry.get("reproductions") or {}).values():
        counts.update(rep.get("counts") or {})
    return ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))


def index_markdown(entries: Sequence[dict[str, Any]]) -> str:
    """Every night, newest first: gate, jobs, regressions, links to report and comparison."""
    import pandas as pd

    from seqbench.results.writers import Table, md_table

    cells = []
    for e in reversed(entries):
        statuses = e.get("statuses") or {}
        sha = (e.get("git_sha") or "")[:8] + ("+dirty" if e.get("git_dirty") else "")
        published = e.get("status") == "published"
        cells.append({
            "started (UTC)": e.get("started_at", ""), "device": e.get("device_name", ""),
            "commit": sha, "gate": e.get("gate", ""), "status": e.get("status", ""),
            "load": f"{e.get('loadavg_start', '')}/{e.get('loadavg_end', '')}",
            "jobs ok": f"{statuses.get('ok', 0)}/{sum(statuses.values())}" if statuses else "",
            "compared with": (e.get("baseline") or "-") if published else "",
            "regressions": str(e.get("regressions", "")) if published else "",
            "orderings": _orderings(e) if published else "",
            "report": f"[report]({e['report']})" if e.get("report") else "",
            "compare": f"[compare]({e['compare']})" if e.get("compare") else "",
            "log": f"[gate]({e['gate_log']})" if e.get("gate_log") else "",
        })
    text = "# seqbench nightly history\n\nNewest first; every night is a line of index.jsonl.\n\n"
    return text + (md_table(Table(pd.DataFrame(cells))) if cells else "No nights yet.\n")


def record(history: Path, entry: dict[str, Any]) -> None:
    """Append the night to index.jsonl and rewrite index.md from it."""
    with open(history / INDEX, "a", encoding="utf-8") as f:
        f.write(dumps(entry) + "\n")
        f.flush()
        os.fsync(f.fileno())
    write_text_atomic(history / INDEX_MD, index_markdown(read_index(history)))


# --- the night -----------------------------------------------------------------------------

def device_of(rows: Sequence[dict[str, Any]]) -> str:
    names = Counter(str(r["device_name"]) for r in rows if r.get("device_name"))
    return names.most_common(1)[0][0] if names else ""


def run_suite(suite: Suite, source: str, out: Path, executor: Any,
              on_row: Callable[[Row], None] | None = None) -> list[dict[str, Any]]:
    """Every job of ``suite`` into the results directory ``out`` (the one sweep driver);
    the stored rows of its jobs."""
    sweep = run_sweep(plan(suite, source, out), executor, on_row=on_row)
    return sweep.rows()


def asv_commands(python: str, sha: str) -> list[list[str]]:
    """``python -m asv``, so cron's short PATH still finds the venv's asv."""
    asv = [python, "-m", "asv"]
    return [[*asv, "machine", "--yes"],
            [*asv, "run", "-E", f"existing:{python}", "--set-commit-hash", sha],
            [*asv, "publish"]]


def run_asv(log: Path, sha: str, cwd: Path = SOURCE_ROOT) -> dict[str, int]:
    """The asv suite for this commit, then the HTML history; return code of each step."""
    codes: dict[str, int] = {}
    with open(log, "wb") as out:
        for command in asv_commands(sys.executable, sha):
            step = command[3]  # machine, run, publish
            out.write(f"$ {' '.join(command)}\n".encode())
            out.flush()
            codes[step] = subprocess.run(command, cwd=cwd, stdout=out,
                                         stderr=subprocess.STDOUT).returncode
            if codes[step] != 0 and step != "publish":
                break  # no machine file: run exits 1; a failed run: nothing new to publish
    return codes


@dataclass
class Night:
    exit_code: int
    entry: dict[str, Any]
    run_dir: Path
    comparison: Any = None  # seqbench.results.compare.Comparison, when there was a previous run
    notes: list[str] = field(default_factory=list)


def nightly(suite: Suite, source: str, history: Path, *, executor: Any,
            gate: Sequence[str] | None = None, report: bool = True, asv: bool = False,
            compare_options: dict[str, float] | None = None, say: Say = print,
            on_row: Callable[[Row], None] | None = None,
            reproductions: Sequence[tuple[Suite, str]] = ()) -> Night:
    """One night (see the module docstring). ``gate=None`` skips the test gate;
    ``reproductions``: (suite, source) pairs run and checked after the nightly suite."""
    with locked(history):
        started = dt.datetime.now(dt.timezone.utc)
        run_dir = new_run_dir(history, started)
        provenance = code_provenance()
        entry: dict[str, Any] = {
            "started_at": started.isoformat(timespec="seconds"),
            "run_dir": run_dir.relative_to(history).as_posix(),
            "suite": suite.name, "spec_hash": spec_hash(suite), "spec": source,
            "git_sha": provenance["git_sha"], "git_dirty": provenance["git_dirty"],
            "host": os.uname().nodename, "python": sys.executable,
            "loadavg_start": round(os.getloadavg()[0], 2),  # a busy machine explains drift
        }
        night = Night(EXIT_OK, entry, run_dir)
        try:
            _night(night, suite, source, history, executor, gate, report, asv,
                   compare_options or {}, say, on_row, reproductions)
        except BaseException as exc:  # interrupted or crashed: the history says so
            entry.update(status="interrupted", error=f"{type(exc).__name__}: {exc}")
            raise
        finally:
            entry["finished_at"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
            entry["loadavg_end"] = round(os.getloadavg()[0], 2)
            record(history, entry)
        for note in night.notes:
            say(f"note: {note}")
        return night


def write_night_report(night: Night, results: Path, history: Path, device: str) -> None:
    """The reporting issue's report of this night's rows, in ``report/`` beside them."""
    try:
        from seqbench.results.report import write_report
    except ImportError:
        night.notes.append("seqbench.results.report is not available: no report")
        return
    try:
        page = write_report(results, night.run_dir / "report",
                            title=f"seqbench nightly {night.run_dir.name} ({device})")
        night.entry["report"] = page.relative_to(history).as_posix()
    except Exception as exc:  # the rows and the comparison are kept either way
        night.entry["report_error"] = f"{type(exc).__name__}: {exc}"
        night.notes.append(f"report failed: {night.entry['report_error']}")


def run_reproductions(night: Night, reproductions: Sequence[tuple[Suite, str]], history: Path,
                      executor: Any, say: Say, on_row: Callable[[Row], None] | None) -> None:
    """Each reproduction into ``reproductions/<suite>/``, its orderings checked; a flip (or an
    ordering that could not be evaluated) fails the night."""
    from seqbench.results import check as ck

    summary: dict[str, Any] = {}
    for suite, source in reproductions:
        out = night.run_dir / "reproductions" / suite.name
        say(f"reproduction: {suite.name} ({source}) -> {out}")
        run_suite(suite, source, out, executor, on_row)
        result = ck.check_dir(out)
        write_text_atomic(out / "check.md", ck.to_markdown(result))
        failing = [v for v in result.verdicts if v.failing]
        summary[suite.name] = {"counts": result.counts(),
                               "check": (out / "check.md").relative_to(history).as_posix(),
                               "failing": [f"{v.expect.text()} at {v.task} T={v.seq_len} "
                                           f"eval {v.eval_len}: {v.status}" for v in failing]
                               + result.unmatched}
        say(f"reproduction: {result.summary()}")
        for text in summary[suite.name]["failing"]:
            say(f"ORDERING NOT REPRODUCED ({suite.name}): {text}")
        if result.failed():
            night.exit_code = EXIT_REGRESSION
    night.entry["reproductions"] = summary
    night.entry["orderings_failing"] = sum(len(v["failing"]) for v in summary.values())


def _night(night: Night, suite: Suite, source: str, history: Path, executor: Any,
           gate: Sequence[str] | None, report: bool, asv: bool,
           compare_options: dict[str, float], say: Say,
           on_row: Callable[[Row], None] | None,
           reproductions: Sequence[tuple[Suite, str]] = ()) -> None:
    from seqbench.results import compare as cmp

    entry, run_dir, rel = night.entry, night.run_dir, night.entry["run_dir"]
    if gate is None:
        entry["gate"] = "skipped"
        say("gate: skipped (--skip-gate)")
    else:
        say(f"gate: {' '.join(gate)} (in {SOURCE_ROOT})")
        result = run_gate(gate, run_dir / "gate.log")
        entry.update(gate=result.status, gate_s=round(result.seconds, 1),
                     gate_summary=result.summary, gate_log=f"{rel}/gate.log")
        say(f"gate: {result.status} in {result.seconds:.0f} s ({result.summary})")
        if result.status != "passed":
            entry.update(status="gate-failed",
                         device_name=host_provenance(resolve_device(suite.device))["device_name"])
            night.exit_code = EXIT_RED_GATE
            say(f"nothing published; log: {run_dir / 'gate.log'}")
            return

    results = run_dir / "results"
    say(f"run: suite {suite.name} ({source}) -> {results}")
    rows = run_suite(suite, source, results, executor, on_row)
    device = device_of(rows)
    entry.update(device_name=device, results=f"{rel}/results", jobs=len(rows),
                 statuses=dict(Counter(str(r.get("status")) for r in rows)))

    previous = previous_run(read_index(history), suite.name, device)
    if previous is None:
        night.notes.append(f"no earlier published {suite.name} run on {device!r}: "
                           "nothing to compare")
        entry.update(baseline="", regressions=0, improvements=0)
    else:
        base = history / previous["results"]
        comparison = cmp.compare(read_dir(base).rows(), rows, **compare_options)
        night.comparison = comparison
        (run_dir / "compare.md").write_text(cmp.to_markdown(comparison, str(base), str(results)),
                                            encoding="utf-8")
        entry.update(baseline=previous["run_dir"], compare=f"{rel}/compare.md",
                     matched=comparison.matched, regressions=len(comparison.regressions),
                     improvements=len(comparison.improvements))
        if comparison.matched == 0:
            night.notes.append(f"no configuration of {previous['run_dir']} matches this run "
                               "(the spec changed?): nothing to compare")
        if comparison.regressions:
            night.exit_code = EXIT_REGRESSION

    if report:
        write_night_report(night, results, history, device)
    if reproductions:
        run_reproductions(night, reproductions, history, executor, say, on_row)
    if asv:
        say("asv: " + " && ".join(" ".join(c) for c in asv_commands(sys.executable, "<sha>")))
        codes = run_asv(run_dir / "asv.log", entry["git_sha"] or "HEAD")
        entry.update(asv=codes, asv_log=f"{rel}/asv.log")
        if any(codes.values()):
            night.notes.append(f"asv failed ({codes}); log: {run_dir / 'asv.log'}")
            night.exit_code = EXIT_REGRESSION
    entry["status"] = "published"
