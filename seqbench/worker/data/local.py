"""The classic long-sequence benchmarks, read from a local data directory with numpy and the
standard library only (no torchvision/torchaudio, no network).

Where: ``--data-dir`` > ``$SEQBENCH_DATA_DIR`` > ``~/.local/share/seqbench``
(:mod:`seqbench.worker.data.paths`). What: one manifest per dataset in
``seqbench/worker/data/manifests/``
lists the expected files with sizes and checksums and says how to obtain them; ``seqbench data
check`` verifies them, and every task's ``check`` refuses a missing or wrongly sized file with
one line naming the file, the path and how to get it.

- ``smnist`` / ``psmnist``: sequential and permuted MNIST, 784 steps (Le et al. 2015),
  from the idx files (gzip or not).
- ``scifar``: sequential CIFAR-10, 1,024 steps, grayscale (as LRA Image, Tay et al. 2021) or
  colour (``grayscale: false``, 3 channels, as in the S4 paper), from the python pickles.
- ``imdb``: byte-level IMDB sentiment as LRA Text: raw review bytes, truncated or zero-padded
  to ``seq_len`` (LRA uses 4,096), from the ``aclImdb`` folders.
- ``text8`` / ``enwik8`` / ``ptb_char``: character-level language modelling; text8 and enwik8
  use the standard contiguous 90M/5M/5M split, PTB its own three files.
- ``speech_commands``: Speech Commands v0.02, 35 words, raw 16 kHz waveform (16,000 steps, or a
  divisor of it by average pooling), with the dataset's own validation and test lists.

``"eval"`` is the validation split everywhere: carved from the official training set by
``split_seed``, stratified by class, for MNIST (5,000), CIFAR-10 (5,000) and IMDB (2,500) (a
fifth of the training set if that is smaller), the dataset's own validation part for the
others. ``"test"`` is the
official test set.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import wave
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from seqbench.errors import SpecError
from seqbench.worker.data.dataset import CharLMTask, ClassificationTask, PixelTask, holdout
from seqbench.worker.data.manifest import (
    Manifest,
    Problem,
    data_error,
    load_manifest,
    locate,
    manifest_names,
    require,
)
from seqbench.worker.data.paths import resolve_data_dir


def corrupt(manifest: str, path: Path, detail: str) -> SpecError:
    """The one-line error for a file that exists but cannot be read as the dataset's format."""
    return data_error(load_manifest(manifest), Problem("corrupt", path, detail))


class LocalData:
    """Mixin for tasks whose files live in the data directory under ``manifest_name``.

    A task whose class sets ``data_format`` also reads any other dataset whose manifest has
    the same ``data.format`` (Fashion-MNIST through the MNIST reader): the task param
    ``dataset`` names it (default: ``manifest_name``), its own manifest gives the files and
    checks them, and ``data_source`` records which dataset and files a job read.
    """

    manifest_name: ClassVar[str]
    data_format: ClassVar[str | None] = None  # manifests with this data.format are accepted
    data_source: dict[str, Any] | None = None  # set when the files are found (as on Task)

    @classmethod
    def dataset_of(cls, params: dict[str, Any]) -> str:
        """The dataset (manifest) these params read, refused if not in this task's format."""
        name = params.get("dataset", cls.manifest_name)
        if name == cls.manifest_name:
            return name
        same = [m for m in manifest_names()
                if cls.data_format and load_manifest(m).data.get("format") == cls.data_format]
        if name not in same:
            known = ", ".join(same) or cls.manifest_name
            raise SpecError(f"tasks.{getattr(cls, 'name', '')}.params.dataset", name,
                            f"datasets in this task's format: {known}")
        return name

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        super().check(seq_len, params)  # type: ignore[misc]
        require(cls.dataset_of(params), resolve_data_dir())

    def data_files(self) -> tuple[Manifest, Path]:
        """The manifest and data directory, after the same cheap check as :meth:`check`; sets
        ``data_source`` (the dataset and the files found, relative to the data directory)."""
        root = resolve_data_dir()
        name = self.dataset_of(getattr(self, "params", {}))
        manifest = require(name, root)
        files = [str(found[0].relative_to(root)) for f in manifest.files
                 if (found := locate(f, root)) is not None]
        self.data_source = {"dataset": name, "files": files, "checked": "size",
                            "dirs": [d.path for d in manifest.dirs]}
        return manifest, root

    def path_of(self, manifest: Manifest, root: Path, suffix: str) -> Path:
        """Where the manifest file whose path ends with ``suffix`` was found (any form)."""
        spec = next(f for f in manifest.files if f.path.removesuffix(".gz").endswith(suffix))
        found = locate(spec, root)
        assert found is not None  # require() has checked it
        return found[0]


