"""Real datasets: loaders on small files written in the real on-disk formats, the clear error
for a missing or corrupt file (and ``seqbench data check`` exiting 2), embedded datasets loaded
offline, stable disjoint splits, and a small model beating the trivial baseline on digits."""

from __future__ import annotations

import dataclasses
import gzip
import math
import pickle
import struct
import wave
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from seqbench.cli import main as cli_main
from seqbench.errors import BackendUnavailable, SpecError
from seqbench.worker.data import TASKS, build_task
from seqbench.worker.data import manifest as manifest_module
from seqbench.worker.data.dataset import holdout, stable_order
from seqbench.worker.data.paths import ENV_VAR, resolve_data_dir

pytest.importorskip("sklearn")
pytest.importorskip("statsmodels")


# --- helpers: the real on-disk formats ------------------------------------------------------
def write_idx(path: Path, array: np.ndarray) -> None:
    header = b"\0\0\x08" + bytes([array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw) if path.suffix == ".gz" else raw)


def write_mnist(root: Path, n_train: int = 50, n_test: int = 20, gz: bool = True) -> None:
    rng = np.random.default_rng(0)
    suffix = ".gz" if gz else ""
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 256, (n, 28, 28))
        images[:, 0, 0] = labels * 25  # the first pixel encodes the label
        write_idx(root / "mnist" / f"{prefix}-images-idx3-ubyte{suffix}", images)
        write_idx(root / "mnist" / f"{prefix}-labels-idx1-ubyte{suffix}", labels)


def write_cifar(root: Path, per_batch: int = 10) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(1)
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        entry = {b"data": data, b"labels": list(rng.integers(0, 10, per_batch).tolist())}
        (folder / name).write_bytes(pickle.dumps(entry, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"airplane"]}))


def write_imdb(root: Path, per_folder: int = 10) -> None:
    for split in ("train", "test"):
        for label in ("neg", "pos"):
            folder = root / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for i in range(per_folder):
                words = ("great! " if label == "pos" else "bad. ") * i
                text = f"{split} {label} review {i}: {words}"
                (folder / f"{i}_{7 if label == 'pos' else 2}.txt").write_text(text)


def write_wav(path: Path, samples: np.ndarray, rate: int = 16000, channels: int = 1) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(channels)
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(samples.astype("<i2").tobytes())


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    return tmp_path


