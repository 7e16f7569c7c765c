"""Build, cache and load seqbench's fused CPU kernels (``csrc/cpu_kernels.cpp``).

The kernels are plain C++17 with a C ABI and no torch headers: the machine's ``g++`` compiles
them, and Python calls them through :mod:`ctypes` with tensors' data pointers (the autograd
Functions live next to their PyTorch references in ``selective_scan.py``, ``ssd.py``,
``conv.py`` and ``linear_scan.py``). Each call goes through :func:`call`, inside a
``torch.profiler.record_function`` range named ``seqbench::<kernel>_<fwd|bwd>``, so a profile
of a forward shows which fused kernel ran (:mod:`seqbench.worker.kernels_seen`). The shared
library is cached on disk, keyed by a hash of the source, the compiler's version, the flags and
the CPU's feature flags (the build uses ``-march=native``), in
``$SEQBENCH_KERNEL_DIR`` or else ``$XDG_CACHE_HOME/seqbench/kernels``
(``~/.cache/seqbench/kernels``). Concurrent processes take a file lock, so one builds and the
others wait and load; the library is renamed into place whole.

The library is loaded when this module is imported: in a worker zygote (``preload()`` imports
every model module) that happens once, before any job forks, so a job never pays a build or a
JIT, and a cold build is paid once per machine (and once per CI run, whose tests share the
cache). Nothing here may break a job: without a compiler, with a failing build, or with
``SEQBENCH_CPU_KERNELS=0`` in the environment, :func:`library` returns None,
:func:`unavailable_reason` says why, and the mixers run their pure-PyTorch paths (and record
that in ``kernel_path``).

Why this and not the alternatives, measured on this project's machine (2-core Xeon with
AVX-512 in a VM shared with other work, load average 3-4; g++ 12.2, torch 2.13 CPU, Python
3.11), the same selective-scan kernel in each:

=============================  ==================  =====================  ====================
candidate                      install             cold build / JIT       every process
=============================  ==================  =====================  ====================
g++ + ctypes (this module)     nothing: g++ and    7 s CPU, 11 s wall,    import + dlopen
                               the torch wheel     once per machine       0.06-0.10 s; first
                               are on the image                           call 2 ms, no JIT
torch.utils.cpp_extension      nothing (ninja and  82 s wall (torch/      0.01 s after
(torch/extension.h, pybind11)  g++ on the image)   extension.h headers)   importing it
numba 0.68.1                   +208 MB (llvmlite   4.1 s for the forward  0.5 s cache load per
                               173 MB), pip 10 s   alone (cache=True)     function; the code
                                                                          ran 7.5x slower
                                                                          (scalar exp)
=============================  ==================  =====================  ====================

The kernel itself only needs pointers and sizes, so torch's headers (80 s of the extension's
build) buy nothing here; numba's JIT is paid per process for every kernel that is not cached,
and without Intel's SVML it leaves ``exp`` scalar, the scan's main cost.
"""

from __future__ import annotations

import ctypes
import fcntl
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import overload

import torch

SOURCE = Path(__file__).with_name("csrc") / "cpu_kernels.cpp"
ABI_VERSION = 2  # must match kAbiVersion in the source
DISABLE_ENV = "SEQBENCH_CPU_KERNELS"  # "0" turns the fused kernels off
DIR_ENV = "SEQBENCH_KERNEL_DIR"
# -mprefer-vector-width=512: gcc's default for AVX-512 machines is 256-bit vectors; 512 measured
# 1.4x faster on the scan's forward here. -fopenmp-simd honours `#pragma omp simd` without
# linking an OpenMP runtime (threads are std::thread, see the source).
FLAGS = ["-O3", "-march=native", "-mprefer-vector-width=512", "-std=c++17", "-fPIC", "-shared",
         "-pthread", "-fopenmp-simd", "-fno-math-errno"]
BUILD_TIMEOUT_S = 300.0

_lock = threading.Lock()
_state: dict[str, object] = {}


def cache_dir() -> Path:
    """Where built libraries are kept (created on first build)."""
    if os.environ.get(DIR_ENV):
        return Path(os.environ[DIR_ENV])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "seqbench" / "kernels"


