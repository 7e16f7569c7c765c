"""Dataset manifests: what files a dataset needs, their sizes and checksums, and how to get them.

One JSON file per dataset in ``seqbench/worker/data/manifests/``. A *local* dataset lists files (and
directories of many small files) relative to the data directory; an *embedded* dataset names
the package that ships it. :func:`require` is the cheap check a task runs before any job
(existence and size); :func:`verify` is what ``seqbench data check`` runs (checksums, file
counts). Both name the missing or corrupt file, the path where it was expected and how to
obtain it, in one line.

A dataset whose files are *missing* is a :class:`DataMissing`: still a
:class:`~seqbench.errors.SpecError` (``seqbench data check`` exits 2 on it), but also a
:class:`~seqbench.errors.BackendUnavailable`, so spec loading lets the sweep go on
(:mod:`seqbench.config.resolve`) and the worker records the job as ``unavailable`` with the
download instructions as its error, like a missing kernel backend. A file that is there but
wrong (size, checksum, format) stays a plain SpecError: bad input, exit 2.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib
import importlib.util
import json
import os
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from seqbench.errors import BackendUnavailable, SpecError

Status = Literal["ok", "missing", "incomplete", "corrupt", "unverified", "unavailable"]


@dataclass(frozen=True)
class FileSpec:
    path: str  # relative to the data directory
    size: int | None = None  # bytes; None where no standard size is known
    sha256: str | None = None
    md5: str | None = None  # only where the publisher or a standard loader gives md5 alone
    alternatives: tuple[FileSpec, ...] = ()  # equivalent forms, e.g. the decompressed file
    content_size: int | None = None  # a .gz file: bytes after decompression
    content_sha256: str | None = None  # a .gz file: sha256 of the decompressed bytes

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> FileSpec:
        alts = tuple(cls.from_json(a) for a in d.get("alternatives", ()))
        return cls(d["path"], d.get("size"), d.get("sha256"), d.get("md5"), alts,
                   d.get("content_size"), d.get("content_sha256"))

    @property
    def forms(self) -> tuple[FileSpec, ...]:
        return (self, *self.alternatives)

    def content(self) -> tuple[int | None, str | None]:
        """Size and sha256 of the decompressed data, from the explicit ``content_*`` fields
        of any form, else from the decompressed form (the path without ``.gz``)."""
        size = next((f.content_size for f in self.forms if f.content_size is not None), None)
        digest = next((f.content_sha256 for f in self.forms if f.content_sha256), None)
        raw = next((f for f in self.forms if not f.path.endswith(".gz")), None)
        if raw is not None:
            size = raw.size if size is None else size
            digest = raw.sha256 if digest is None else digest
        return size, digest


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
    status: Status  # missing | corrupt | incomplete | unavailable | unverified
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


def gzip_isize(path: Path) -> int | None:
    """The decompressed size mod 2^32 that a gzip file's trailer records (None: not gzip)."""
    with path.open("rb") as f:
        if f.read(2) != b"\x1f\x8b":
            return None
        f.seek(-4, os.SEEK_END)
        return int.from_bytes(f.read(4), "little")


def _gunzip_digest(path: Path) -> tuple[int, str] | None:
    """``(size, sha256)`` of a gzip file's decompressed bytes, streamed (None: unreadable)."""
    digest, size = hashlib.sha256(), 0
    try:
        with gzip.open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
                size += len(block)
    except (OSError, EOFError, zlib.error):
        return None
    return size, digest.hexdigest()


def _checksums_match(path: Path, form: FileSpec) -> str | None:
    """None if ``path`` has every checksum ``form`` gives, else what differs."""
    for algorithm in ("sha256", "md5"):
        expected = getattr(form, algorithm)
        if expected and (actual := _file_digest(path, algorithm)) != expected:
            return f"{algorithm} {actual[:16]}..., expected {expected[:16]}..."
    return None


def _file_problem(spec: FileSpec, data_dir: Path, deep: bool) -> Problem | None:
    """What is wrong with one manifest file, or None.

    A file is accepted when its content is right, not only its exact bytes: a ``.gz`` form
    whose size or checksum differs from the published one (a re-compressed copy) passes if
    its decompressed bytes match the dataset's content identity (:meth:`FileSpec.content`):
    the cheap check compares the size in the gzip trailer, the deep check the sha256 of the
    decompressed bytes. Without a known content checksum such a copy is ``unverified``.
    """
    found = locate(spec, data_dir)
    if found is None:
        also = [f.path for f in spec.alternatives]
        detail = "file is missing" + (f" (also accepted: {', '.join(also)})" if also else "")
        return Problem("missing", data_dir / spec.path, detail)
    path, form = found
    actual = path.stat().st_size
    exact_size = form.size is None or actual == form.size
    if not path.name.endswith(".gz"):
        if not exact_size:
            return Problem("corrupt", path, f"has {actual:,} bytes, expected {form.size:,}")
        differs = _checksums_match(path, form) if deep else None
        return Problem("corrupt", path, differs) if differs else None
    if exact_size and (not deep or _checksums_match(path, form) is None):
        return None  # the published file
    content_size, content_sha = spec.content()
    published = (f"has {actual:,} bytes, expected {form.size:,}" if not exact_size
                 else _checksums_match(path, form))
    if not deep:
        isize = gzip_isize(path)
        if content_size is not None and isize == content_size % 2**32:
            return None  # a re-compressed copy of the right size; `data check` hashes it
        extra = (" and is not a gzip file" if isize is None else
                 f" and decompresses to {isize:,} bytes, expected {content_size:,}"
                 if content_size is not None else "")
        return Problem("corrupt", path, f"{published}{extra}")
    unpacked = _gunzip_digest(path)
    if unpacked is None:
        return Problem("corrupt", path, f"{published} and is not a readable gzip file")
    size, digest = unpacked
    if content_size is not None and size != content_size:
        return Problem("corrupt", path, f"{published}; decompresses to {size:,} bytes, "
                                        f"expected {content_size:,}")
    if content_sha is None:
        return Problem("unverified", path, f"{published}; decompresses to the right size, but "
                                           "no checksum of the decompressed data is known")
    if digest != content_sha:
        return Problem("corrupt", path, f"{published}; decompressed sha256 {digest[:16]}..., "
                                        f"expected {content_sha[:16]}...")
    return None  # re-compressed, same content


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


