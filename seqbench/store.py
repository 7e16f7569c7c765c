"""The results store: one JSON file per job (written atomically) and a consolidated JSONL.

Layout of a results directory::

    suite.json          the suite's name, spec hash and validated spec (refuses other suites)
    jobs/<job_id>.json  one row per job, written to a temporary file, fsynced, renamed
    results.jsonl       every row, one per line, appended as jobs finish

The per-job files are the source of truth: a run that is killed loses no finished row, and a
second run into the same directory skips every job whose file holds a final status. The JSONL
is rebuilt from them whenever it is missing rows or ends in a truncated line.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from pathlib import Path
from typing import Any

from seqbench.errors import SpecError
from seqbench.schema import STATUSES

FINAL = frozenset(STATUSES)  # every recorded status is final; --retry reruns failures


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


class ResultStore:
    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / "jobs"
        self.jsonl = self.root / "results.jsonl"
        self.manifest = self.root / "suite.json"

    # --- opening ----------------------------------------------------------------------------
    def open_for(self, suite_name: str, spec_hash: str, spec: dict[str, Any]) -> None:
        """Create the directory, or check that it belongs to the same suite."""
        if self.root.exists() and not self.root.is_dir():
            raise SpecError("--out", str(self.root), "must be a directory (it is a file)")
        if self.manifest.exists():
            try:
                existing = json.loads(self.manifest.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise SpecError("--out", str(self.root),
                                "holds an unreadable suite.json; use a fresh directory") from None
            if existing.get("suite") != suite_name:
                raise SpecError("--out", str(self.root),
                                f"holds results of suite {existing.get('suite')!r}, not "
                                f"{suite_name!r}; choose another directory")
            if existing.get("spec_hash") != spec_hash:
                history = existing.setdefault("previous_spec_hashes", [])
                history.append(existing["spec_hash"])
                existing.update(spec_hash=spec_hash, spec=spec)
                write_json_atomic(self.manifest, existing)
        else:
            if self.root.exists() and any(self.root.iterdir()):
                if not self.jobs_dir.exists():
                    raise SpecError("--out", str(self.root),
                                    "is a non-empty directory that is not a seqbench results "
                                    "directory; choose an empty or new one")
            self.root.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.manifest,
                              {"suite": suite_name, "spec_hash": spec_hash, "spec": spec})
        self.jobs_dir.mkdir(exist_ok=True)
        self.repair()

    # --- reading ----------------------------------------------------------------------------
    def job_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.json"

    def rows(self) -> list[dict[str, Any]]:
        """Every stored row, from the per-job files (the source of truth), in start order."""
        out = []
        for path in sorted(self.jobs_dir.glob("*.json")):
            try:
                out.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue  # a half-written file cannot exist (atomic rename); skip foreign junk
        out.sort(key=lambda r: (r.get("started_at", ""), r.get("job_id", "")))
        return out

    def finished(self) -> dict[str, str]:
        """job_id -> status, for every job that has a final status."""
        return {r["job_id"]: r["status"] for r in self.rows() if r.get("status") in FINAL}

    # --- writing ----------------------------------------------------------------------------
    def write(self, row: dict[str, Any]) -> None:
        write_json_atomic(self.job_path(row["job_id"]), row)
        line = (dumps(row) + "\n").encode("utf-8")
        fd = os.open(self.jsonl, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, line)
            os.fsync(fd)
        finally:
            os.close(fd)

    def repair(self) -> bool:
        """Rebuild results.jsonl from the job files if it lacks a row or ends mid-line."""
        rows = self.rows()
        ids = [r.get("job_id") for r in rows]
        try:
            data = self.jsonl.read_bytes()
        except FileNotFoundError:
            data = b""
        lines = data.split(b"\n")
        ok = data.endswith(b"\n") or not data
        seen = set()
        for line in lines:
            if not line.strip():
                continue
            try:
                seen.add(json.loads(line)["job_id"])
            except (ValueError, KeyError, TypeError):
                ok = False
        if ok and set(ids) <= seen:
            return False
        text = "".join(dumps(r) + "\n" for r in rows)
        write_text_atomic(self.jsonl, text)
        return True

