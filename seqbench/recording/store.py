"""The results store: one JSON file per job (written atomically) and a consolidated JSONL.

Layout of a results directory::

    suite.json          the suite's name, spec hash and validated spec (refuses other suites)
    jobs/<job_id>.json  one row per job, written to a temporary file, fsynced, renamed
    results.jsonl       every row, one per line, appended (and fsynced) as jobs finish
    .lock               held (flock) by the run writing here; the kernel drops it if that dies

The per-job files are the source of truth: a run that is killed, even with SIGKILL, loses no
finished row, and a second run into the same directory skips every job whose file holds a final
status. The JSONL is rebuilt from them whenever it is missing a row, holds one twice, or ends in
a truncated line (a writer killed mid-append); a re-run job (``--retry``) replaces its line
instead of adding a second one. Two runs never write into one directory at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from seqbench.errors import SpecError
from seqbench.recording.schema import STATUSES

FINAL = frozenset(STATUSES)  # every recorded status is final; --retry reruns failures
_HELD: dict[str, int] = {}  # lock file -> descriptor holding its flock, in this process


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def dumps(row: dict[str, Any]) -> str:
    """JSON with NaN/inf written as null, so every reader can parse it."""

    def clean(v: Any) -> Any:
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    return json.dumps(clean(row), default=_json_default, sort_keys=False)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one
    (temporary file in the same directory, fsync, rename, fsync of the directory)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_json_atomic(path: str | os.PathLike, obj: dict[str, Any]) -> None:
    write_text_atomic(path, dumps(obj))


def read_jsonl(path: str | os.PathLike
               ) -> tuple[list[tuple[int, dict[str, Any]]], list[tuple[int, str]]]:
    """(line number, row) for every row of a JSONL file, and (line number, problem) for every
    line that is not a JSON object: a truncated last line (a writer killed mid-append) is
    reported, never fatal."""
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return [], []
    rows, problems = [], []
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            last = number == len(lines)  # no newline after it: the append was cut short
            problems.append((number, "truncated line (a writer was killed mid-append)" if last
                             else "not valid JSON"))
            continue
        if not isinstance(row, dict):
            problems.append((number, f"a JSON {type(row).__name__}, not an object"))
            continue
        rows.append((number, row))
    if data and not data.endswith(b"\n") and not problems:
        problems.append((len(lines), "last line has no newline"))
    return rows, problems


class ResultStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.jsonl = self.root / "results.jsonl"
        self.manifest = self.root / "suite.json"
        self.lock_path = self.root / ".lock"
        self._lock_fd: int | None = None

    # --- opening ----------------------------------------------------------------------------
    def open_for(self, suite_name: str, spec_hash: str, spec: dict[str, Any]) -> None:
        """Create the directory, or check that it belongs to the same suite; then take the lock,
        clear what killed writers left and repair the JSONL. Nothing is written before every
        check has passed."""
        if self.root.exists() and not self.root.is_dir():
            raise SpecError("--out", str(self.root), "must be a directory (it is a file)")
        existing = None
        if self.manifest.exists():
            try:
                existing = json.loads(self.manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                existing = None
            if not isinstance(existing, dict) or not isinstance(existing.get("suite"), str):
                raise SpecError("--out", str(self.root),
                                "holds an unreadable suite.json; use a fresh directory")
            if existing["suite"] != suite_name:
                raise SpecError("--out", str(self.root),
                                f"holds results of suite {existing['suite']!r}, not "
                                f"{suite_name!r}; choose another directory")
        elif self.root.exists() and any(self.root.iterdir()) and not self.jobs_dir.exists():
            raise SpecError("--out", str(self.root),
                            "is a non-empty directory that is not a seqbench results "
                            "directory; choose an empty or new one")
        self.root.mkdir(parents=True, exist_ok=True)
        self.lock()
        if existing is None:
            write_json_atomic(self.manifest,
                              {"suite": suite_name, "spec_hash": spec_hash, "spec": spec})
        elif existing.get("spec_hash") != spec_hash:
            history = existing.setdefault("previous_spec_hashes", [])
            history.append(existing.get("spec_hash"))
            existing.update(spec_hash=spec_hash, spec=spec)
            write_json_atomic(self.manifest, existing)
        self.jobs_dir.mkdir(exist_ok=True)
        self.remove_stale_temporaries()
        self.repair()

    def lock(self) -> None:
        """Hold an exclusive lock on the directory until :meth:`close` or this process ends.

        The lock keeps other processes out; within one process, stores of the same directory
        share it (a command run twice in one interpreter is not a concurrent writer)."""
        if self._lock_fd is not None:
            return
        key = str(self.lock_path.resolve())
        fd = _HELD.get(key)
        if fd is None:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
                os.close(fd)
                raise SpecError("--out", str(self.root),
                                f"is being written by another seqbench run (pid {holder}); wait "
                                "for it to finish or choose another directory") from None
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _HELD[key] = fd
        self._lock_fd = fd

    def close(self) -> None:
        """Release the directory's lock (closing the descriptor releases the flock)."""
        if self._lock_fd is not None:
            for key, fd in list(_HELD.items()):
                if fd == self._lock_fd:
                    del _HELD[key]
            os.close(self._lock_fd)
            self._lock_fd = None

    def remove_stale_temporaries(self) -> None:
        """Delete the temporary files of writers that were killed before their rename."""
        for folder in (self.root, self.jobs_dir):
            for tmp in folder.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()

    # --- reading ----------------------------------------------------------------------------
    def job_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.json"

    def rows(self) -> list[dict[str, Any]]:
        """Every stored row, from the per-job files (the source of truth), in start order."""
        out = []
        for path in sorted(self.jobs_dir.glob("*.json")):
            try:
                row = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue  # a half-written file cannot exist (atomic rename); skip foreign junk
            if isinstance(row, dict) and "job_id" in row:
                out.append(row)
        out.sort(key=lambda r: (str(r.get("started_at", "")), str(r.get("job_id", ""))))
        return out

    def finished(self) -> dict[str, str]:
        """job_id -> status, for every job that has a final status."""
        return {r["job_id"]: r["status"] for r in self.rows() if r.get("status") in FINAL}

    # --- writing ----------------------------------------------------------------------------
    def write(self, row: dict[str, Any]) -> None:
        """Record a row: its job file first (atomic), then its JSONL line (fsynced). A job that
        was recorded before (``--retry``) has its line replaced, never duplicated."""
        path = self.job_path(row["job_id"])
        rerun = path.exists()
        write_json_atomic(path, row)
        if rerun:
            self.rebuild_jsonl()
            return
        line = (dumps(row) + "\n").encode("utf-8")
        fd = os.open(self.jsonl, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def rebuild_jsonl(self) -> None:
        write_text_atomic(self.jsonl, "".join(dumps(r) + "\n" for r in self.rows()))

    def repair(self) -> bool:
        """Rebuild results.jsonl from the job files if it lacks a row, holds one twice or a row
        no job file has, or has a line that is not a row (a truncated append). True if rebuilt."""
        ids = [r.get("job_id") for r in self.rows()]
        lines, problems = read_jsonl(self.jsonl)
        seen = [r.get("job_id") for _, r in lines]
        if not problems and len(seen) == len(set(seen)) and set(seen) == set(ids):
            return False
        self.rebuild_jsonl()
        return True
