"""seqbench compare: planted slowdowns are flagged, identical distributions are not, status and
accuracy changes are flagged, and the exit codes follow the contract (1 / 0 / 2)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_results_dir

from seqbench.cli import main as cli
from seqbench.recording.schema import SCHEMA_VERSION
from seqbench.results.compare import (
    IMPROVEMENT,
    NOISE,
    REGRESSION,
    SAME,
    compare,
    compare_across_devices,
    mann_whitney_u,
)

DEVICE = "Test CPU"


def make_row(model: str = "lstm", seq_len: int = 64, seed: int = 0, *, step_s: float = 0.01,
             slowdown: float = 1.0, n_samples: int = 40, status: str = "ok",
             mse: float = 0.01, mem: int = 100 * 2**20, device: str = DEVICE,
             rng: np.random.Generator | None = None) -> dict:
    """A stored row with lognormal step-time samples (about 5 % spread) around ``step_s``."""
    rng = rng or np.random.default_rng(seed)
    tokens = 32 * seq_len
    train = list(step_s * slowdown * rng.lognormal(0.0, 0.05, n_samples))
    fwd = list(step_s / 3 * slowdown * rng.lognormal(0.0, 0.05, max(1, n_samples // 4)))
    config_hash = f"{model}-{seq_len}".ljust(64, "0")
    row = {
        "schema_version": SCHEMA_VERSION, "job_id": f"{config_hash[:16]}-s{seed}",
        "config_hash": config_hash, "seed": seed, "kind": "train", "task": "adding",
        "model": model, "seq_len": seq_len, "input_len": seq_len, "batch_size": 32,
        "status": status, "error": "" if status == "ok" else status, "device_name": device,
        "job": {"model": {"name": model}, "task": {"seq_len": seq_len}},
        "started_at": f"2026-11-25T00:00:{seed:02d}+00:00",
    }
    if status == "ok":
        row.update({
            "train_step_s_samples": train, "train_step_s_median": float(np.median(train)),
            "train_tokens_per_s": tokens / float(np.median(train)),
            "fwd_step_s_samples": fwd, "fwd_step_s_median": float(np.median(fwd)),
            "fwd_tokens_per_s": tokens / float(np.median(fwd)),
            "peak_mem_bytes": mem, "metric_mse": mse, "higher_is_better_mse": False,
            "primary_metric": "mse",
        })
    return row


def grid(seeds=(0, 1), models=("lstm", "gru"), lengths=(64, 256), **kw) -> list[dict]:
    return [make_row(m, L, s, **kw) for m in models for L in lengths for s in seeds]


def write_run(path: Path, rows: list[dict]) -> Path:
    return write_results_dir(path, rows)


def verdicts(result, quantity: str) -> dict[str, str]:
    return {f.config: f.verdict for f in result.findings if f.quantity == quantity}


# --- the U test ----------------------------------------------------------------------------

def test_mann_whitney_is_scipys_two_sided_test():
    import scipy.stats

    rng = np.random.default_rng(1)
    a, b = rng.normal(0, 1, 12), rng.normal(0.7, 1, 9)
    expected = scipy.stats.mannwhitneyu(a, b, alternative="two-sided")
    assert mann_whitney_u(a, b) == pytest.approx((expected.statistic, expected.pvalue))
    # complete separation of 3 vs 3: only 2 of the C(6,3) = 20 orderings are as extreme
    assert mann_whitney_u([1, 2, 3], [4, 5, 6]) == (0.0, pytest.approx(2 / 20))
    assert mann_whitney_u([7, 7, 7], [7, 7, 7])[1] == 1.0  # nothing differs
    assert mann_whitney_u([1.0, float("nan"), 2.0], [3.0, 4.0])[1] == pytest.approx(1 / 3)


# --- compare ------------------------------------------------------------------------------

def test_planted_2x_slowdown_is_a_regression():
    base = grid()
    new = [make_row(m, L, s, slowdown=2.0 if (m, L) == ("gru", 256) else 1.0,
                    rng=np.random.default_rng(100 + s))
           for m in ("lstm", "gru") for L in (64, 256) for s in (0, 1)]
    result = compare(base, new)
    train = verdicts(result, "train tok/s")
    assert train["adding L=256 gru"] == REGRESSION
    assert {v for k, v in train.items() if k != "adding L=256 gru"} == {SAME}
    flagged = result.regressions
    assert {f.config for f in flagged} == {"adding L=256 gru"}
    slow = next(f for f in flagged if f.quantity == "train tok/s")
    assert slow.ratio == pytest.approx(0.5, rel=0.05)  # NEW/BASE of tokens/s
    assert slow.p_value < 1e-6


def test_two_runs_of_identical_distributions_flag_nothing():
    base = grid()
    new = [make_row(m, L, s, rng=np.random.default_rng(500 + 7 * s + L))
           for m in ("lstm", "gru") for L in (64, 256) for s in (0, 1)]
    result = compare(base, new)
    assert result.matched == 4
    assert result.regressions == [] and result.improvements == []


def test_speedup_is_an_improvement_not_a_regression():
    base = grid(models=("lstm",), lengths=(64,))
    new = grid(models=("lstm",), lengths=(64,), slowdown=0.5)
    result = compare(base, new)
    assert verdicts(result, "train tok/s") == {"adding L=64 lstm": IMPROVEMENT}
    assert result.regressions == []


def test_ratio_past_threshold_without_significance_is_noise():
    # 3 noisy samples a side: even a 1.5x shift cannot reach p < 0.01 (min exact p = 0.1)
    base = [make_row(seed=0, n_samples=3, rng=np.random.default_rng(0))]
    new = [make_row(seed=0, n_samples=3, slowdown=1.5, rng=np.random.default_rng(1))]
    result = compare(base, new)
    assert verdicts(result, "train tok/s") == {"adding L=64 lstm": NOISE}
    assert result.regressions == []


def test_significant_change_below_threshold_is_not_flagged():
    base = grid(models=("lstm",), lengths=(64,), n_samples=400)
    new = grid(models=("lstm",), lengths=(64,), n_samples=400, slowdown=1.05)
    result = compare(base, new)
    finding = next(f for f in result.findings if f.quantity == "train tok/s")
    assert finding.p_value < 0.01  # the test sees the 5 % shift...
    assert finding.verdict == SAME  # ...but it is below the 1.1 threshold


def test_status_change_is_always_flagged():
    base = grid(models=("lstm",), lengths=(64,))
    new = [make_row("lstm", 64, 0), make_row("lstm", 64, 1, status="oom")]
    result = compare(base, new)
    status = [f for f in result.findings if f.quantity.startswith("status")]
    assert [(f.quantity, f.base, f.new, f.verdict) for f in status] == [
        ("status (seed 1)", "ok", "oom", REGRESSION)]
    fixed = compare(new, base)
    assert [f.verdict for f in fixed.findings if f.quantity.startswith("status")] == [IMPROVEMENT]


def test_accuracy_drop_beyond_tolerance_is_flagged_in_the_metric_direction():
    base = grid(models=("lstm",), lengths=(64,), mse=0.010)
    worse = grid(models=("lstm",), lengths=(64,), mse=0.050)  # lower is better: 5x worse
    within = grid(models=("lstm",), lengths=(64,), mse=0.015)  # inside 0.01 + 5 % x 0.01
    assert verdicts(compare(base, worse), "metric mse") == {"adding L=64 lstm": REGRESSION}
    assert verdicts(compare(worse, base), "metric mse") == {"adding L=64 lstm": IMPROVEMENT}
    assert verdicts(compare(base, within), "metric mse") == {"adding L=64 lstm": SAME}


def test_a_machine_wide_shift_is_named_in_the_summary():
    base = grid()
    drifted = compare(base, grid(slowdown=1.3))
    assert "median speed ratio NEW/BASE over all 8 speed quantities: 0.77" in drifted.summary()
    assert "median speed ratio" not in compare(base, grid()).summary()


def test_memory_growth_is_flagged_by_ratio():
    base = grid(models=("lstm",), lengths=(64,))
    new = grid(models=("lstm",), lengths=(64,), mem=150 * 2**20)
    assert verdicts(compare(base, new), "peak MiB") == {"adding L=64 lstm": REGRESSION}


def test_rows_match_only_on_the_same_device():
    base = grid(models=("lstm",), lengths=(64,))
    new = grid(models=("lstm",), lengths=(64,), device="Other CPU", slowdown=2.0)
    result = compare(base, new)
    assert result.matched == 0 and result.other_device == 1 and result.findings == []
    why = result.refusal()
    assert "BASE has 1 configuration(s) on Test CPU, NEW has 1 on Other CPU" in why
    assert "--across-devices" in why


def test_across_devices_matches_on_config_hash_and_says_so():
    base = grid()
    new = grid(device="Other CPU", slowdown=2.0)
    result = compare_across_devices(base, new)
    assert result.matched == 4 and result.other_device == 0  # every (model, length)
    assert set(verdicts(result, "train tok/s").values()) == {REGRESSION}
    assert {f.device for f in result.findings} == {"Test CPU -> Other CPU"}
    assert "ACROSS DEVICES" in result.header() and "Other CPU" in result.header()
    # seeds still pair within a configuration: a status change is named by its seed
    new[0]["status"] = "oom"
    changed = compare_across_devices(base, new)
    assert [f.quantity for f in changed.findings if f.quantity.startswith("status")] == [
        "status (seed 0)"]


def test_refusal_without_a_common_configuration_names_what_each_run_holds():
    base = grid(models=("lstm",))
    new = grid(models=("gru",), lengths=(64, 256, 1024))
    why = compare(base, new).refusal()
    assert "no configuration (config hash) is in both runs" in why
    assert "BASE has 2 configuration(s)" in why and "NEW has 3" in why


# --- the command --------------------------------------------------------------------------

def test_cli_exit_codes_and_markdown(tmp_path, capsys):
    base = write_run(tmp_path / "base", grid())
    same = write_run(tmp_path / "same", [make_row(m, L, s, rng=np.random.default_rng(9 + s))
                                         for m in ("lstm", "gru") for L in (64, 256)
                                         for s in (0, 1)])
    slow = write_run(tmp_path / "slow", grid(slowdown=2.0))
    assert cli(["compare", str(base), str(same)]) == 0
    md = tmp_path / "out" / "compare.md"
    assert cli(["compare", str(base), str(slow), "--markdown", str(md)]) == 1
    text = md.read_text()
    assert "| adding L=256 gru | train tok/s |" in text and "**regression**" in text
    # a .jsonl file works as well as a directory
    assert cli(["compare", str(base / "results.jsonl"), str(slow)]) == 1
    capsys.readouterr()


def test_cli_bad_input_exits_2(tmp_path, capsys):
    base = write_run(tmp_path / "base", grid())
    other = write_run(tmp_path / "other", grid(device="Other CPU"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"not": "a row"}) + "\n")
    assert cli(["compare", str(base), str(tmp_path / "missing")]) == 2
    assert cli(["compare", str(base), str(bad)]) == 2
    assert cli(["compare", str(base), str(other)]) == 2  # nothing in common
    assert cli(["compare", str(base), str(base), "--threshold", "0.9"]) == 2
    err = capsys.readouterr().err
    assert "other devices" in err and "--across-devices" in err and "--threshold" in err


def test_cli_across_devices(tmp_path, capsys):
    base = write_run(tmp_path / "base", grid())
    other = write_run(tmp_path / "other", grid(device="Other CPU", slowdown=2.0))
    md = tmp_path / "compare.md"
    assert cli(["compare", str(base), str(other), "--across-devices", "--markdown",
                str(md)]) == 1
    out = capsys.readouterr().out
    assert "ACROSS DEVICES" in out and "Test CPU" in out and "Other CPU" in out
    assert "ACROSS DEVICES" in md.read_text()
