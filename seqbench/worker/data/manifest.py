"""Dataset manifests: what files a dataset needs, their sizes and checksums, and how to get them.

One JSON file per dataset in ``seqbench/worker/data/manifests/``. A *local* dataset lists files (and
directories of many small files) relative to the data directory; an *embedded* dataset names
the package that ships it. :func:`require` is the cheap check a task runs before any job
(existence and size); :func:`verify` is what ``seqbench data check`` runs (checksums, file
counts). Both name the missing or corrupt file, the path where it was expected and how to
obtain it, in one line.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.util
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from seqbench.errors import SpecError

Status = Literal["ok", "missing", "incomplete", "corrupt", "unverified", "unavailable"]


@dataclass(frozen=True)
class FileSpec:
    path: str  # relative to the data directory
    size: int | None = None  # bytes; None where no standard size is known
    sha256: str | None = None
    md5: str | None = None  # only where the publisher or a standard loader gives md5 alone
    alternatives: tuple[FileSpec, ...] = ()  # equivalent forms, e.g. the decompressed file

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileSpec:
        alts = tuple(cls.from_json(a) for a in d.get("alternatives", ()))
        return cls(d["path"], d.get("size"), d.get("sha256"), d.get("md5"), alts)

    @property
    def forms(self) -> tuple[FileSpec, ...]:
        return (self, *self.alternatives)


@dataclass(frozen=True)
class DirSpec:
    path: str  # relative to the data directory
    suffix: str = ""  # files counted by `seqbench data check`
    count: int | None = None  # expected number of such files (recursively)
    recursive: bool = False


@dataclass(frozen=True)
class Manifest:
    name: str
    title: str
    kind: Literal["local", "embedded"]
    licence: str
    source: str
    obtain: str  # one line: how to get the files into the data directory
    citation: str = ""
    size: str = ""  # human note: download and disk size, or the package's install size
    package: str = ""  # embedded: the distribution that ships it (pip name)
    module: str = ""  # embedded: the module whose importability is checked
    extra: str = ""  # the seqbench extra that installs the package
    verify_hook: str = ""  # "module:function" for checks beyond files (the stdlib corpus)
    files: tuple[FileSpec, ...] = ()
    dirs: tuple[DirSpec, ...] = ()
    data: dict[str, Any] = field(default_factory=dict)  # anything else the loader needs

    def where(self, data_dir: Path) -> Path:
        """The folder under ``data_dir`` holding this dataset (first path component)."""
        first = (self.files or self.dirs)[0].path.split("/")[0] if (self.files or self.dirs) else ""
        return data_dir / first


_KNOWN_KEYS = {"name", "title", "kind", "licence", "source", "obtain", "citation", "size",
               "package", "module", "extra", "verify_hook", "files", "dirs", "data"}


@functools.cache
def load_manifest(name: str) -> Manifest:
    try:
        folder = resources.files("seqbench.worker.data").joinpath("manifests")
        text = folder.joinpath(f"{name}.json").read_text()
    except FileNotFoundError:
        raise SpecError("dataset", name, f"known datasets: {', '.join(manifest_names())}") from None
    raw = json.loads(text)
    unknown = set(raw) - _KNOWN_KEYS
    if unknown:  # a typo in a manifest must not silently drop a check
        raise ValueError(f"manifest {name}: unknown keys {sorted(unknown)}")
    return Manifest(
        **{k: v for k, v in raw.items() if k not in ("files", "dirs")},
        files=tuple(FileSpec.from_json(f) for f in raw.get("files", ())),
        dirs=tuple(DirSpec(**d) for d in raw.get("dirs", ())),
    )


def manifest_names() -> list[str]:
    folder = resources.files("seqbench.worker.data").joinpath("manifests")
    return sorted(p.name.removesuffix(".json") for p in folder.iterdir()
                  if p.name.endswith(".json"))


# --- checks ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Problem:
    status: Status  # missing | corrupt | incomplete | unavailable
    path: Path
    detail: str


def _file_digest(path: Path, algorithm: str) -> str:
    digest = hashlib.new(algorithm)
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def locate(spec: FileSpec, data_dir: Path) -> tuple[Path, FileSpec] | None:
    """The first form of ``spec`` present under ``data_dir``, or None."""
    for form in spec.forms:
        path = data_dir / form.path
        if path.is_file():
            return path, form
    return None


def _file_problem(spec: FileSpec, data_dir: Path, deep: bool) -> Problem | None:
    found = locate(spec, data_dir)
    if found is None:
        also = [f.path for f in spec.alternatives]
        detail = "file is missing" + (f" (also accepted: {', '.join(also)})" if also else "")
        return Problem("missing", data_dir / spec.path, detail)
    path, form = found
    if form.size is not None and (actual := path.stat().st_size) != form.size:
        return Problem("corrupt", path, f"has {actual:,} bytes, expected {form.size:,}")
    if deep:
        for algorithm in ("sha256", "md5"):
            expected = getattr(form, algorithm)
            if expected and (actual_digest := _file_digest(path, algorithm)) != expected:
                return Problem("corrupt", path, f"{algorithm} {actual_digest[:16]}..., "
                                                f"expected {expected[:16]}...")
    return None


def _count_files(folder: Path, suffix: str, recursive: bool) -> int:
    if recursive:
        return sum(1 for _, _, names in os.walk(folder) for n in names if n.endswith(suffix))
    with os.scandir(folder) as entries:
        return sum(1 for e in entries if e.name.endswith(suffix) and e.is_file())


def _dir_problem(spec: DirSpec, data_dir: Path, deep: bool) -> Problem | None:
    folder = data_dir / spec.path
    if not folder.is_dir():
        return Problem("missing", folder, "directory is missing")
    if deep and spec.count is not None:
        n = _count_files(folder, spec.suffix, spec.recursive)
        if n != spec.count:
            return Problem("incomplete", folder,
                           f"holds {n:,} {spec.suffix or ''} files, expected {spec.count:,}")
    return None


def problems(manifest: Manifest, data_dir: Path, deep: bool = False) -> list[Problem]:
    """Every problem with a local dataset's files (deep: checksums and file counts too)."""
    found = [_file_problem(f, data_dir, deep) for f in manifest.files]
    found += [_dir_problem(d, data_dir, deep) for d in manifest.dirs]
    return [p for p in found if p is not None]


