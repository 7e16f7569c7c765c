"""The one reader of results: a results directory (both copies of every row), a ``.jsonl`` file
or one job's ``.json`` file. The store, ``seqbench validate``, the results loader, ``compare``
and the nightly run all read through it.

A results directory keeps every row twice: ``jobs/<job_id>.json`` (one atomic file per job)
and a line of ``results.jsonl``. :class:`ResultsDir` reads both and reconciles them, never
letting one copy erase the other: a row present in only one copy is kept; a row that differs
between them is a *conflict* (reported; the job file, written last and atomically, is the one
used). Nothing here writes; the store repairs what the reader finds.

Damage is reported, never fatal: an unreadable line or file becomes a problem with its
location; a file that is not a regular file (a symlink, a FIFO) is not read at all.
"""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from seqbench.errors import SpecError

JOBS_DIR = "jobs"
JSONL = "results.jsonl"
SUITE_FILE = "suite.json"
LOCK_FILE = ".lock"
FORMAT = "seqbench-results/1"  # the marker of a results directory, in suite.json
MAX_ROW_FILE_BYTES = 64 << 20  # a row is kilobytes; anything larger is not ours


@dataclass(frozen=True)
class Problem:
    where: str  # file, and line for JSONL rows
    job_id: str  # '' when the problem is not about one row
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.job_id + ': ' if self.job_id else ''}{self.message}"


def is_regular(path: Path) -> bool:
    """A regular file, not a symlink (checked without following links)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def is_real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def read_bytes_nofollow(path: Path, limit: int = MAX_ROW_FILE_BYTES) -> bytes:
    """A regular file's bytes, refusing symlinks (``O_NOFOLLOW``) and oversized files."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise OSError(f"{path} is not a regular file")
        if info.st_size > limit:  # refused before a byte is read
            raise OSError(f"{path} is larger than {limit} bytes")
        chunks, size = [], 0
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
            size += len(chunk)
            if size > limit:
                raise OSError(f"{path} is larger than {limit} bytes")
        return b"".join(chunks)
    finally:
        os.close(fd)


def parse_jsonl(data: bytes, where: str) -> tuple[list[tuple[int, dict[str, Any]]],
                                                  list[Problem]]:
    """(line number, row) for every JSON-object line, and a problem for every other line: a
    truncated last line (a writer killed mid-append) is reported, never fatal."""
    rows: list[tuple[int, dict[str, Any]]] = []
    problems: list[Problem] = []
    lines = data.split(b"\n")
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line.decode("utf-8"))
        except (ValueError, RecursionError):
            last = number == len(lines)  # no newline after it: the append was cut short
            problems.append(Problem(f"{where}:{number}", "", "truncated line (a writer was "
                                    "killed mid-append)" if last else "not a valid JSON row"))
            continue
        if not isinstance(row, dict):
            problems.append(Problem(f"{where}:{number}", "",
                                    f"a JSON {type(row).__name__}, not a row object"))
            continue
        rows.append((number, row))
    return rows, problems


def read_jsonl(path: Path) -> tuple[list[tuple[int, dict[str, Any]]], list[Problem]]:
    try:
        data = read_bytes_nofollow(path, limit=1 << 40)
    except FileNotFoundError:
        return [], []
    except OSError as exc:
        return [], [Problem(str(path), "", f"cannot be read ({exc})")]
    return parse_jsonl(data, str(path))


