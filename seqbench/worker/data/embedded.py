"""Real datasets that ship inside PyPI packages or the Python standard library: no download,
they run anywhere (the ``real`` CPU suite uses them).

- ``digits`` / ``pdigits``: scikit-learn's 8x8 handwritten digits (UCI, Alpaydin & Kaynak 1998)
  read pixel by pixel, 64 steps, plain or under one fixed seeded pixel permutation -- the small
  sibling of sequential / permuted MNIST (Le et al. 2015, "A Simple Way to Initialize Recurrent
  Networks of Rectified Linear Units").
- ``ucr``: UCR/UEA time-series classification sets bundled with sktime (Dau et al. 2019;
  Bagnall et al. 2018), e.g. GunPoint (150 steps), OSULeaf (427), ACSF1 (1,460).
- ``forecast``: one-step (or ``horizon``-step) forecasting of statsmodels' public-domain series
  (Mauna Loa CO2, sunspots, El Nino, Nile).
- ``pystdlib``: character-level language modelling on a pinned selection of CPython's own
  standard library source, verified by a checksum per Python version.

Packages (size with dependencies, licence): scikit-learn (300 MB, BSD-3) and statsmodels
(405 MB, BSD-3) in the ``real`` extra; sktime (436 MB, BSD-3) in the ``ucr`` extra. Each is
imported lazily; if absent the task raises ``BackendUnavailable`` (an ``unavailable`` row).
Manifests with licences and citations:
``seqbench/worker/data/manifests/{digits,ucr,forecast,pystdlib}``.
"""

from __future__ import annotations

import hashlib
import platform
import sysconfig
from pathlib import Path
from typing import Any

import numpy as np
import torch

from seqbench.errors import SpecError
from seqbench.worker.data.base import Metric, TaskInfo
from seqbench.worker.data.dataset import (
    ArrayTask,
    CharLMTask,
    ClassificationTask,
    PixelTask,
    holdout,
    require_package,
    stable_order,
)
from seqbench.worker.data.manifest import Manifest, Problem, Report, data_error, load_manifest


# --- digits ---------------------------------------------------------------------------------
class _DigitsBase(PixelTask):
    """scikit-learn's digits, 1,797 images of 8x8 pixels with intensities 0..16, 10 classes.

    Input ``(B, 64, 1)``: intensity / 16, row by row. Splits (by ``split_seed``, stratified by
    class): 360 test, 180 eval (validation), 1,257 train. Baselines: majority class of the
    train split.
    """

    manifest_name = "digits"
    version = 1
    native_len = 64
    max_value = 16.0
    N_TEST, N_EVAL = 360, 180

    def _load(self, split_seed: int, permutation_seed: int | None) -> None:
        datasets = require_package("sklearn.datasets", "real", "the digits task")
        bunch = datasets.load_digits()
        x = bunch.data.astype(np.uint8)  # (1797, 64), values 0..16
        y = bunch.target.astype(np.int64)
        rest, test = holdout(len(x), self.N_TEST, split_seed, "digits/test", labels=y)
        keep, val = holdout(len(rest), self.N_EVAL, split_seed, "digits/eval", labels=y[rest])
        train, val = rest[keep], rest[val]
        self.set_pixels({"train": (x[train], y[train]), "eval": (x[val], y[val]),
                         "test": (x[test], y[test])}, 10, permutation_seed)


class Digits(_DigitsBase):
    __doc__ = _DigitsBase.__doc__
    name = "digits"

    def __init__(self, seq_len: int, split_seed: int = 0) -> None:
        super().__init__(seq_len, split_seed=split_seed)
        self._load(split_seed, permutation_seed=None)


class PermutedDigits(_DigitsBase):
    """``digits`` under one fixed permutation of the 64 pixel positions (``permutation_seed``)."""

    name = "pdigits"

    def __init__(self, seq_len: int, split_seed: int = 0, permutation_seed: int = 0) -> None:
        super().__init__(seq_len, split_seed=split_seed, permutation_seed=permutation_seed)
        self._load(split_seed, permutation_seed)


# --- UCR / UEA via sktime -------------------------------------------------------------------
# name -> (length, channels, classes) as bundled with sktime; variable-length sets give their
# longest series, shorter ones are left-padded with zeros (so the last step is a real one).
UCR_DATASETS: dict[str, tuple[int, int, int]] = {
    "GunPoint": (150, 1, 2),
    "ArrowHead": (251, 1, 3),
    "ItalyPowerDemand": (24, 1, 2),
    "OSULeaf": (427, 1, 6),
    "ACSF1": (1460, 1, 10),
    "BasicMotions": (100, 6, 4),
    "JapaneseVowels": (29, 12, 9),
    "PLAID": (1344, 1, 11),
}


