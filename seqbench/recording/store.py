"""The results store: one JSON file per job (written atomically) and a consolidated JSONL.

Layout of a results directory::

    suite.json          the marker: format, the suite's name, spec hash and validated spec
    jobs/<job_id>.json  one row per job, written to a temporary file, fsynced, renamed
    results.jsonl       every row, one per line, appended (and fsynced) as jobs finish
    .lock               held (flock) by the run writing here; the kernel drops it if that dies

Safety rules, so that nothing recorded is lost and nothing outside the folder is touched:

* A folder is written only when it is new, empty, or verifiably seqbench's own (its
  ``suite.json`` names the same suite); everything is checked before the first write.
* Nothing is written through a symlink: the lock and the JSONL are opened with
  ``O_NOFOLLOW``, files are replaced by atomic rename (which replaces a link, never follows
  it), and a folder whose ``jobs/``, ``results.jsonl``, ``suite.json`` or ``.lock`` is a link
  (or of the wrong kind) is refused.
* Nothing is deleted that seqbench did not create: only its own temporary files (``.*.tmp``)
  of writers that were killed before their rename.
* The two copies of a row are reconciled, never one overwritten by the other
  (:mod:`seqbench.recording.reader`): a row only in ``results.jsonl`` is restored to
  ``jobs/``, a row only in ``jobs/`` is appended to the JSONL, a row that differs is reported
  (:attr:`ResultStore.notes`) and left as it is. Unreadable JSONL lines (a truncated append)
  are moved to ``results.jsonl.damaged``, not dropped.
* Every row is checked against the schema before it is written (:class:`RowInvalid`).

A second run into the same directory skips every job that has a row (``interrupted`` rows
excepted); ``--retry`` reruns failures, replacing both copies of their rows. Two runs never
write into one directory at the same time.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import math
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

from seqbench.errors import SeqbenchError, SpecError
from seqbench.recording.reader import (
    FORMAT,
    JOBS_DIR,
    JSONL,
    LOCK_FILE,
    SUITE_FILE,
    ResultsDir,
    is_real_dir,
    is_regular,
    read_bytes_nofollow,
    read_dir,
    read_suite_file,
)
from seqbench.recording.schema import Row

_HELD: dict[str, int] = {}  # lock file -> descriptor holding its flock, in this process
DAMAGED = JSONL + ".damaged"


class RowInvalid(SeqbenchError):
    """A row failed the schema check at write time (a bug in whatever built it)."""

    def __init__(self, job_id: str, problems: list[str]) -> None:
        super().__init__(f"row {job_id}: {'; '.join(problems)}")
        self.problems = problems


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def _clean(v: Any) -> Any:
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def dumps(row: dict[str, Any] | Row) -> str:
    """JSON with NaN/inf written as null, so every reader can parse it."""
    data = row.to_dict() if isinstance(row, Row) else row
    return json.dumps(_clean(data), default=_json_default, sort_keys=False)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_text_atomic(path: str | os.PathLike[str], text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the whole new one
    (temporary file in the same directory, fsync, rename, fsync of the directory). The rename
    replaces a symlink at ``path`` instead of writing through it."""
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


def write_json_atomic(path: str | os.PathLike[str], obj: dict[str, Any] | Row) -> None:
    write_text_atomic(path, dumps(obj))


