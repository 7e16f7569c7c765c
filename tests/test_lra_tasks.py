"""ListOps and Pathfinder (Long Range Arena): exact token layouts, labels recomputed by an
independent evaluator, split disjointness, seeding, the generated-data cache, the check()
refusals, and Pathfinder's marker geometry checked on the geometry and on the pixels."""

from __future__ import annotations

import json
import statistics
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from seqbench.errors import SpecError
from seqbench.worker.data import TASKS, build_task
from seqbench.worker.data import listops as lo
from seqbench.worker.data import pathfinder as pf
from seqbench.worker.data.paths import ENV_VAR

# the token table of the ListOps docstring, written out again here
SYMBOL = {0: "<pad>", **{1 + d: str(d) for d in range(10)}, 11: "[MIN", 12: "[MAX",
          13: "[MED", 14: "[SM", 15: "]"}


@pytest.fixture(autouse=True)
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(ENV_VAR, str(tmp_path))
    return tmp_path


def parse(symbols: list[str]) -> int:
    """Recursive descent over ``[OP arg ... ]``: the value of the whole expression."""
    pos = 0

    def expr() -> int:
        nonlocal pos
        head = symbols[pos]
        pos += 1
        if head.isdigit():
            return int(head)
        args = []
        while symbols[pos] != "]":
            args.append(expr())
        pos += 1
        if head == "[MIN":
            return min(args)
        if head == "[MAX":
            return max(args)
        if head == "[MED":
            return int(statistics.median(args))  # LRA: int(np.median(...))
        assert head == "[SM"
        return sum(args) % 10

    value = expr()
    assert pos == len(symbols), "trailing tokens after the expression"
    return value


def decode(row: torch.Tensor) -> list[str]:
    tokens = row.tolist()
    n = tokens.index(0) if 0 in tokens else len(tokens)
    assert not any(tokens[n:]), "padding is not at the end"
    return [SYMBOL[t] for t in tokens[:n]]


# --- ListOps ----------------------------------------------------------------------------------
def test_listops_docstring_example_in_lra_draw_order():
    # LRA's order: operator-or-value, argument count, the arguments, then the operator
    draws = iter([0.1, 0.25,  # root is an operator with 2 + int(0.25 * 9) = 4 arguments
                  0.9, 0.25, 0.9, 0.95,  # values 2 and 9
                  0.1, 0.0, 0.9, 0.45, 0.9, 0.75, 0.1,  # [MIN 4 7 ]
                  0.9, 0.05,  # value 0
                  0.3])  # the root's operator: int(0.3 * 4) = 1, MAX
    out: list[int] = []
    value = lo.grow(lambda: next(draws), 1, 10, 10, out)
    assert out == [12, 3, 10, 11, 5, 8, 15, 1, 15]
    assert " ".join(SYMBOL[t] for t in out) == "[MAX 2 9 [MIN 4 7 ] 0 ]"
    assert value == 9 == parse([SYMBOL[t] for t in out])


@pytest.mark.parametrize("args", [[3, 4], [1, 2, 3, 4], [9, 0], [5], [7, 1, 8], [2, 9, 9, 2]])
def test_listops_median_is_numpys_rounded_down(args):
    assert lo.operate(2, args) == int(np.median(args))


@pytest.fixture(scope="module")
def small_listops(tmp_path_factory) -> lo.ListOps:
    mp = pytest.MonkeyPatch()
    mp.setenv(ENV_VAR, str(tmp_path_factory.mktemp("listops")))
    try:
        return build_task("listops", 120, {"min_length": 20, "n_train": 300, "n_eval": 60,
                                           "n_test": 60})
    finally:
        mp.undo()


def test_listops_labels_match_an_independent_evaluator_and_bounds(small_listops):
    assert small_listops.split_sizes() == {"train": 300, "eval": 60, "test": 60}
    for split in ("train", "eval", "test"):
        x, y = small_listops.splits[split]
        assert x.shape[1] == 120
        for row, label in zip(x, y.tolist(), strict=True):
            symbols = decode(row)
            assert 20 < len(symbols) < 120  # LRA's strict bounds (max_length = seq_len)
            assert parse(symbols) == label
    labels = torch.cat([small_listops.splits[s][1] for s in ("train", "eval", "test")])
    assert set(labels.tolist()) <= set(range(10)) and len(set(labels.tolist())) >= 6
    info = small_listops.info
    assert (info.input_dim, info.output_dim, info.per_position) == (16, 10, False)
    xb, yb = next(small_listops.train_batches(0, 8, "cpu"))
    assert xb.dtype == torch.long and xb.shape == (8, 120) and yb.shape == (8,)