def _hook(manifest: Manifest) -> Callable[..., Any] | None:
    if not manifest.verify_hook:
        return None
    module, _, attr = manifest.verify_hook.partition(":")
    return getattr(importlib.import_module(module), attr)


def data_error(manifest: Manifest, problem: Problem, data_dir: Path | None = None) -> SpecError:
    """The one-line error for a problem: the file, what is wrong, where, how to get it."""
    where = f"data dir {data_dir}; " if data_dir is not None else ""
    how = manifest.obtain if problem.status in ("missing", "incomplete", "corrupt") else ""
    return SpecError(f"data.{manifest.name}", str(problem.path),
                     f"{problem.detail}; {where}{how}".rstrip("; "))


def require(name: str, data_dir: Path) -> Manifest:
    """Cheap pre-flight check (existence and size): raise a one-line SpecError on a problem."""
    manifest = load_manifest(name)
    found = problems(manifest, data_dir, deep=False)
    if found:
        raise data_error(manifest, found[0], data_dir)
    return manifest


@dataclass(frozen=True)
class Report:
    name: str
    status: Status
    where: str  # the path checked, or the package
    detail: str = ""
    problem: Problem | None = None


def package_missing(manifest: Manifest) -> str | None:
    """None if the embedded dataset's package is importable (without importing it)."""
    if manifest.module and importlib.util.find_spec(manifest.module) is None:
        return f"{manifest.package} is not installed: pip install 'seqbench[{manifest.extra}]'"
    return None


def verify(name: str, data_dir: Path, deep: bool = True) -> Report:
    """Full check of one dataset for ``seqbench data check``."""
    manifest = load_manifest(name)
    if manifest.kind == "embedded":
        missing = package_missing(manifest)
        if missing:
            return Report(name, "unavailable", manifest.package, missing)
        hook = _hook(manifest)
        if hook is None:
            return Report(name, "ok", manifest.package, f"ships with {manifest.package}")
        return hook(manifest, deep=deep)
    root = manifest.where(data_dir)
    found = problems(manifest, data_dir, deep=deep)
    n_expected = len(manifest.files) + len(manifest.dirs)
    if not found:
        checked = sum(1 for f in manifest.files
                      if (loc := locate(f, data_dir)) and (loc[1].sha256 or loc[1].md5))
        how = f", {checked} checksummed" if deep and checked else ""
        return Report(name, "ok", str(root), f"{n_expected} entries{how}")
    if all(p.status == "missing" for p in found) and len(found) == n_expected:
        return Report(name, "missing", str(root), manifest.obtain, found[0])
    first = found[0]
    status: Status = "incomplete" if first.status == "missing" else first.status
    return Report(name, status, str(first.path), first.detail, first)