def _append(path: Path, data: str | bytes) -> None:
    """Append to a regular file (created if missing), never through a symlink."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK,
                 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise SpecError("--out", str(path), "must be a regular file")
        view = memoryview(data.encode("utf-8") if isinstance(data, str) else data)
        while view:  # os.write may write less than asked
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def enclosing_results_dir(path: Path) -> Path | None:
    """The nearest folder above ``path`` that is a seqbench results directory (its
    ``suite.json`` names a suite), if any."""
    try:
        parents = Path(os.path.abspath(path)).parents
    except (OSError, ValueError):
        return None
    for parent in parents:
        if is_regular(parent / SUITE_FILE) and read_suite_file(parent)[0] is not None:
            return parent
    return None


def _free_name(path: Path) -> Path:
    """``path``, or ``path.1``, ``path.2``, ... : the first name not taken."""
    candidate, n = path, 0
    while os.path.lexists(candidate):
        n += 1
        candidate = path.with_name(f"{path.name}.{n}")
    return candidate


class ResultStore:
    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.jobs_dir = self.root / JOBS_DIR
        self.jsonl = self.root / JSONL
        self.manifest = self.root / SUITE_FILE
        self.lock_path = self.root / LOCK_FILE
        self._lock_fd: int | None = None
        self.notes: list[str] = []  # what opening found and repaired, for the run to print

    # --- opening ----------------------------------------------------------------------------
    def check_writable(self, suite_name: str) -> dict[str, Any] | None:
        """Refuse (SpecError, nothing written) unless the folder is new, empty or this
        suite's own, holds no link or special file where seqbench reads or writes, and is not
        inside another results folder; return its suite.json when it has one."""
        root, flag = self.root, "--out"
        if os.path.lexists(root) and not root.is_dir():
            raise SpecError(flag, str(root), "must be a directory (it is a file)")
        outer = enclosing_results_dir(root)
        if outer is not None:
            raise SpecError(flag, str(root), f"is inside the results directory {outer}; "
                            "choose a folder outside it")
        if not root.exists():
            return None
        existing, problem = read_suite_file(root)
        if existing is None:
            if not [p for p in root.iterdir() if not self._own_debris(p)]:
                return None  # empty, or all a run that stopped before suite.json left
            if os.path.lexists(self.manifest):
                raise SpecError(flag, str(root), f"holds an unreadable suite.json ({problem}); "
                                "use a fresh directory")
            raise SpecError(flag, str(root), "is a non-empty directory that is not a seqbench "
                            "results directory (no suite.json); choose an empty or new one")
        if existing["suite"] != suite_name:
            raise SpecError(flag, str(root), f"holds results of suite {existing['suite']!r}, "
                            f"not {suite_name!r}; choose another directory")
        for path, kind, ok in ((self.jobs_dir, "a directory", is_real_dir),
                               (self.jsonl, "a regular file", is_regular),
                               (self.lock_path, "a regular file", is_regular),
                               (self.root / DAMAGED, "a regular file", is_regular)):
            if os.path.lexists(path) and not ok(path):
                raise SpecError(flag, str(path), f"must be {kind}, not a symlink or anything "
                                "else; seqbench never writes through links")
        if is_real_dir(self.jobs_dir):
            for path in self.jobs_dir.iterdir():
                if path.name.endswith((".json", ".damaged")) and not is_regular(path):
                    raise SpecError(flag, str(path), "must be a regular file, not a symlink "
                                    "or anything else; seqbench never reads or writes "
                                    "through links")
        if not os.access(root, os.W_OK | os.X_OK) or (
                self.jobs_dir.exists() and not os.access(self.jobs_dir, os.W_OK | os.X_OK)):
            raise SpecError(flag, str(root), "is not writable by this user")
        return existing

    def _own_debris(self, path: Path) -> bool:
        """What a run leaves before it writes suite.json: the lock file, an empty jobs/."""
        if path == self.lock_path:
            return is_regular(path)
        return path == self.jobs_dir and is_real_dir(path) and not any(path.iterdir())

    def open_for(self, suite_name: str, spec_hash: str, spec: dict[str, Any],
                 overrides: list[str] | None = None) -> None:
        """Check the folder (see :meth:`check_writable`), take the lock, record the suite,
        clear what killed writers left and reconcile the two copies of the rows."""
        existing = self.check_writable(suite_name)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise SpecError("--out", str(self.root), f"cannot be created ({exc.strerror})") \
                from None
        if not os.access(self.root, os.W_OK | os.X_OK):
            raise SpecError("--out", str(self.root), "is not writable by this user")
        self.lock()
        try:
            self._open(existing, suite_name, spec_hash, spec, overrides)
        except OSError as exc:  # a read-only or full file system: one line, lock released
            self.close()
            reason = exc.strerror or str(exc)
            raise SpecError("--out", str(self.root), f"cannot be written ({reason})") from None

    def _open(self, existing: dict[str, Any] | None, suite_name: str, spec_hash: str,
              spec: dict[str, Any], overrides: list[str] | None) -> None:
        manifest: dict[str, Any] = existing or {"format": FORMAT, "suite": suite_name}
        changed = existing is None
        if manifest.get("spec_hash") != spec_hash:
            if existing is not None:
                manifest.setdefault("previous_spec_hashes", []).append(existing.get("spec_hash"))
            manifest.update(spec_hash=spec_hash, spec=spec)
            changed = True
        if overrides is not None and manifest.get("overrides") != overrides:
            manifest["overrides"] = overrides
            changed = True
        if changed:
            write_json_atomic(self.manifest, manifest)
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
            try:
                fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
            except OSError as exc:
                raise SpecError("--out", str(self.lock_path), "cannot be opened as a lock file "
                                f"({exc.strerror}); seqbench never writes through links") \
                    from None
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
        """Delete the temporary files of writers killed before their rename (our own names
        only: ``.<file>.<random>.tmp``, regular files)."""
        for folder in (self.root, self.jobs_dir):
            for tmp in folder.glob(".*.tmp"):
                if is_regular(tmp) and tmp.name.count(".") >= 3:
                    with contextlib.suppress(OSError):
                        tmp.unlink()

    # --- reading ----------------------------------------------------------------------------
    def read(self) -> ResultsDir:
        return read_dir(self.root)

    def job_path(self, job_id: str) -> Path:
        return self.jobs_dir / f"{job_id}.json"

    def rows(self) -> list[dict[str, Any]]:
        """Every stored row, reconciled from both copies, in start order."""
        return self.read().rows() if self.root.is_dir() else []

    def finished(self) -> dict[str, str]:
        """job_id -> recorded status, for every job with a row."""
        return self.read().finished() if self.root.is_dir() else {}

    # --- writing ----------------------------------------------------------------------------
    def write(self, row: Row) -> None:
        """Record a row after checking it against the schema: its job file first (atomic),
        then its JSONL line (fsynced). A job recorded before (``--retry``) has its line
        replaced, never duplicated, and every other line is kept."""
        from seqbench.recording.validate import check_row

        data = row.to_dict()
        problems = check_row(data)
        if problems:
            raise RowInvalid(row.job_id, problems)
        path = self.job_path(row.job_id)
        rerun = os.path.lexists(path)
        write_json_atomic(path, data)
        if rerun:
            self._replace_lines({row.job_id: data})
        else:
            _append(self.jsonl, dumps(data) + "\n")

    def _replace_lines(self, new: dict[str, dict[str, Any]]) -> None:
        """Rewrite the JSONL with the rows of ``new`` in place of their old lines (appended if
        they had none); every other line is kept as it was."""
        out: list[str] = []
        done: set[str] = set()
        for _, row in self.read().jsonl_rows:
            job = str(row.get("job_id"))
            if job not in new:
                out.append(dumps(row))
            elif job not in done:  # the first of its old lines becomes the new row
                out.append(dumps(new[job]))
                done.add(job)
        out += [dumps(r) for j, r in new.items() if j not in done]
        write_text_atomic(self.jsonl, "".join(line + "\n" for line in out))

    def repair(self) -> None:
        """Reconcile the two copies of every row (see the module docstring); what was done
        and what conflicts remain go to :attr:`notes`."""
        found = self.read()
        damaged = [p for p in found.problems if p.where.startswith(str(self.jsonl) + ":")]
        if damaged:
            raw = read_bytes_nofollow(self.jsonl, limit=1 << 40).split(b"\n")
            bad = {int(p.where.rsplit(":", 1)[1]) for p in damaged}
            _append(self.root / DAMAGED, b"".join(raw[n - 1] + b"\n" for n in sorted(bad)))
            write_text_atomic(self.jsonl, "".join(dumps(r) + "\n" for _, r in found.jsonl_rows))
            self.notes.append(f"moved {len(bad)} unreadable line(s) of {JSONL} to {DAMAGED}")
        restored = found.only_in_jsonl()
        for job_id in restored:
            path = self.job_path(job_id)
            if os.path.lexists(path):  # an unreadable job file: kept aside, never overwritten
                aside = _free_name(path.with_name(path.name + ".damaged"))
                os.rename(path, aside)
                self.notes.append(f"moved the unreadable {path.name} to {aside.name}")
            write_json_atomic(path, found.jsonl_latest[job_id])
        if restored:
            self.notes.append(f"restored {len(restored)} row(s) found only in {JSONL} to "
                              f"{JOBS_DIR}/")
        appended = found.only_in_jobs()
        if appended:
            _append(self.jsonl, "".join(dumps(found.job_rows[j][1]) + "\n" for j in appended))
            self.notes.append(f"appended {len(appended)} row(s) found only in {JOBS_DIR}/ to "
                              f"{JSONL}")
        conflicts = found.conflicts()
        if conflicts:
            shown = ", ".join(conflicts[:3]) + (", ..." if len(conflicts) > 3 else "")
            self.notes.append(f"{len(conflicts)} row(s) differ between {JOBS_DIR}/ and {JSONL} "
                              f"(kept both as they are; the job file is used): {shown}")
        for problem in found.problems:
            if problem not in damaged:
                self.notes.append(f"ignored {problem}")