class DataMissing(SpecError, BackendUnavailable):
    """A local dataset's files are not in the data directory: the job cannot run *here*.

    Spec loading tolerates it (the sweep goes on) and the worker records ``unavailable``
    (it is a :class:`~seqbench.errors.BackendUnavailable`); the message names the file, the
    data directory and what to download, with ``<data dir>`` in the manifest's instructions
    replaced by the directory itself."""


def obtain_text(manifest: Manifest, data_dir: Path | None) -> str:
    """The manifest's instructions, ``<data dir>`` spelled out when the directory is known."""
    return (manifest.obtain if data_dir is None
            else manifest.obtain.replace("<data dir>", str(data_dir)))


def data_error(manifest: Manifest, problem: Problem, data_dir: Path | None = None) -> SpecError:
    """The one-line error for a problem: the file, what is wrong, where, how to get it
    (a :class:`DataMissing` when the file or folder is missing)."""
    where = f"data dir {data_dir}; " if data_dir is not None else ""
    how = (obtain_text(manifest, data_dir)
           if problem.status in ("missing", "incomplete", "corrupt") else "")
    cls = DataMissing if problem.status == "missing" else SpecError
    return cls(f"data.{manifest.name}", str(problem.path),
               f"{problem.detail}; {where}{how}".rstrip("; "))


def blocked(path: Path, data_dir: Path) -> str | None:
    """Why ``path`` (under ``data_dir``) cannot be looked for, if it cannot: the deepest part of
    it that exists is not a directory, or is a directory that cannot be listed. None when the
    path is simply absent below a readable directory (or absent altogether)."""
    try:
        parts = path.relative_to(data_dir).parts[:-1]
    except ValueError:
        parts = ()
    for folder in [data_dir, *(data_dir.joinpath(*parts[:i + 1]) for i in range(len(parts)))]:
        if not folder.exists() and not folder.is_symlink():
            return None  # absent from here on: missing, not blocked
        if not folder.is_dir():
            return f"{folder} is not a directory"
        try:
            with os.scandir(folder):
                pass
        except OSError as exc:
            return f"{folder} cannot be read ({exc.strerror or exc})"
    return None


def require(name: str, data_dir: Path) -> Manifest:
    """Cheap pre-flight check (existence and size): raise a one-line SpecError on a problem.

    A file that is there but wrong is reported before one that is missing: a wrong file is bad
    input (a plain SpecError), while missing files alone are :class:`DataMissing`. A data
    directory (or a folder inside it) that is a file or cannot be read is bad input too: the
    files may be there, seqbench cannot tell."""
    manifest = load_manifest(name)
    wanted = [data_dir / f.path for f in manifest.files] + [data_dir / d.path
                                                            for d in manifest.dirs]
    for path in wanted:  # before any stat below an unreadable folder
        why = blocked(path, data_dir)
        if why is not None:
            raise SpecError(f"data.{manifest.name}", str(path),
                            f"{why}; the data dir {data_dir} (--data-dir or $SEQBENCH_DATA_DIR) "
                            "and its dataset folders must be readable directories")
    found = problems(manifest, data_dir, deep=False)
    if found:
        first = min(found, key=lambda p: p.status == "missing")  # stable: wrong files first
        raise data_error(manifest, first, data_dir)
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
    failures = [p for p in found if p.status != "unverified"]
    if not failures and found:  # present, right size, content not checkable
        return Report(name, "unverified", str(found[0].path), found[0].detail, found[0])
    if not found:
        checked = sum(1 for f in manifest.files
                      if (loc := locate(f, data_dir))
                      and (loc[1].sha256 or loc[1].md5 or f.content()[1]))
        how = f", {checked} checksummed" if deep and checked else ""
        return Report(name, "ok", str(root), f"{n_expected} entries{how}")
    found = failures
    if all(p.status == "missing" for p in found) and len(found) == n_expected:
        return Report(name, "missing", str(root), manifest.obtain, found[0])
    first = found[0]
    status: Status = "incomplete" if first.status == "missing" else first.status
    return Report(name, status, str(first.path), first.detail, first)