def _ucr_split(name: str, split: str) -> tuple[list[np.ndarray], np.ndarray]:
    """Series as ``(channels, length_i)`` float arrays and their string labels."""
    datasets = require_package("sktime.datasets", "ucr", "the ucr task")
    try:
        x, y = datasets.load_UCR_UEA_dataset(name, split=split, return_X_y=True,
                                             return_type="numpy3D")
        series = list(np.asarray(x, dtype=np.float64))
    except ValueError:  # unequal lengths: sktime only returns them nested
        nested, y = datasets.load_UCR_UEA_dataset(name, split=split, return_X_y=True,
                                                  return_type="nested_univ")
        series = [np.stack([np.asarray(nested.iloc[i, c], dtype=np.float64)
                            for c in range(nested.shape[1])]) for i in range(len(nested))]
    return series, np.asarray(y).astype(str)


def _label_order(labels: np.ndarray) -> list[str]:
    names = sorted(set(labels.tolist()))
    return sorted(names, key=int) if all(n.lstrip("-").isdigit() for n in names) else names


class UCR(ClassificationTask):
    """A UCR/UEA classification set bundled with sktime (``dataset``, default GunPoint).

    Input ``(B, L, C)`` float, standardised per channel with the train split's mean and standard
    deviation. Splits: the archive's own test split is ``"test"``; ``val_fraction`` of its train
    split (by ``split_seed``, stratified by class, at least one example) is ``"eval"``.
    ``seq_len`` must be the dataset's length (its longest series for JapaneseVowels and PLAID,
    the rest left-padded).
    Sizes are tiny (GunPoint trains on 40 series), so expect noisy metrics: use several seeds.
    """

    name = "ucr"
    manifest_name = "ucr"
    version = 1

    def __init__(self, seq_len: int, dataset: str = "GunPoint", split_seed: int = 0,
                 val_fraction: float = 0.2) -> None:
        super().__init__(seq_len, dataset=dataset, split_seed=split_seed,
                         val_fraction=val_fraction)
        length, channels, n_classes = UCR_DATASETS[dataset]
        train_x, train_y = _ucr_split(dataset, "train")
        test_x, test_y = _ucr_split(dataset, "test")
        order = _label_order(np.concatenate([train_y, test_y]))
        index = {label: i for i, label in enumerate(order)}
        if len(order) != n_classes:
            raise SpecError(f"tasks.ucr.{dataset}", len(order),
                            f"expected {n_classes} classes from sktime")
        padded = {"train": self._pad(train_x, length), "test": self._pad(test_x, length)}
        real = np.concatenate([s.reshape(channels, -1) for s in train_x], axis=1)
        mean, std = real.mean(axis=1), real.std(axis=1) + 1e-8  # per channel, padding excluded
        n_val = max(1, round(val_fraction * len(train_x)))
        labels = {"train": np.array([index[v] for v in train_y]),
                  "test": np.array([index[v] for v in test_y])}
        keep, val = holdout(len(train_x), n_val, split_seed, f"ucr/{dataset}/eval",
                            labels=labels["train"])

        masks = {"train": self._mask(train_x, length), "test": self._mask(test_x, length)}

        def tensors(split: str, idx: np.ndarray | None = None):
            x, y, pad = padded[split], labels[split], masks[split]
            if idx is not None:
                x, y, pad = x[idx], y[idx], pad[idx]
            x = ((x - mean) / std).astype(np.float32)
            x[pad] = 0.0  # padding stays exactly zero after scaling
            return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

        self.splits = {"train": tensors("train", keep), "eval": tensors("train", val),
                       "test": tensors("test")}
        self.set_classification_info("channels", channels, n_classes)

    @staticmethod
    def _pad(series: list[np.ndarray], length: int) -> np.ndarray:
        """``(N, L, C)``, each series right-aligned (left zero padding)."""
        out = np.zeros((len(series), length, series[0].shape[0]), dtype=np.float64)
        for i, s in enumerate(series):
            out[i, length - s.shape[1]:] = s.T
        return out

    @staticmethod
    def _mask(series: list[np.ndarray], length: int) -> np.ndarray:
        """``(N, L, C)`` True on padding positions."""
        mask = np.zeros((len(series), length, series[0].shape[0]), dtype=bool)
        for i, s in enumerate(series):
            mask[i, :length - s.shape[1]] = True
        return mask

    @classmethod
    def label(cls, params: dict[str, Any]) -> str:
        return f"ucr {params.get('dataset', 'GunPoint')}"

    @classmethod
    def expected_len(cls, params: dict[str, Any]) -> int:
        dataset = params.get("dataset", "GunPoint")
        if dataset not in UCR_DATASETS:
            raise SpecError("tasks.ucr.params.dataset", dataset,
                            f"bundled with sktime: {', '.join(UCR_DATASETS)}")
        fraction = params.get("val_fraction", 0.2)
        if not 0 < fraction < 1:
            raise SpecError("tasks.ucr.params.val_fraction", fraction, "must be in (0, 1)")
        return UCR_DATASETS[dataset][0]