def read_job_file(path: Path) -> tuple[dict[str, Any] | None, Problem | None]:
    try:
        data = read_bytes_nofollow(path)
        row = json.loads(data.decode("utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        return None, Problem(str(path), "", f"unreadable job file ({type(exc).__name__})")
    if not isinstance(row, dict):
        return None, Problem(str(path), "", f"a JSON {type(row).__name__}, not a row object")
    if row.get("job_id") != path.stem:
        return row, Problem(str(path), str(row.get("job_id", "")),
                            f"holds job {row.get('job_id')!r}, not {path.stem!r}")
    return row, None


def same_row(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True,
                                                                      default=str)


@dataclass
class ResultsDir:
    """Everything a results directory holds, both copies of every row."""

    root: Path
    suite: dict[str, Any] | None = None  # suite.json, when readable
    suite_problem: str = ""  # why suite.json is missing or unreadable ('' when fine)
    job_rows: dict[str, tuple[Path, dict[str, Any]]] = field(default_factory=dict)
    jsonl_rows: list[tuple[int, dict[str, Any]]] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)  # unreadable lines and files, links
    has_jobs_dir: bool = False
    has_jsonl: bool = False

    @property
    def jsonl(self) -> Path:
        return self.root / JSONL

    @property
    def jsonl_latest(self) -> dict[str, dict[str, Any]]:
        """job_id -> its last line in results.jsonl."""
        out: dict[str, dict[str, Any]] = {}
        for _, row in self.jsonl_rows:
            if isinstance(row.get("job_id"), str):
                out[row["job_id"]] = row
        return out

    def only_in_jsonl(self) -> list[str]:
        return [j for j in self.jsonl_latest if j not in self.job_rows]

    def only_in_jobs(self) -> list[str]:
        in_jsonl = self.jsonl_latest
        return [j for j in self.job_rows if j not in in_jsonl]

    def conflicts(self) -> list[str]:
        """Jobs whose two copies differ (a row edited in one copy only)."""
        in_jsonl = self.jsonl_latest
        return [j for j, (_, row) in self.job_rows.items()
                if j in in_jsonl and not same_row(row, in_jsonl[j])]

    def rows(self) -> list[dict[str, Any]]:
        """Every row, reconciled (the job file where both copies exist), in start order."""
        merged = dict(self.jsonl_latest)
        merged.update({j: row for j, (_, row) in self.job_rows.items()})
        return sorted(merged.values(), key=lambda r: (str(r.get("started_at", "")),
                                                      str(r.get("job_id", ""))))

    def finished(self) -> dict[str, str]:
        """job_id -> recorded status, for every reconciled row."""
        return {str(r["job_id"]): str(r.get("status")) for r in self.rows()}


def read_suite_file(root: Path) -> tuple[dict[str, Any] | None, str]:
    path = root / SUITE_FILE
    if not os.path.lexists(path):
        return None, "no suite.json (the marker of a seqbench results directory)"
    if not is_regular(path):
        return None, "suite.json is not a regular file (a symlink?)"
    try:
        data = json.loads(read_bytes_nofollow(path).decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None, "suite.json is unreadable"
    if not isinstance(data, dict) or not isinstance(data.get("suite"), str):
        return None, "suite.json does not name a suite"
    return data, ""


def read_dir(root: str | os.PathLike[str]) -> ResultsDir:
    """Read a results directory (see :class:`ResultsDir`); a path that is not a directory is
    bad input."""
    root = Path(root)
    if not root.is_dir():
        raise SpecError("results", str(root), "no such directory" if not root.exists()
                        else "not a directory")
    out = ResultsDir(root)
    out.suite, out.suite_problem = read_suite_file(root)
    jsonl, jobs = root / JSONL, root / JOBS_DIR
    if os.path.lexists(jsonl):
        out.has_jsonl = True
        if is_regular(jsonl):
            out.jsonl_rows, problems = read_jsonl(jsonl)
            out.problems += problems
        else:
            out.problems.append(Problem(str(jsonl), "", "not a regular file (a symlink or a "
                                        "directory); not read"))
    if os.path.lexists(jobs):
        out.has_jobs_dir = True
        if not is_real_dir(jobs):
            out.problems.append(Problem(str(jobs), "", "not a directory (a symlink or a "
                                        "file); not read"))
        else:
            for path in sorted(jobs.glob("*.json")):
                if not is_regular(path):
                    out.problems.append(Problem(str(path), "", "not a regular file (a "
                                                "symlink?); not read"))
                    continue
                row, problem = read_job_file(path)
                if problem is not None:
                    out.problems.append(problem)
                if row is not None and row.get("job_id") == path.stem:
                    out.job_rows[path.stem] = (path, row)
    return out


def read_rows(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], list[Problem]]:
    """The rows of a results directory (reconciled), a ``.jsonl`` file or a job's ``.json``
    file, and what was wrong with them. Anything else is bad input."""
    path = Path(path)
    if path.is_dir():
        found = read_dir(path)
        if not found.has_jsonl and not found.has_jobs_dir:
            raise SpecError("results", str(path),
                            f"a results directory holds {JOBS_DIR}/ or {JSONL}; this one "
                            "holds neither")
        problems = list(found.problems)
        problems += [Problem(str(found.jsonl), j, "differs between jobs/ and results.jsonl "
                             "(one copy was edited)") for j in found.conflicts()]
        return found.rows(), problems
    if not path.exists():
        raise SpecError("results", str(path), "no such file or directory")
    if path.suffix == ".jsonl":
        rows, problems = read_jsonl(path)
        return [r for _, r in rows], problems
    if path.suffix == ".json":
        row, problem = read_job_file(path)
        return ([row] if row is not None else []), ([problem] if problem else [])
    raise SpecError("results", str(path), "expected a results directory, .jsonl or .json file")