def test_listops_splits_are_disjoint_and_free_of_duplicates(small_listops):
    rows = {s: [bytes(r.tolist()) for r in small_listops.splits[s][0]]
            for s in ("train", "eval", "test")}
    for s, r in rows.items():
        assert len(set(r)) == len(r), f"duplicate in {s}"
    assert not set(rows["train"]) & set(rows["eval"])
    assert not set(rows["train"]) & set(rows["test"])
    assert not set(rows["eval"]) & set(rows["test"])


def test_listops_same_seed_same_bytes_other_seed_other_data(tmp_path, monkeypatch):
    params = {"min_length": 10, "n_train": 50, "n_eval": 20, "n_test": 20}
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "a"))
    a = build_task("listops", 60, params)
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "b"))  # a fresh cache: generated again
    b = build_task("listops", 60, params)
    c = build_task("listops", 60, {**params, "data_seed": 1})
    assert a.data_source["cache"] == b.data_source["cache"] == "written"
    for s in ("train", "eval", "test"):
        assert torch.equal(a.splits[s][0], b.splits[s][0])
        assert not torch.equal(a.splits[s][0], c.splits[s][0])
    assert a.data_source["sha256"] == b.data_source["sha256"] != c.data_source["sha256"]
    first = next(a.train_batches(3, 16, "cpu"))[0]
    assert torch.equal(first, next(b.train_batches(3, 16, "cpu"))[0])
    assert not torch.equal(first, next(a.train_batches(4, 16, "cpu"))[0])


def test_listops_cache_manifest_is_reused_and_a_corrupt_file_regenerated(tmp_path):
    params = {"min_length": 10, "n_train": 40, "n_eval": 10, "n_test": 10, "data_seed": 5}
    first = build_task("listops", 50, params)
    manifests = list(tmp_path.glob("generated/listops/*/manifest.json"))
    assert len(manifests) == 1
    m = json.loads(manifests[0].read_text())
    assert m["generator"] == "listops" and m["seed"] == 5 and m["version"] == lo.ListOps.version
    assert m["params"]["counts"] == [40, 10, 10] and m["params"]["max_length"] == 50
    assert m["counts"]["train/labels"] == 40 and m["sha256"] == first.data_source["sha256"]
    again = build_task("listops", 50, params)
    assert again.data_source["cache"] == "hit"
    data = manifests[0].parent / "data.npz"
    data.write_bytes(data.read_bytes()[:-10] + b"0123456789")  # same size, wrong bytes
    repaired = build_task("listops", 50, params)
    assert repaired.data_source["cache"] == "written"
    assert torch.equal(repaired.splits["train"][0], first.splits["train"][0])


def test_listops_infinite_stream_never_yields_a_held_out_expression():
    # depth 2, 2 arguments, length 4 only: [OP a b ] -> 400 distinct expressions in all
    params = {"min_length": 3, "max_length": 5, "max_depth": 2, "max_args": 2,
              "n_train": None, "n_eval": 50, "n_test": 50}
    task = build_task("listops", 6, params)
    held = {bytes(r.tolist()) for s in ("eval", "test") for r in task.splits[s][0]}
    assert len(held) == 100 and "train" not in task.splits
    seen = set()
    for x, y in islice(task.train_batches(0, 64, "cpu"), 20):
        for row, label in zip(x, y.tolist(), strict=True):
            assert bytes(row.tolist()) not in held
            assert parse(decode(row)) == label
            seen.add(bytes(row.tolist()))
    assert len(seen) > 200  # a quarter of random draws would have been held out


@pytest.mark.parametrize(("seq_len", "params", "match"), [
    (500, {}, "min_length must be below 499"),  # the LRA default min_length 500 needs room
    (100, {"max_length": 200, "min_length": 10}, "at most seq_len \\+ 1 = 101"),
    (100, {"min_length": 99}, "min_length must be below 99"),
    (2000, {"max_depth": 2, "max_args": 10}, "below 12, the longest expression"),
    (100, {"min_length": 10, "n_train": 0}, "n_train"),
    (100, {"min_length": 10, "max_args": 1}, "max_args"),
    (100, {"min_length": 10, "depth": 3}, "allowed params"),
])
def test_listops_check_refuses_impossible_settings(seq_len, params, match):
    with pytest.raises(SpecError, match=match):
        TASKS["listops"].load().check(seq_len, params)


def test_listops_lra_defaults_pass_check():
    TASKS["listops"].load().check(2000, {})
    assert lo.ListOps.validate(2000, {}) == (500, 2000)  # 500 < length < 2000, as LRA


# --- Pathfinder -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scenes32() -> pf.Scenes:
    return pf.generate(96, np.random.default_rng(7), 32, 14)


def segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from points ``p (..., 2)`` to the segment ``a``-``b`` (written again here)."""
    ab = b - a
    t = np.clip(((p - a) @ ab) / max(float(ab @ ab), 1e-12), 0, 1)
    return np.linalg.norm(p - (a + t[..., None] * ab), axis=-1)


def test_pathfinder_markers_sit_on_the_ends_of_one_target_iff_label_1(scenes32):
    s = scenes32
    style, labels = pf.STYLES[32], s.labels
    assert set(labels.tolist()) == {0, 1}
    for i in range(len(labels)):
        targets = []
        for t in (0, 1):
            slots = np.flatnonzero(s.used[i] & (s.snake[i] == t))
            assert len(slots) == 14  # contour length, hard
            paddles = s.segments[i, slots]
            lengths = np.linalg.norm(paddles[:, 2:] - paddles[:, :2], axis=1)
            assert np.allclose(lengths, style.paddle_length)
            gaps = np.linalg.norm(paddles[1:, :2] - paddles[:-1, 2:], axis=1)
            assert gaps.max() <= 2 * max(style.margins) + 1e-9  # dashes: short gaps
            assert np.allclose(paddles[0, :2], s.origins[i, t])
            assert np.allclose(paddles[-1, 2:], s.ends[i, t])
            targets.append((paddles[0, :2], paddles[-1, 2:]))
        start = [t for t in (0, 1) if np.allclose(s.markers[i, 0], targets[t][0])]
        end = [t for t in (0, 1) if np.allclose(s.markers[i, 1], targets[t][1])]
        assert len(start) == len(end) == 1
        assert labels[i] == int(start[0] == end[0])
    assert 0.3 < labels.mean() < 0.7


def test_pathfinder_paddles_keep_their_clearance(scenes32):
    s, style = scenes32, pf.STYLES[32]
    clear = style.thickness + 2 * style.margins[0]
    t = np.linspace(0, 1, 9)[:, None]
    for i in range(0, len(s.labels), 4):
        slots = np.flatnonzero(s.used[i])
        segs = s.segments[i, slots]
        for a_idx in range(len(slots)):
            for b_idx in range(a_idx + 1, len(slots)):
                same = s.snake[i, slots[a_idx]] == s.snake[i, slots[b_idx]]
                if same and b_idx == a_idx + 1:
                    continue  # consecutive paddles of one contour
                pts = segs[a_idx, :2] + t * (segs[a_idx, 2:] - segs[a_idx, :2])
                d = segment_distance(pts, segs[b_idx, :2], segs[b_idx, 2:]).min()
                assert d > clear - 0.75, (i, a_idx, b_idx, d)  # grid cells are 0.5 px


def test_pathfinder_pixels_show_the_geometry_and_the_markers(scenes32):
    s, style = scenes32, pf.STYLES[32]
    ys, xs = np.mgrid[0:32, 0:32]
    pix = np.stack([xs, ys], -1).astype(float)  # pixel (row, col) at (x=col, y=row)
    for i in range(0, len(s.labels), 3):
        img = s.images[i].astype(int)
        for m in s.markers[i]:
            assert img[round(m[1]), round(m[0])] == 255  # a marker is drawn there
        near_paddle = np.full((32, 32), np.inf)
        for seg in s.segments[i, s.used[i]]:
            near_paddle = np.minimum(near_paddle, segment_distance(pix, seg[:2], seg[2:]))
            # every paddle is visible: some pixel centre within 1 px of its middle is at most
            # 0.5 px from the line, so at least 1.5 * (0.25 + 0.5 - 0.5) * 255 = 96 bright
            mid = (seg[:2] + seg[2:]) / 2
            close = np.linalg.norm(pix - mid, axis=-1) <= 1.0
            assert img[close].max() >= 95
        near_marker = np.min([np.linalg.norm(pix - m, axis=-1) for m in s.markers[i]], axis=0)
        # nothing is drawn away from the paddles and the markers
        explained = ((near_paddle <= style.thickness / 2 + 0.5 + 1e-6)
                     | (near_marker <= style.marker_radius + 0.5 + 1e-6))
        assert explained[img > 0].all()


@pytest.fixture(scope="module")
def pathfinder_task(tmp_path_factory) -> pf.Pathfinder:
    mp = pytest.MonkeyPatch()
    mp.setenv(ENV_VAR, str(tmp_path_factory.mktemp("pathfinder")))
    try:
        return build_task("pathfinder", 1024, {"n_train": 48, "n_eval": 24, "n_test": 24})
    finally:
        mp.undo()


def test_pathfinder_task_reads_images_row_by_row_as_tokens(pathfinder_task):
    task = pathfinder_task
    assert task.split_sizes() == {"train": 48, "eval": 24, "test": 24}
    assert (task.info.input_kind, task.info.input_dim, task.info.output_dim) == ("tokens", 256, 2)
    x, y = next(task.eval_batches(0, 24, 24, "cpu", split="test"))
    assert x.shape == (24, 1024) and x.dtype == torch.long and x.min() >= 0 and x.max() <= 255
    again = pf.generate(24, pf.chunk_rng(0, 32, 14, "test", 0), 32, 14)
    assert torch.equal(x.reshape(24, 32, 32), torch.from_numpy(again.images).long())
    assert y.tolist() == again.labels.tolist()


def test_pathfinder_seeding_splits_and_grey_encoding(pathfinder_task, tmp_path):
    params = {"n_train": 48, "n_eval": 24, "n_test": 24}
    same = build_task("pathfinder", 1024, params)  # fresh cache dir (autouse fixture)
    assert same.data_source["cache"] == "written"
    for s in ("train", "eval", "test"):
        assert torch.equal(same.splits[s][0], pathfinder_task.splits[s][0])
    assert not torch.equal(same.splits["eval"][0], same.splits["test"][0])
    other = build_task("pathfinder", 1024, {**params, "data_seed": 1})
    assert not torch.equal(other.splits["train"][0], same.splits["train"][0])
    grey = build_task("pathfinder", 1024, {**params, "encoding": "grey"})
    assert grey.data_source["cache"] == "hit"  # the encoding does not change the images
    xg, _ = next(grey.eval_batches(0, 4, 4, "cpu"))
    xt, _ = next(same.eval_batches(0, 4, 4, "cpu"))
    assert xg.shape == (4, 1024, 1) and torch.allclose(xg[..., 0] * 255, xt.float())
    assert grey.info.input_kind == "channels" and grey.info.input_dim == 1


def test_pathfinder_fresh_training_stream_is_seeded():
    task = build_task("pathfinder", 1024, {"n_train": None, "n_eval": 8, "n_test": 8})
    a = next(task.train_batches(0, 6, "cpu"))
    b = next(task.train_batches(0, 6, "cpu"))
    c = next(task.train_batches(1, 6, "cpu"))
    assert torch.equal(a[0], b[0]) and not torch.equal(a[0], c[0])
    assert a[0].shape == (6, 1024) and set(a[1].tolist()) <= {0, 1}


@pytest.mark.parametrize(("seq_len", "params", "match"), [
    (1000, {}, "res\\^2 pixels: 1024 \\(32x32\\), 4096 \\(64x64\\), 16384 \\(128x128\\)"),
    (65536, {}, "res\\^2 pixels"),
    (1024, {"difficulty": "extreme"}, "easy, intermediate, hard"),
    (1024, {"contour_length": 0}, "contour_length"),
    (1024, {"encoding": "rgb"}, "tokens"),
    (1024, {"n_eval": 0}, "n_eval"),
    (1024, {"resolution": 32}, "allowed params"),
])
def test_pathfinder_check_refuses_impossible_settings(seq_len, params, match):
    with pytest.raises(SpecError, match=match):
        TASKS["pathfinder"].load().check(seq_len, params)


def test_pathfinder_path_x_and_difficulties_pass_check():
    cls = TASKS["pathfinder"].load()
    cls.check(16384, {})  # Path-X
    assert cls.validate(16384, {}) == (128, 14)
    assert cls.validate(4096, {"difficulty": "easy"}) == (64, 6)
    assert cls.validate(1024, {"difficulty": "intermediate"}) == (32, 9)


@pytest.mark.parametrize("res", [64, 128])
def test_pathfinder_larger_resolutions_follow_the_same_rules(res):
    s = pf.generate(4, np.random.default_rng(0), res, 14)
    style = pf.STYLES[res]
    assert s.images.shape == (4, res, res)
    for i in range(4):
        for t in (0, 1):
            assert (s.used[i] & (s.snake[i] == t)).sum() == 14
        first = 0 if np.allclose(s.markers[i, 0], s.origins[i, 0]) else 1
        assert np.allclose(s.markers[i, 0], s.origins[i, first])
        second = first if s.labels[i] else 1 - first
        assert np.allclose(s.markers[i, 1], s.ends[i, second])
        for m in s.markers[i]:
            assert s.images[i, round(m[1]), round(m[0])] == 255
        slots = np.flatnonzero(s.used[i] & (s.snake[i] == 0))
        paddles = s.segments[i, slots]
        gaps = np.linalg.norm(paddles[1:, :2] - paddles[:-1, 2:], axis=1)
        assert gaps.max() <= 2 * max(style.margins) + 1e-9


def test_pathfinder_grid_png_is_written(tmp_path):
    from PIL import Image

    out = tmp_path / "grid.png"
    assert pf.main(["--grid", str(out), "-n", "4", "--res", "32"]) == 0
    with Image.open(out) as im:
        assert im.size == (2 * (128 + 6), 2 * (128 + 6))  # 2x2 tiles of 4x upscaled 32 px
        assert im.mode == "RGB"