def _cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def _compiler() -> tuple[str, str]:
    """(compiler path, its version line); raises RuntimeError if there is none."""
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        raise RuntimeError(f"no C++ compiler ({os.environ.get('CXX', 'g++')} not on PATH)")
    out = subprocess.run([cxx, "--version"], capture_output=True, text=True, timeout=30)
    return cxx, (out.stdout.splitlines() or [""])[0]


def build_key(source: bytes, compiler_version: str) -> str:
    """Hash of everything the binary depends on."""
    h = hashlib.sha256(source)
    for part in (compiler_version, " ".join(FLAGS), platform.machine(), _cpu_flags(),
                 str(ABI_VERSION)):
        h.update(b"\0" + part.encode())
    return h.hexdigest()[:20]


def build(directory: Path | None = None) -> Path:
    """Build the library if it is not cached yet; returns its path. Raises on failure."""
    cxx, version = _compiler()
    source = SOURCE.read_bytes()
    directory = directory or cache_dir()
    directory.mkdir(parents=True, exist_ok=True)
    key = build_key(source, version)
    lib = directory / f"seqbench_cpu_{key}.so"
    if lib.exists():
        return lib
    with open(directory / f"seqbench_cpu_{key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building the same key
        if lib.exists():
            return lib
        fd, tmp = tempfile.mkstemp(suffix=".so", dir=directory)
        os.close(fd)
        try:
            proc = subprocess.run([cxx, *FLAGS, "-o", tmp, str(SOURCE)], capture_output=True,
                                  text=True, timeout=BUILD_TIMEOUT_S)
            if proc.returncode != 0:
                (directory / f"seqbench_cpu_{key}.log").write_text(proc.stderr)
                first = (proc.stderr.strip().splitlines() or ["no output"])[0]
                raise RuntimeError(f"g++ failed ({proc.returncode}): {first}")
            os.replace(tmp, lib)  # atomic: a reader sees the whole library or none
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return lib


def _load() -> ctypes.CDLL:
    if os.environ.get(DISABLE_ENV, "1") == "0":
        raise RuntimeError(f"disabled by {DISABLE_ENV}=0")
    lib = ctypes.CDLL(str(build()))
    if lib.sb_abi_version() != ABI_VERSION:
        raise RuntimeError(f"ABI {lib.sb_abi_version()} != {ABI_VERSION}")
    for name in ("scan", "ssd", "conv", "linscan"):
        for mode in ("fwd", "bwd"):
            for dt in ("f32", "f64"):
                fn = getattr(lib, f"sb_{name}_{mode}_{dt}")
                fn.argtypes, fn.restype = [ctypes.c_void_p], None
    lib.sb_scan_block.restype = lib.sb_conv_max_taps.restype = ctypes.c_int64
    return lib


def library() -> ctypes.CDLL | None:
    """The loaded library, or None when it cannot be built or loaded here (see
    :func:`unavailable_reason`). Built or loaded once per process."""
    with _lock:
        if "lib" not in _state:
            try:
                _state["lib"], _state["reason"] = _load(), None
            except Exception as exc:  # any failure means: run the PyTorch path
                _state["lib"] = None
                _state["reason"] = f"{type(exc).__name__}: {exc}".splitlines()[0]
        return _state["lib"]  # type: ignore[return-value]


def unavailable_reason() -> str | None:
    """None if the fused kernels can run here, else why not."""
    library()
    return _state["reason"]  # type: ignore[return-value]


def reset() -> None:
    """Forget the loaded library (tests; a new :func:`library` call loads again)."""
    with _lock:
        _state.clear()


# ---- argument structs: field for field the structs of the source --------------------------------
_P, _I = ctypes.c_void_p, ctypes.c_int64


def _fields(spec: str) -> list[tuple[str, type]]:
    """'u:t x:p n:i' -> fields; t is a (pointer, batch stride, time stride) triple."""
    out: list[tuple[str, type]] = []
    for item in spec.split():
        name, kind = item.split(":")
        if kind == "t":
            out += [(name, _P), (f"{name}_sb", _I), (f"{name}_sl", _I)]
        else:
            out.append((name, _P if kind == "p" else _I))
    return out


class ScanArgs(ctypes.Structure):
    _fields_ = _fields("u:t delta:t At:p B:t C:t Dskip:p z:t out:p ck:p gout:p gu:p gdelta:p "
                       "gz:p gA:p gB:p gC:p gD:p last:p Bz:i L:i D:i N:i T:i nthreads:i")


class SsdArgs(ctypes.Structure):
    _fields_ = _fields("x:t dt:t A:p B:t C:t Dskip:p y:p ck:p gy:p gx:p gdt:p gA:p gB:p gC:p "
                       "gD:p last:p Bz:i L:i H:i P:i G:i N:i T:i nthreads:i")


class ConvArgs(ctypes.Structure):
    _fields_ = _fields("x:t wt:p bias:p out:p gout:p gx:p gw:p gbias:p Bz:i L:i C:i K:i "
                       "silu:i nthreads:i")


class LinScanArgs(ctypes.Structure):
    _fields_ = _fields("a:t b:t h:p gh:p gb:p ga:p Bz:i L:i C:i cplx:i gate:i nthreads:i")



# ---- tensors to arguments ------------------------------------------------------------------------
def compute_dtype(*tensors: torch.Tensor | None) -> torch.dtype:
    """fp64 if any operand is fp64 (references, gradcheck), else fp32 (bf16/fp16 are upcast)."""
    return torch.float64 if any(t is not None and t.dtype == torch.float64
                                for t in tensors) else torch.float32


def num_threads() -> int:
    """Threads a kernel call may use: torch's intra-op setting (``torch.set_num_threads``)."""
    return torch.get_num_threads()


def suffix(dtype: torch.dtype) -> str:
    return "f64" if dtype == torch.float64 else "f32"


@overload
def operand(t: torch.Tensor, dtype: torch.dtype, inner: int = 1) -> torch.Tensor: ...
@overload
def operand(t: None, dtype: torch.dtype, inner: int = 1) -> None: ...
def operand(t: torch.Tensor | None, dtype: torch.dtype, inner: int = 1) -> torch.Tensor | None:
    """``t`` in ``dtype`` with its last ``inner`` dims dense (a view when they already are), so
    the kernel can address it as rows ``ptr[b * sb + t * sl + i]``."""
    if t is None:
        return None
    t = t.to(dtype)
    dense, expected = True, 1
    for dim in range(t.dim() - 1, t.dim() - 1 - inner, -1):
        dense &= t.shape[dim] == 1 or t.stride(dim) == expected
        expected *= t.shape[dim]
    return t if dense else t.contiguous()


LABEL_PREFIX = "seqbench::"  # profiler ranges around the kernel calls: seqbench::<kernel>_<mode>


def call(name: str, mode: str, dtype: torch.dtype, args: ctypes.Structure,
         label: str | None = None) -> None:
    """Run kernel ``sb_<name>_<mode>_<f32|f64>`` on ``args`` inside a profiler range
    ``seqbench::<label or name>_<mode>`` (a few microseconds when no profiler is active)."""
    with torch.profiler.record_function(f"{LABEL_PREFIX}{label or name}_{mode}"):
        getattr(library(), f"sb_{name}_{mode}_{suffix(dtype)}")(ctypes.byref(args))


def ptr(t: torch.Tensor | None) -> int | None:
    return None if t is None else t.data_ptr()


def rows(t: torch.Tensor | None) -> tuple[int | None, int, int]:
    """(pointer, batch stride, time stride) of a (B, L, ...) operand."""
    if t is None:
        return None, 0, 0
    return t.data_ptr(), t.stride(0), t.stride(1)


def fill(args: ctypes.Structure, **values: object) -> ctypes.Structure:
    """Set struct fields; a (B, L, ...) operand given as a tensor sets its three fields."""
    for name, value in values.items():
        if isinstance(value, tuple):
            p, sb, sl = value
            setattr(args, name, p)
            setattr(args, f"{name}_sb", sb)
            setattr(args, f"{name}_sl", sl)
        else:
            setattr(args, name, value)
    return args


library()  # load (or build once per machine) at import: see the module docstring