# --- forecasting via statsmodels --------------------------------------------------------------
SERIES_LENGTHS = {"co2": 2284, "sunspots": 309, "elnino": 732, "nile": 100}
TRAIN_FRACTION, EVAL_FRACTION = 0.70, 0.15  # chronological: train, then eval, then test


def _load_series(name: str) -> np.ndarray:
    datasets = require_package("statsmodels.datasets", "real", "the forecast task")
    frame = getattr(datasets, name).load_pandas().data
    if name == "co2":
        values = frame["co2"].interpolate(method="linear").to_numpy()  # 59 weekly gaps
    elif name == "sunspots":
        values = frame["SUNACTIVITY"].to_numpy()
    elif name == "elnino":
        values = frame.drop(columns="YEAR").to_numpy().reshape(-1)  # 61 years x 12 months
    else:
        values = frame["volume"].to_numpy()
    return np.asarray(values, dtype=np.float64)


class Forecast(ArrayTask):
    """Forecast the next ``horizon`` values of a statsmodels series from the last ``seq_len``.

    The series (``co2``, ``sunspots``, ``elnino``, ``nile``) is split in time, never shuffled:
    the first 70% of the points are the train targets, the next 15% the ``"eval"`` targets,
    the last 15% the ``"test"`` targets (a window's inputs may reach back into earlier parts,
    as a forecaster's would). There is no ``split_seed``: a random split would leak the future.
    Values are standardised with the train part's mean and standard deviation; the metrics
    (MSE, MAE) are in those units. Input ``(B, seq_len, 1)``, target ``(B, horizon)``.

    Baseline: the better (on the eval split) of the last-value (persistence) forecast and the
    train-mean forecast, per metric; the notes give both numbers.
    """

    name = "forecast"
    manifest_name = "forecast"
    version = 1

    def __init__(self, seq_len: int, series: str = "co2", horizon: int = 1) -> None:
        super().__init__(seq_len, series=series, horizon=horizon)
        values = _load_series(series)
        n = len(values)
        n_train = round(TRAIN_FRACTION * n)
        n_eval = round(EVAL_FRACTION * n)
        mean, std = values[:n_train].mean(), values[:n_train].std()
        z = ((values - mean) / std).astype(np.float32)
        ranges = {"train": (seq_len, n_train), "eval": (n_train, n_train + n_eval),
                  "test": (n_train + n_eval, n)}
        self.splits = {}
        for split, (first, end) in ranges.items():
            starts = np.arange(max(first, seq_len), end - horizon + 1)  # target start times
            x = np.stack([z[t - seq_len:t] for t in starts])[..., None]  # (N, L, 1)
            y = np.stack([z[t:t + horizon] for t in starts])  # (N, H)
            self.splits[split] = (torch.from_numpy(x), torch.from_numpy(y))
        baselines, notes = self._baselines()
        self.info = TaskInfo(
            input_kind="channels", input_dim=1, output_kind="regression", output_dim=horizon,
            per_position=False, input_len=seq_len,
            metrics=(Metric("mse", False), Metric("mae", False)), primary_metric="mse",
            baselines=baselines, baseline_notes=notes,
        )

    def _baselines(self) -> tuple[dict[str, float], dict[str, str]]:
        x, y = self.splits["eval"]
        forecasts = {"last value": x[:, -1, :].expand_as(y), "train mean": torch.zeros_like(y)}
        baselines, notes = {}, {}
        for metric, fn in (("mse", lambda e: e.pow(2)), ("mae", lambda e: e.abs())):
            scores = {name: float(fn(f - y).mean()) for name, f in forecasts.items()}
            best = min(scores, key=lambda name: scores[name])
            baselines[metric] = scores[best]
            notes[metric] = (f"{best} forecast on the eval split (" + ", ".join(
                f"{name} {score:.4g}" for name, score in scores.items()) + ")")
        return baselines, notes

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        super().check(seq_len, params)
        series, horizon = params.get("series", "co2"), params.get("horizon", 1)
        if series not in SERIES_LENGTHS:
            raise SpecError("tasks.forecast.params.series", series,
                            f"statsmodels series: {', '.join(SERIES_LENGTHS)}")
        if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
            raise SpecError("tasks.forecast.params.horizon", horizon, "a positive integer")
        n = SERIES_LENGTHS[series]
        n_train, n_eval = round(TRAIN_FRACTION * n), round(EVAL_FRACTION * n)
        if seq_len + horizon > n_train or horizon > n_eval:
            raise SpecError("seq_len", seq_len,
                            f"{series} has {n_train} train points: seq_len + horizon must be at "
                            f"most {n_train} (and horizon at most {n_eval})")

    def metric_sums(self, out: torch.Tensor, y: torch.Tensor) -> dict[str, tuple[float, int]]:
        err = out.float() - y.float()
        return {"mse": (err.pow(2).sum().item(), err.numel()),
                "mae": (err.abs().sum().item(), err.numel())}