# --- MNIST (idx) ------------------------------------------------------------------------------
IDX_DTYPES: dict[int, str] = {0x08: "u1", 0x09: "i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4",
                              0x0E: ">f8"}


def read_idx(path: Path, manifest: str = "mnist") -> np.ndarray:
    """An idx file (LeCun's format: magic ``0 0 dtype ndim``, big-endian dims, data)."""
    try:
        raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    except (OSError, EOFError) as exc:
        raise corrupt(manifest, path, f"not a readable gzip file ({exc})") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_DTYPES:
        raise corrupt(manifest, path, "not an idx file (bad magic number)")
    ndim = raw[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    data = np.frombuffer(raw, dtype=IDX_DTYPES[raw[2]], offset=header)
    if data.size != int(np.prod(dims)):
        raise corrupt(manifest, path, f"idx header says {dims}, data holds {data.size} values")
    return data.reshape(dims)


class _MNISTBase(LocalData, PixelTask):
    """MNIST read pixel by pixel: input ``(B, 784, 1)`` = intensity / 255, 10 classes.

    Splits: the official 10,000 test images are ``"test"``; 5,000 of the 60,000 training
    images (by ``split_seed``) are ``"eval"``, the other 55,000 train. ``dataset:
    fashion_mnist`` reads Fashion-MNIST (Xiao et al. 2017), the same idx format, from
    ``<data dir>/fashion_mnist/`` with its own manifest (any manifest with ``data.format:
    mnist-idx`` is accepted the same way).
    """

    manifest_name = "mnist"
    data_format = "mnist-idx"
    version = 1
    native_len = 784
    N_EVAL = 5000

    def _load(self, split_seed: int, permutation_seed: int | None) -> None:
        manifest, root = self.data_files()
        name = manifest.name

        def images_labels(prefix: str) -> tuple[np.ndarray, np.ndarray]:
            images = read_idx(self.path_of(manifest, root, f"{prefix}-images-idx3-ubyte"), name)
            labels_path = self.path_of(manifest, root, f"{prefix}-labels-idx1-ubyte")
            labels = read_idx(labels_path, name)
            if images.ndim != 3 or images.shape[1:] != (28, 28) or len(images) != len(labels):
                raise corrupt(name, labels_path, f"images {images.shape} do not match "
                                                 f"labels {labels.shape}")
            return images.reshape(len(images), 784), labels.astype(np.int64)

        x, y = images_labels("train")
        test = images_labels("t10k")
        keep, val = holdout(len(x), min(self.N_EVAL, len(x) // 5), split_seed, f"{name}/eval",
                            labels=y)
        self.set_pixels({"train": (x[keep], y[keep]), "eval": (x[val], y[val]), "test": test},
                        10, permutation_seed)


class SequentialMNIST(_MNISTBase):
    __doc__ = _MNISTBase.__doc__
    name = "smnist"

    def __init__(self, seq_len: int, split_seed: int = 0, dataset: str = "mnist") -> None:
        super().__init__(seq_len, split_seed=split_seed, dataset=dataset)
        self._load(split_seed, permutation_seed=None)


class PermutedMNIST(_MNISTBase):
    """Sequential MNIST under one fixed permutation of the 784 pixels (``permutation_seed``);
    ``dataset`` as :class:`SequentialMNIST`."""

    name = "psmnist"

    def __init__(self, seq_len: int, split_seed: int = 0, permutation_seed: int = 0,
                 dataset: str = "mnist") -> None:
        super().__init__(seq_len, split_seed=split_seed, permutation_seed=permutation_seed,
                         dataset=dataset)
        self._load(split_seed, permutation_seed)


# --- CIFAR-10 (python pickles) ----------------------------------------------------------------
class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays, lists and dicts only: a data file cannot run code.

    The official batches are Python 2 pickles of a dict with a numpy array and a list.
    """

    ALLOWED: ClassVar[set[tuple[str, str]]] = {
        (module, name)
        for module in ("numpy.core.multiarray", "numpy._core.multiarray", "numpy")
        for name in ("_reconstruct", "ndarray", "dtype", "scalar")
    } | {("_codecs", "encode")}  # protocol-2 pickles written by Python 3 encode bytes with it

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def read_cifar_batch(path: Path, manifest: str = "cifar10") -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch: ``(N, 3, 32, 32)`` uint8 images and ``(N,)`` labels."""
    try:
        entry = _ArrayUnpickler(io.BytesIO(path.read_bytes()), encoding="bytes").load()
        data = np.asarray(entry[b"data"], dtype=np.uint8)
        labels = np.asarray(entry[b"labels"], dtype=np.int64)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError) as exc:
        raise corrupt(manifest, path, f"not a CIFAR-10 python batch ({exc})") from None
    if data.ndim != 2 or data.shape[1] != 3072 or len(data) != len(labels):
        raise corrupt(manifest, path, f"data {data.shape} and labels {labels.shape} "
                                      "are not N x 3072 and N")
    return data.reshape(-1, 3, 32, 32), labels


GRAY = np.array([0.2989, 0.5870, 0.1140])  # ITU-R 601 luma, as tf.image.rgb_to_grayscale


class SequentialCIFAR(LocalData, PixelTask):
    """CIFAR-10 read pixel by pixel (row-major, 1,024 steps), 10 classes.

    ``grayscale: true`` (default, LRA Image): one channel, luma rounded to 0..255;
    ``grayscale: false``: the three colour channels. Inputs are value / 255. Splits: the
    official test batch is ``"test"``; 5,000 of the 50,000 training images (``split_seed``)
    are ``"eval"``.
    """

    name = "scifar"
    manifest_name = "cifar10"
    version = 1
    native_len = 1024
    N_EVAL = 5000

    def __init__(self, seq_len: int, split_seed: int = 0, grayscale: bool = True) -> None:
        super().__init__(seq_len, split_seed=split_seed, grayscale=grayscale)
        manifest, root = self.data_files()
        batches = [read_cifar_batch(self.path_of(manifest, root, f"/data_batch_{i}"))
                   for i in range(1, 6)]
        x = np.concatenate([b[0] for b in batches])
        y = np.concatenate([b[1] for b in batches])
        test_x, test_y = read_cifar_batch(self.path_of(manifest, root, "/test_batch"))
        keep, val = holdout(len(x), min(self.N_EVAL, len(x) // 5), split_seed, "cifar10/eval",
                            labels=y)

        def pixels(images: np.ndarray) -> np.ndarray:  # (N, 3, 32, 32) -> (N, 1024, C)
            seq = images.reshape(len(images), 3, 1024).transpose(0, 2, 1)
            if grayscale:
                return np.rint(seq @ GRAY).clip(0, 255).astype(np.uint8)[..., None]
            return seq

        self.set_pixels({"train": (pixels(x[keep]), y[keep]), "eval": (pixels(x[val]), y[val]),
                         "test": (pixels(test_x), test_y)}, 10, None)


# --- IMDB, byte level (LRA Text) --------------------------------------------------------------
def read_imdb(root: Path, split: str) -> tuple[list[str], list[bytes], np.ndarray]:
    """Names (``neg/123_4.txt``), raw bytes and labels (neg 0, pos 1) of one aclImdb split."""
    names, texts, labels = [], [], []
    for label, folder in enumerate(("neg", "pos")):
        for path in sorted((root / "aclImdb" / split / folder).glob("*.txt")):
            names.append(f"{folder}/{path.name}")
            texts.append(path.read_bytes())
            labels.append(label)
    return names, texts, np.array(labels, dtype=np.int64)


class IMDBBytes(LocalData, ClassificationTask):
    """IMDB sentiment from raw review bytes (vocabulary 256), as LRA Text (Tay et al. 2021).

    Each review's UTF-8 bytes are truncated to ``seq_len`` or padded with byte 0 at the end
    (LRA: 4,096; any length is accepted). Input ``(B, seq_len)`` tokens, 2 classes. Splits: the
    official 25,000 test reviews are ``"test"``; 2,500 training reviews (``split_seed``,
    hashed by file name) are ``"eval"``.
    """

    name = "imdb"
    manifest_name = "imdb"
    version = 1
    N_EVAL = 2500

    def __init__(self, seq_len: int, split_seed: int = 0) -> None:
        super().__init__(seq_len, split_seed=split_seed)
        _, root = self.data_files()
        names, texts, y = read_imdb(root, "train")
        _, test_texts, test_y = read_imdb(root, "test")
        keep, val = holdout(names, min(self.N_EVAL, len(names) // 5), split_seed, "imdb/eval",
                            labels=y)
        x = self._encode(texts)
        self.splits = {
            "train": (x[keep], torch.from_numpy(y[keep])),
            "eval": (x[val], torch.from_numpy(y[val])),
            "test": (self._encode(test_texts), torch.from_numpy(test_y)),
        }
        self.set_classification_info("tokens", 256, 2)

    def _encode(self, texts: list[bytes]) -> torch.Tensor:
        out = np.zeros((len(texts), self.seq_len), dtype=np.uint8)  # (N, L), 0 = padding
        for i, text in enumerate(texts):
            chunk = np.frombuffer(text[:self.seq_len], dtype=np.uint8)
            out[i, :len(chunk)] = chunk
        return torch.from_numpy(out)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        return x.long()  # (B, L)


# --- character-level corpora ------------------------------------------------------------------
def lookup_table(alphabet: bytes) -> np.ndarray:
    """Byte -> token id for ``alphabet`` (sorted), 255 for bytes outside it."""
    table = np.full(256, 255, dtype=np.uint8)
    table[np.frombuffer(bytes(sorted(alphabet)), dtype=np.uint8)] = np.arange(len(alphabet))
    return table


def encode_bytes(raw: np.ndarray, alphabet: bytes | None, manifest: str, path: Path
                 ) -> np.ndarray:
    """Map bytes to ids; a byte outside a fixed alphabet means the file is not the dataset."""
    if alphabet is None:
        return raw
    ids = lookup_table(alphabet)[raw]
    bad = np.flatnonzero(ids == 255)
    if len(bad):
        raise corrupt(manifest, path, f"byte {raw[bad[0]]} at offset {bad[0]:,} is outside "
                                      f"the {len(alphabet)}-character alphabet")
    return ids


class _ContiguousCorpus(LocalData, CharLMTask):
    """A single file split contiguously: first 90% train, next 5% eval, last 5% test (for the
    100,000,000-byte text8/enwik8 files exactly the standard 90M/5M/5M)."""

    version = 1
    alphabet: ClassVar[bytes | None] = None  # None: byte level, vocabulary 256

    def __init__(self, seq_len: int) -> None:
        super().__init__(seq_len)
        manifest, root = self.data_files()
        path = root / manifest.files[0].path
        ids = torch.from_numpy(encode_bytes(np.fromfile(path, dtype=np.uint8), self.alphabet,
                                            self.manifest_name, path))
        n_held = len(ids) // 20
        n_train = len(ids) - 2 * n_held
        self.streams = {"train": ids[:n_train], "eval": ids[n_train:n_train + n_held],
                        "test": ids[n_train + n_held:]}
        self.set_lm_info(256 if self.alphabet is None else len(self.alphabet))


class Text8(_ContiguousCorpus):
    """text8: 27 characters (a-z and space), ids in sorted order (space = 0)."""

    name = "text8"
    manifest_name = "text8"
    alphabet = b" abcdefghijklmnopqrstuvwxyz"


class Enwik8(_ContiguousCorpus):
    """enwik8: raw bytes of Wikipedia XML (vocabulary 256; about 205 occur)."""

    name = "enwik8"
    manifest_name = "enwik8"


def read_ptb_chars(path: Path) -> bytes:
    """A ``ptb.char.*.txt`` file as text: characters are space-separated, ``_`` separates
    words, one sentence per line -> ``"aer banknote berlitz ...\\n"``."""
    lines = path.read_bytes().splitlines()
    return b"".join(b"".join(b" " if c == b"_" else c for c in line.split()) + b"\n"
                    for line in lines if line.strip())


class PTBChar(LocalData, CharLMTask):
    """Penn Treebank, character level, from the three ``ptb.char`` files (train/valid/test).

    Vocabulary: the characters that occur in the three files (about 50), in byte order.
    """

    name = "ptb_char"
    manifest_name = "ptb"
    version = 1

    def __init__(self, seq_len: int) -> None:
        super().__init__(seq_len)
        manifest, root = self.data_files()
        texts = {split: read_ptb_chars(self.path_of(manifest, root, f"ptb.char.{name}.txt"))
                 for split, name in (("train", "train"), ("eval", "valid"), ("test", "test"))}
        alphabet = bytes(sorted(set(b"".join(texts.values()))))
        table = lookup_table(alphabet)
        self.streams = {s: torch.from_numpy(table[np.frombuffer(t, dtype=np.uint8)])
                        for s, t in texts.items()}
        self.set_lm_info(len(alphabet))


# --- Speech Commands (WAV) --------------------------------------------------------------------
def read_wav(path: Path, samples: int, rate: int, manifest: str = "speech_commands"
             ) -> np.ndarray:
    """A mono 16-bit WAV as int16, cut or zero-padded at the end to ``samples``."""
    try:
        with wave.open(str(path), "rb") as f:
            if (f.getnchannels(), f.getsampwidth(), f.getframerate()) != (1, 2, rate):
                raise corrupt(manifest, path, f"{f.getnchannels()} channels, "
                                              f"{8 * f.getsampwidth()} bit, {f.getframerate()} "
                                              f"Hz; expected mono 16 bit {rate} Hz")
            audio = np.frombuffer(f.readframes(samples), dtype="<i2")
    except (wave.Error, EOFError) as exc:
        raise corrupt(manifest, path, f"not a readable WAV file ({exc})") from None
    out = np.zeros(samples, dtype=np.int16)
    out[:len(audio)] = audio
    return out


class SpeechCommands(LocalData, ClassificationTask):
    """Speech Commands v0.02: 35 words, one-second clips at 16 kHz, raw waveform, 35 classes.

    Input ``(B, seq_len, 1)``: samples / 32768. ``seq_len`` must divide 16,000: 16,000 is the
    raw signal (S4's SC35), 8,000 averages pairs of samples (a crude low-pass before halving
    the rate), and so on. Splits: the dataset's ``validation_list.txt`` is ``"eval"``,
    ``testing_list.txt`` is ``"test"``, every other clip of the 35 word folders is train
    (``_background_noise_`` is not used). All clips are held in memory as int16 (3.4 GB at
    16,000 steps) and reading 105,829 files takes a while: load once per job.
    """

    name = "speech_commands"
    manifest_name = "speech_commands"
    version = 1

    def __init__(self, seq_len: int) -> None:
        super().__init__(seq_len)
        manifest, root = self.data_files()
        words: list[str] = manifest.data["words"]
        samples, rate = manifest.data["samples"], manifest.data["sample_rate"]
        base = root / "speech_commands_v0.02"
        held = {split: set((base / f"{name}_list.txt").read_text().split())
                for split, name in (("eval", "validation"), ("test", "testing"))}
        clips: dict[str, list[np.ndarray]] = {"train": [], "eval": [], "test": []}
        labels: dict[str, list[int]] = {"train": [], "eval": [], "test": []}
        for label, word in enumerate(words):
            for path in sorted((base / word).glob("*.wav")):
                key = f"{word}/{path.name}"
                split = next((s for s, names in held.items() if key in names), "train")
                clips[split].append(read_wav(path, samples, rate))
                labels[split].append(label)
        factor = samples // seq_len
        self.splits = {}
        for split in clips:
            if not clips[split]:
                raise corrupt("speech_commands", base, f"no clips in the {split} split")
            x = torch.from_numpy(np.stack(clips[split]))  # (N, 16000) int16
            if factor > 1:  # average pooling, stored as float in [-1, 1)
                x = x.float().div_(32768).reshape(len(x), seq_len, factor).mean(-1)
            self.splits[split] = (x, torch.tensor(labels[split], dtype=torch.long))
        self.set_classification_info("channels", 1, len(words))

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        if seq_len >= 1 and 16000 % seq_len:
            raise SpecError("seq_len", seq_len,
                            "speech_commands takes 16000 or a divisor of it (8000, 4000, ...)")
        super().check(seq_len, params)

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 32768 if x.dtype == torch.int16 else x
        return x.unsqueeze(-1)  # (B, L, 1)