@pytest.fixture
def small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Manifests without sizes and checksums, so small files in the real formats pass."""
    original = manifest_module.load_manifest

    def strip(spec: manifest_module.FileSpec) -> manifest_module.FileSpec:
        return dataclasses.replace(spec, size=None, sha256=None, md5=None,
                                   alternatives=tuple(strip(a) for a in spec.alternatives))

    def relaxed(name: str) -> manifest_module.Manifest:
        m = original(name)
        return dataclasses.replace(m, files=tuple(strip(f) for f in m.files),
                                   dirs=tuple(dataclasses.replace(d, count=None) for d in m.dirs))

    monkeypatch.setattr(manifest_module, "load_manifest", relaxed)


# --- data directory -------------------------------------------------------------------------
def test_data_dir_flag_beats_env_var_beats_xdg_default(tmp_path, monkeypatch):
    monkeypatch.delenv(ENV_VAR, raising=False)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert resolve_data_dir() == (tmp_path / "xdg" / "seqbench").resolve()
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "env"))
    assert resolve_data_dir() == (tmp_path / "env").resolve()
    assert resolve_data_dir(tmp_path / "flag") == (tmp_path / "flag").resolve()


# --- local loaders on real formats ------------------------------------------------------------
@pytest.mark.parametrize("gz", [True, False], ids=["gzip", "raw"])
def test_smnist_reads_idx_files(data_dir, small_files, gz):
    write_mnist(data_dir, gz=gz)
    task = build_task("smnist", 784)
    assert task.split_sizes() == {"train": 40, "eval": 10, "test": 20}
    x, y = next(task.eval_batches(0, 64, 100, "cpu", split="test"))
    assert x.shape == (20, 784, 1) and x.dtype == torch.float32
    assert torch.equal(y, torch.arange(20) % 10)  # the test split keeps the file order
    assert torch.allclose(x[:, 0, 0] * 255, (y * 25).float())  # pixel 0 is row 0, column 0
    assert task.info.io.input_kind == "channels" and task.info.output_dim == 10


def test_psmnist_applies_one_fixed_permutation(data_dir, small_files):
    write_mnist(data_dir)
    plain = build_task("smnist", 784)
    permuted = build_task("psmnist", 784, {"permutation_seed": 3})
    xp, xs = permuted.splits["test"][0], plain.splits["test"][0]
    perm = torch.from_numpy(stable_order(784, 3, "pixels"))
    assert torch.equal(xp, xs[:, perm]) and not torch.equal(xp, xs)
    other = build_task("psmnist", 784, {"permutation_seed": 4}).splits["test"][0]
    assert not torch.equal(other, xp)


def test_scifar_reads_python_pickles_as_grayscale_or_colour(data_dir, small_files):
    write_cifar(data_dir)
    gray = build_task("scifar", 1024)
    colour = build_task("scifar", 1024, {"grayscale": False})
    assert gray.split_sizes() == {"train": 40, "eval": 10, "test": 10}
    assert gray.info.input_dim == 1 and colour.info.input_dim == 3
    xc, xg = colour.splits["test"][0].double(), gray.splits["test"][0].double()
    luma = xc @ torch.tensor([0.2989, 0.5870, 0.1140], dtype=torch.float64)
    assert torch.allclose(xg[..., 0], luma.round())
    raw = pickle.loads((data_dir / "cifar-10-batches-py" / "test_batch").read_bytes())
    first = np.asarray(raw[b"data"][0]).reshape(3, 32, 32)
    assert xc[0, 33].tolist() == first[:, 1, 1].tolist()  # pixel 33 is row 1, column 1


def test_cifar_pickle_that_would_run_code_is_refused(data_dir, small_files):
    write_cifar(data_dir)

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    (data_dir / "cifar-10-batches-py" / "data_batch_3").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(SpecError, match=r"data_batch_3.*not a CIFAR-10 python batch"):
        build_task("scifar", 1024)


def test_imdb_bytes_are_truncated_or_zero_padded(data_dir, small_files):
    write_imdb(data_dir)
    task = build_task("imdb", 40)
    assert task.split_sizes() == {"train": 16, "eval": 4, "test": 20}
    x, y = task.splits["test"]
    first = (data_dir / "aclImdb/test/neg/0_2.txt").read_bytes()  # shorter than 40
    assert len(first) < 40
    assert bytes(x[0, :len(first)].tolist()) == first and not x[0, len(first):].any()
    long_text = (data_dir / "aclImdb/test/pos/9_7.txt").read_bytes()
    assert bytes(x[-1].tolist()) == long_text[:40]
    assert y.tolist() == [0] * 10 + [1] * 10
    xb, _ = next(task.eval_batches(0, 4, 4, "cpu"))
    assert xb.dtype == torch.int64 and task.info.input_kind == "tokens"


def test_text8_split_is_contiguous_90_5_5(data_dir, small_files):
    rng = np.random.default_rng(0)
    text = bytes(rng.choice(list(b" abcdefghijklmnopqrstuvwxyz"), 2000).tolist())
    (data_dir / "text8").mkdir()
    (data_dir / "text8" / "text8").write_bytes(text)
    task = build_task("text8", 16)
    assert [len(task.streams[s]) for s in ("train", "eval", "test")] == [1800, 100, 100]
    alphabet = b" abcdefghijklmnopqrstuvwxyz"
    decoded = bytes(alphabet[i] for i in task.streams["eval"].tolist())
    assert decoded == text[1800:1900]
    x, y = next(task.eval_batches(0, 3, 3, "cpu"))
    assert x.shape == (3, 16) and torch.equal(x[:, 1:], y[:, :-1])
    assert torch.equal(x[1, 0], task.streams["eval"][16].long())  # windows are consecutive
    assert task.info.input_dim == 27


def test_text8_byte_outside_the_alphabet_is_corrupt(data_dir, small_files):
    (data_dir / "text8").mkdir()
    (data_dir / "text8" / "text8").write_bytes(b"hello world" * 20 + b"X")
    with pytest.raises(SpecError, match=r"text8.*byte 88 at offset 220"):
        build_task("text8", 8)


def test_ptb_char_files_become_text(data_dir, small_files):
    folder = data_dir / "ptb"
    folder.mkdir()
    for name in ("train", "valid", "test"):
        (folder / f"ptb.char.{name}.txt").write_text(" a e r _ b a n k \n n o _ i t \n" * 20)
    task = build_task("ptb_char", 8)
    alphabet = sorted(set("aer bank\nno it"))
    assert task.info.input_dim == len(alphabet)
    decoded = "".join(alphabet[i] for i in task.streams["test"][:15].tolist())
    assert decoded == "aer bank\nno it\n"


def test_speech_commands_reads_wavs_with_official_lists_and_pools(data_dir, small_files):
    base = data_dir / "speech_commands_v0.02"
    words = manifest_module.load_manifest("speech_commands").data["words"]
    for k, word in enumerate(words):
        for i in range(3):
            samples = np.full(16000 if i else 12000, 100 * (k + 1))  # one short clip per word
            write_wav(base / word / f"spk{i}_nohash_0.wav", samples)
    (base / "validation_list.txt").write_text("yes/spk1_nohash_0.wav\nno/spk1_nohash_0.wav\n")
    (base / "testing_list.txt").write_text("yes/spk2_nohash_0.wav\n")
    task = build_task("speech_commands", 4000)
    assert task.split_sizes() == {"train": 105 - 3, "eval": 2, "test": 1}
    x, y = next(task.eval_batches(0, 8, 8, "cpu", split="test"))
    assert x.shape == (1, 4000, 1) and y.tolist() == [words.index("yes")]
    level = 100 * (words.index("yes") + 1) / 32768
    assert torch.allclose(x[0, :, 0], torch.full((4000,), level))
    xt = task.splits["train"][0]
    assert xt[0, -1] == 0 and xt[0, 0] > 0  # the short clip is zero-padded at the end


def test_speech_commands_refuses_stereo_wav(data_dir, small_files):
    base = data_dir / "speech_commands_v0.02"
    for word in manifest_module.load_manifest("speech_commands").data["words"]:
        (base / word).mkdir(parents=True)
    write_wav(base / "yes" / "a_nohash_0.wav", np.zeros(32000), channels=2)
    (base / "validation_list.txt").write_text("")
    (base / "testing_list.txt").write_text("")
    with pytest.raises(SpecError, match=r"a_nohash_0.wav.*2 channels"):
        build_task("speech_commands", 16000)


def test_speech_commands_seq_len_must_divide_16000():
    with pytest.raises(SpecError, match="divisor"):
        TASKS["speech_commands"].load().check(3000, {})


# --- missing and corrupt files ----------------------------------------------------------------
def test_missing_file_error_names_file_path_and_how_to_get_it(data_dir):
    with pytest.raises(SpecError) as err:
        TASKS["smnist"].load().check(784, {})
    message = str(err.value)
    assert "\n" not in message
    assert str(data_dir / "mnist" / "train-images-idx3-ubyte.gz") in message
    assert "file is missing" in message and "download" in message


def test_wrong_size_is_reported_as_corrupt_before_any_job(data_dir):
    write_mnist(data_dir)  # small files: every size differs from the manifest's
    with pytest.raises(SpecError, match=r"train-images-idx3-ubyte.gz.*expected 9,912,422"):
        TASKS["psmnist"].load().check(784, {})


def test_cli_data_check_missing_dataset_exits_2_with_one_line(tmp_path, capsys):
    rc = cli_main(["data", "check", "text8", "--data-dir", str(tmp_path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("seqbench: error: data.text8")
    assert str(tmp_path / "text8" / "text8") in err and "text8.zip" in err


def test_cli_data_check_detects_checksum_mismatch_at_the_right_size(tmp_path, capsys):
    m = manifest_module.load_manifest("mnist")
    for spec in m.files:  # zeros of exactly the published sizes: only a checksum can tell
        path = tmp_path / spec.path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(bytes(spec.size))
    assert cli_main(["data", "check", "smnist", "--data-dir", str(tmp_path), "--quick"]) == 0
    capsys.readouterr()
    rc = cli_main(["data", "check", "--data-dir", str(tmp_path)])  # all datasets, deep
    out, err = capsys.readouterr()
    assert rc == 2 and err.count("\n") == 1
    assert "train-images-idx3-ubyte.gz" in err and "sha256" in err
    assert "missing     cifar10" in out  # absent datasets are listed, not an error


def test_cli_data_check_unknown_name_lists_datasets(capsys):
    assert cli_main(["data", "check", "mnits"]) == 2
    assert "known datasets: cifar10" in capsys.readouterr().err


# --- embedded datasets, offline ---------------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    return build_task("digits", 64)


def test_digits_shapes_splits_and_baseline(digits):
    assert digits.split_sizes() == {"train": 1257, "eval": 180, "test": 360}
    x, y = next(digits.train_batches(0, 32, "cpu"))
    assert x.shape == (32, 64, 1) and y.shape == (32,) and x.min() >= 0 and x.max() <= 1
    eval_y = digits.splits["eval"][1]
    majority = int(torch.bincount(digits.splits["train"][1]).argmax())
    assert digits.info.baselines["accuracy"] == pytest.approx((eval_y == majority).double().mean())
    assert eval_y[:8].tolist() == [1, 5, 0, 0, 0, 8, 3, 0]  # pinned: split_seed 0 never moves


@pytest.mark.parametrize("stratified", [False, True], ids=["plain", "stratified"])
def test_splits_are_disjoint_cover_everything_and_depend_only_on_split_seed(stratified):
    labels = np.arange(1797) % 7 if stratified else None
    rest, test = holdout(1797, 360, 0, "s", labels=labels)
    assert len(set(rest) & set(test)) == 0 and len(rest) + len(test) == 1797
    assert len(test) == 360
    again, _ = holdout(1797, 360, 0, "s", labels=labels)
    other, _ = holdout(1797, 360, 1, "s", labels=labels)
    assert np.array_equal(rest, again) and not np.array_equal(rest, other)


def test_stratified_holdout_keeps_class_shares_on_a_tiny_set():
    labels = np.array([0] * 24 + [1] * 26)  # GunPoint's train split
    _, held = holdout(50, 10, 0, "s", labels=labels)
    assert np.bincount(labels[held]).tolist() == [5, 5]
    _, held = holdout(50, 7, 3, "s", labels=labels)
    assert sorted(np.bincount(labels[held]).tolist()) == [3, 4]


def test_digits_split_seed_changes_the_held_out_examples(digits):
    other = build_task("digits", 64, {"split_seed": 1})
    assert not torch.equal(other.splits["eval"][0], digits.splits["eval"][0])
    same = build_task("digits", 64, {"split_seed": 0})
    assert torch.equal(same.splits["test"][0], digits.splits["test"][0])


def test_training_order_depends_on_job_seed_and_covers_an_epoch(digits):
    n = digits.split_sizes()["train"]
    batches = digits.train_batches(5, n // 3, "cpu")
    first_epoch = torch.cat([next(batches)[0] for _ in range(3)])
    assert first_epoch.shape[0] == n - n % 3
    again = torch.cat([x for x, _ in islice(digits.train_batches(5, n // 3, "cpu"), 3)])
    other = torch.cat([x for x, _ in islice(digits.train_batches(6, n // 3, "cpu"), 3)])
    assert torch.equal(first_epoch, again) and not torch.equal(first_epoch, other)


def test_eval_batches_are_the_same_for_every_job_seed(digits):
    a = torch.cat([x for x, _ in digits.eval_batches(0, 50, 120, "cpu")])
    b = torch.cat([x for x, _ in digits.eval_batches(7, 50, 120, "cpu")])
    assert a.shape[0] == 120 and torch.equal(a, b)
    assert sum(len(y) for _, y in digits.eval_batches(0, 64, 10_000, "cpu")) == 180


def test_pdigits_permutes_pixels_only(digits):
    p = build_task("pdigits", 64, {"permutation_seed": 0})
    xs, xp = digits.splits["test"][0], p.splits["test"][0]
    assert not torch.equal(xs, xp)
    assert torch.equal(xs.sort(dim=1).values, xp.sort(dim=1).values)
    assert torch.equal(p.splits["test"][1], digits.splits["test"][1])


def test_fixed_length_datasets_refuse_other_lengths_and_unknown_params():
    with pytest.raises(SpecError, match="digits has length 64"):
        TASKS["digits"].load().check(100, {})
    with pytest.raises(SpecError, match="allowed params: split_seed, permutation_seed"):
        TASKS["pdigits"].load().check(64, {"permuation_seed": 1})
    with pytest.raises(SpecError, match="bundled with sktime"):
        TASKS["ucr"].load().check(150, {"dataset": "Coffee"})
    with pytest.raises(SpecError, match="OSULeaf"):  # the message names the dataset's length
        TASKS["ucr"].load().check(150, {"dataset": "OSULeaf"})


def test_forecast_windows_baselines_and_check():
    task = build_task("forecast", 24, {"series": "sunspots", "horizon": 2})
    x, y = task.splits["eval"]
    assert x.shape[1:] == (24, 1) and y.shape[1:] == (2,)
    assert task.info.output_kind == "regression" and task.info.io.output_dim == 2
    persistence = float((x[:, -1, :] - y).pow(2).mean())
    assert task.info.baselines["mse"] == pytest.approx(min(persistence, float(y.pow(2).mean())))
    train_x = task.splits["train"][0]
    assert train_x[:, :, 0].mean().abs() < 0.3  # standardised with the train part
    sums = task.metric_sums(torch.zeros_like(y), y)
    assert sums["mae"][0] == pytest.approx(float(y.abs().sum()))
    with pytest.raises(SpecError, match="nile has 70 train points"):
        TASKS["forecast"].load().check(70, {"series": "nile"})


def test_pystdlib_corpus_is_pinned_and_split_by_file():
    task = build_task("pystdlib", 64)
    files = task.split_files
    train, held_out, test = (set(files[s]) for s in ("train", "eval", "test"))
    assert not train & held_out and not held_out & test and not train & test
    assert sum(len(v) for v in files.values()) == 127
    total = sum(len(s) for s in task.streams.values())
    assert 0.04 < len(task.streams["test"]) / total < 0.15
    assert "os.py" in files["train"] + files["eval"] + files["test"]
    report = manifest_module.verify("pystdlib", Path("."))
    assert report.status in ("ok", "unverified")  # ok on a pinned Python version
    assert 3.0 < task.info.baselines["bpc"] < 6.0  # unigram entropy of source code


def test_pystdlib_missing_file_is_named(monkeypatch, tmp_path):
    from seqbench.worker.data import embedded

    monkeypatch.setattr(embedded, "stdlib_dir", lambda: tmp_path)
    with pytest.raises(SpecError, match=r"abc.py.*standard-library file is missing"):
        TASKS["pystdlib"].load().check(64, {})


def test_lm_bits_per_character_is_nats_over_ln2():
    task = build_task("pystdlib", 32)
    _, y = next(task.eval_batches(0, 4, 4, "cpu"))
    sums = task.metric_sums(torch.zeros(4, 32, 256), y)  # uniform prediction
    assert sums["bpc"][0] / sums["bpc"][1] == pytest.approx(8.0)
    assert sums["loss"][0] / sums["loss"][1] == pytest.approx(math.log(256))


def test_ucr_gunpoint_from_sktime_offline():
    pytest.importorskip("sktime")
    task = build_task("ucr", 150, {"dataset": "GunPoint"})
    assert task.split_sizes() == {"train": 40, "eval": 10, "test": 150}
    assert task.splits["eval"][1].bincount().tolist() == [5, 5]  # stratified
    x, y = next(task.eval_batches(0, 200, 200, "cpu", split="test"))
    assert x.shape == (150, 150, 1) and set(y.tolist()) == {0, 1}
    vowels = build_task("ucr", 29, {"dataset": "JapaneseVowels"})
    xv = vowels.splits["test"][0]
    assert xv.shape[1:] == (29, 12) and (xv[:, 0] == 0).all(1).any()  # left zero padding


def test_ucr_without_sktime_is_unavailable_but_passes_check(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "sktime", None)
    monkeypatch.setitem(sys.modules, "sktime.datasets", None)
    TASKS["ucr"].load().check(150, {"dataset": "GunPoint"})
    with pytest.raises(BackendUnavailable, match=r"seqbench\[ucr\]"):
        build_task("ucr", 150)


# --- a small model learns a real dataset ------------------------------------------------------
def test_small_lstm_beats_majority_class_on_digits(digits):
    from seqbench.worker.models import build_model

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # 2 threads oversubscribe a shared 2-core runner badly
    try:
        torch.manual_seed(0)
        model = build_model("lstm", {"d_model": 32}, digits.info.io)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for x, y in islice(digits.train_batches(0, 64, "cpu"), 200):
            opt.zero_grad()
            digits.loss(model(x), y).backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            sums = [digits.metric_sums(model(x), y) for x, y in digits.eval_batches(0, 256, 180,
                                                                                    "cpu")]
    finally:
        torch.set_num_threads(threads)
    accuracy = sum(s["accuracy"][0] for s in sums) / sum(s["accuracy"][1] for s in sums)
    assert accuracy > digits.info.baselines["accuracy"] + 0.3


# --- files accepted by content; another dataset in the same format --------------------------
def idx_bytes(n: int, seed: int = 0) -> bytes:
    """An idx3 file of ``n`` compressible images (gzip levels then give different sizes)."""
    images = (np.random.default_rng(seed).integers(0, 4, (n, 28, 28)) * 60).astype(np.uint8)
    return b"\0\0\x08\x03" + struct.pack(">3I", n, 28, 28) + images.tobytes()


@pytest.fixture
def mini_manifest(monkeypatch: pytest.MonkeyPatch):
    """A one-file manifest ("mini") for a small idx file: published .gz (level 9) and its
    decompressed form; ``content_checksum=False`` drops the decompressed sha256."""
    import hashlib

    raw = idx_bytes(40)
    published = gzip.compress(raw, compresslevel=9, mtime=0)
    original = manifest_module.load_manifest

    def install(content_checksum: bool = True) -> tuple[bytes, bytes]:
        raw_form = manifest_module.FileSpec(
            "mini/images-idx3-ubyte", len(raw),
            hashlib.sha256(raw).hexdigest() if content_checksum else None)
        spec = manifest_module.FileSpec("mini/images-idx3-ubyte.gz", len(published),
                                        hashlib.sha256(published).hexdigest(),
                                        alternatives=(raw_form,))
        mini = dataclasses.replace(original("mnist"), name="mini", files=(spec,))
        monkeypatch.setattr(manifest_module, "load_manifest",
                            lambda name: mini if name == "mini" else original(name))
        return raw, published

    return install


def test_recompressed_and_decompressed_copies_pass_on_their_content(tmp_path, mini_manifest):
    raw, published = mini_manifest()
    recompressed = gzip.compress(raw, compresslevel=1, mtime=0)
    assert recompressed != published and len(recompressed) != len(published)
    gz, plain = tmp_path / "mini/images-idx3-ubyte.gz", tmp_path / "mini/images-idx3-ubyte"
    gz.parent.mkdir()
    for data in (published, recompressed):
        gz.write_bytes(data)
        manifest_module.require("mini", tmp_path)  # cheap: size, or the gzip trailer's size
        assert manifest_module.verify("mini", tmp_path).status == "ok"  # deep: sha256
    gz.unlink()
    plain.write_bytes(raw)
    assert manifest_module.verify("mini", tmp_path).status == "ok"


def test_recompressed_copy_of_other_content_is_corrupt(tmp_path, mini_manifest):
    raw, _ = mini_manifest()
    gz = tmp_path / "mini/images-idx3-ubyte.gz"
    gz.parent.mkdir()
    changed = bytearray(raw)
    changed[100] ^= 1  # one bit, same length
    gz.write_bytes(gzip.compress(bytes(changed), compresslevel=1))
    manifest_module.require("mini", tmp_path)  # the trailer's size matches: only a hash tells
    report = manifest_module.verify("mini", tmp_path)
    assert report.status == "corrupt" and "decompressed sha256" in report.detail
    gz.write_bytes(gzip.compress(raw[:-784]))  # one image short
    with pytest.raises(SpecError, match=f"decompresses to {len(raw) - 784:,} bytes, "
                                        f"expected {len(raw):,}"):
        manifest_module.require("mini", tmp_path)
    gz.write_bytes(b"not gzip at all")
    with pytest.raises(SpecError, match="is not a gzip file"):
        manifest_module.require("mini", tmp_path)


def test_recompressed_copy_without_a_content_checksum_is_unverified(tmp_path, mini_manifest):
    raw, _ = mini_manifest(content_checksum=False)
    gz = tmp_path / "mini/images-idx3-ubyte.gz"
    gz.parent.mkdir()
    gz.write_bytes(gzip.compress(raw, compresslevel=1))
    manifest_module.require("mini", tmp_path)  # usable: the size is right
    report = manifest_module.verify("mini", tmp_path)
    assert report.status == "unverified" and "no checksum of the decompressed" in report.detail


def test_smnist_reads_fashion_mnist_through_its_own_manifest(data_dir, small_files):
    write_mnist(data_dir)  # MNIST labels are i % 10
    rng = np.random.default_rng(3)
    for prefix, n in (("train", 30), ("t10k", 10)):
        labels = (np.arange(n) * 3) % 10
        write_idx(data_dir / "fashion_mnist" / f"{prefix}-images-idx3-ubyte",
                  rng.integers(0, 256, (n, 28, 28)))
        write_idx(data_dir / "fashion_mnist" / f"{prefix}-labels-idx1-ubyte.gz", labels)
    task = build_task("smnist", 784, {"dataset": "fashion_mnist"})
    assert task.split_sizes() == {"train": 24, "eval": 6, "test": 10}
    assert task.splits["test"][1].tolist() == ((np.arange(10) * 3) % 10).tolist()
    assert task.data_source["dataset"] == "fashion_mnist"
    assert sorted(task.data_source["files"]) == [  # the forms found: raw images, gzip labels
        "fashion_mnist/t10k-images-idx3-ubyte", "fashion_mnist/t10k-labels-idx1-ubyte.gz",
        "fashion_mnist/train-images-idx3-ubyte", "fashion_mnist/train-labels-idx1-ubyte.gz"]
    plain = build_task("psmnist", 784)
    assert plain.data_source["dataset"] == "mnist"
    assert plain.splits["test"][1].tolist() == (np.arange(20) % 10).tolist()


def test_dataset_param_refuses_other_formats_and_names_missing_files(data_dir):
    cls = TASKS["smnist"].load()
    with pytest.raises(SpecError, match="datasets in this task's format: fashion_mnist, mnist"):
        cls.check(784, {"dataset": "cifar10"})
    with pytest.raises(SpecError, match=str(data_dir / "fashion_mnist" /
                                            "train-images-idx3-ubyte.gz")):
        cls.check(784, {"dataset": "fashion_mnist"})
    m = manifest_module.load_manifest("fashion_mnist")
    assert m.data["format"] == manifest_module.load_manifest("mnist").data["format"]
    assert [f.content()[0] for f in m.files] == [47040016, 60008, 7840016, 10008]
