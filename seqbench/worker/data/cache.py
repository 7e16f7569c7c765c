"""A cache for generated datasets (ListOps, Pathfinder): generate once per seed and parameters,
reuse when the manifest matches.

A generated dataset lives in ``<data dir>/generated/<generator>/<key>/`` as one ``data.npz``
(numpy arrays) and a ``manifest.json`` beside it recording the generator, its version, the
parameters, the seed, the example counts, the sha256 of ``data.npz`` and the numpy version
it was written with. :func:`load_or_generate` returns the cached arrays when the manifest
matches the request and the file's checksum is right, and otherwise generates them, writes
both files atomically (a temporary name, then ``os.replace``; concurrent workers that race
write identical bytes) and returns them. The data directory is the one every local dataset
uses (:mod:`seqbench.worker.data.paths`); if it cannot be written, the arrays are generated
in memory and nothing is cached.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from seqbench.worker.data.paths import resolve_data_dir

Arrays = dict[str, np.ndarray]


def cache_key(generator: str, version: int, params: dict[str, Any]) -> str:
    """16 hex digits naming the cache folder: a hash of the generator, version and params."""
    text = json.dumps({"generator": generator, "version": version, "params": params},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cache_dir(generator: str, version: int, params: dict[str, Any],
              data_dir: Path | None = None) -> Path:
    root = resolve_data_dir() if data_dir is None else data_dir
    return root / "generated" / generator / cache_key(generator, version, params)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_cached(folder: Path, expected: dict[str, Any]) -> tuple[Arrays, dict] | None:
    """The cached arrays and manifest if ``folder`` holds a matching, intact copy, else None."""
    manifest_path, data_path = folder / "manifest.json", folder / "data.npz"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    if any(manifest.get(k) != v for k, v in expected.items()):
        return None
    if not data_path.is_file() or _sha256(data_path) != manifest.get("sha256"):
        return None
    with np.load(data_path, allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}, manifest


def load_or_generate(generator: str, version: int, params: dict[str, Any], seed: int,
                     make: Callable[[], Arrays], data_dir: Path | None = None,
                     ) -> tuple[Arrays, dict]:
    """Cached arrays for ``(generator, version, params, seed)``, generating them if needed.

    Returns ``(arrays, manifest)``; the manifest has ``"cached"``: where the data came from
    (``"hit"``, ``"written"`` or ``"memory"`` when the data dir is not writable).
    """
    full = {**params, "seed": seed}
    folder = cache_dir(generator, version, full, data_dir)
    expected = {"generator": generator, "version": version, "params": params, "seed": seed}
    found = read_cached(folder, expected)
    if found is not None:
        arrays, manifest = found
        return arrays, {**manifest, "cached": "hit", "path": str(folder)}
    arrays = make()
    base = {**expected, "counts": {k: len(v) for k, v in arrays.items()},
            "numpy": np.__version__, "file": "data.npz"}
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".data.npz.")
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(f, **arrays)  # type: ignore[arg-type]
            manifest = {**base, "sha256": _sha256(Path(tmp))}
            os.replace(tmp, folder / "data.npz")
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _atomic_write(folder / "manifest.json", json.dumps(manifest, indent=2).encode())
    except OSError:
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)  # type: ignore[arg-type]
        manifest = {**base, "sha256": hashlib.sha256(buffer.getvalue()).hexdigest()}
        return arrays, {**manifest, "cached": "memory", "path": ""}
    return arrays, {**manifest, "cached": "written", "path": str(folder)}


def generated_source(generator: str, version: int, seed: int,
                     manifest: dict[str, Any]) -> dict[str, Any]:
    """A generated dataset's ``data_source`` for the row: generator, version, seed, checksum
    and where the data came from (the cache, or generated in memory)."""
    return {"generator": generator, "version": version, "seed": seed,
            "sha256": manifest["sha256"], "cache": manifest["cached"]}