# --- the CPython standard library as a character corpus --------------------------------------
STDLIB_EVAL_FRACTION = STDLIB_TEST_FRACTION = 0.05


def stdlib_dir() -> Path:
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_files(manifest: Manifest | None = None) -> list[Path]:
    """The pinned file list; a missing file raises a one-line SpecError naming it."""
    manifest = manifest or load_manifest("pystdlib")
    root = stdlib_dir()
    paths = [root / name for name in manifest.data["files"]]
    for path in paths:
        if not path.is_file():
            problem = Problem("missing", path, "standard-library file is missing")
            raise data_error(manifest, problem)
    return paths


def stdlib_corpus() -> tuple[list[str], list[bytes]]:
    """File names and contents of the corpus, in the pinned order."""
    paths = stdlib_files()
    return [p.name for p in paths], [p.read_bytes() for p in paths]


def verify_stdlib_corpus(manifest: Manifest, deep: bool = True) -> Report:
    """``seqbench data check pystdlib``: the corpus checksum against this Python's pinned one."""
    where = str(stdlib_dir())
    try:
        _, contents = stdlib_corpus()
    except SpecError as exc:
        return Report(manifest.name, "missing", where, str(exc))
    digest = hashlib.sha256(b"".join(contents)).hexdigest()
    size = sum(len(c) for c in contents)
    version = platform.python_version()
    expected = manifest.data["sha256"].get(version)
    if expected is None:
        return Report(manifest.name, "unverified", where,
                      f"no checksum pinned for Python {version}: {size:,} bytes, sha256 "
                      f"{digest} (pinned: {', '.join(manifest.data['sha256'])})")
    if digest != expected:
        problem = Problem("corrupt", stdlib_dir(),
                          f"corpus sha256 {digest[:16]}... differs from the one pinned for "
                          f"Python {version} ({expected[:16]}...): a modified standard library")
        return Report(manifest.name, "corrupt", where, problem.detail, problem)
    return Report(manifest.name, "ok", where,
                  f"{len(contents)} files, {size:,} bytes, sha256 verified for Python {version}")


class StdlibText(CharLMTask):
    """Byte-level language modelling on CPython's standard library source (vocabulary 256).

    The corpus is a pinned list of 127 top-level modules (``manifests/pystdlib.json``: the
    selection rule, the list, and a sha256 per Python version; ``seqbench data check
    pystdlib`` verifies it). It differs slightly between Python versions, so compare results
    within one Python version (recorded in every row's provenance). Splits are by whole file,
    by ``split_seed``: files in hashed order fill ``"eval"`` to 5% of the bytes, then
    ``"test"`` to 5%, the rest is train (about 3.3 M bytes on 3.11).
    """

    name = "pystdlib"
    manifest_name = "pystdlib"
    version = 1
    VOCAB = 256

    def __init__(self, seq_len: int, split_seed: int = 0) -> None:
        super().__init__(seq_len, split_seed=split_seed)
        names, contents = stdlib_corpus()
        total = sum(len(c) for c in contents)
        parts: dict[str, list[bytes]] = {"eval": [], "test": [], "train": []}
        members: dict[str, list[int]] = {"eval": [], "test": [], "train": []}
        filled = {"eval": 0, "test": 0}
        for i in stable_order(names, split_seed, "pystdlib"):
            split = next((s for s, f in (("eval", STDLIB_EVAL_FRACTION),
                                         ("test", STDLIB_TEST_FRACTION))
                          if filled[s] < f * total), "train")
            parts[split].append(contents[i])
            members[split].append(i)
            if split != "train":
                filled[split] += len(contents[i])
        self.split_files = {s: sorted(names[i] for i in idx) for s, idx in members.items()}
        self.streams = {s: torch.frombuffer(bytearray(b"".join(p)), dtype=torch.uint8)
                        for s, p in parts.items()}
        self.set_lm_info(self.VOCAB)

    @classmethod
    def check(cls, seq_len: int, params: dict[str, Any]) -> None:
        super().check(seq_len, params)
        stdlib_files()

