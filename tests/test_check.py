"""Expected orderings (spec ``expect``) and ``seqbench check``: verdicts from chosen seed values,
the baseline side, evaluation settings, model params, exit codes and refusals."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import scipy.stats
from conftest import complete_row, tiny_spec, write_results_dir

from seqbench.cli import main as cli
from seqbench.config import expand, parse_suite
from seqbench.errors import SpecError
from seqbench.results import check as ck

MODELS = [{"name": "gru", "params": {"d_model": 8}}, {"name": "rnn", "params": {"d_model": 8}},
          {"name": "lstm", "params": {"d_model": 8, "n_layers": 1}},
          {"name": "lstm", "params": {"d_model": 8, "mlp_ratio": 0.0}}]
LSTM = {"name": "lstm", "params": {"n_layers": 1}}  # the first LSTM ("lstm" names both)


def _spec(expect: list[dict[str, Any]], **kw: Any) -> dict[str, Any]:
    return tiny_spec(**{"seeds": [0, 1, 2], "models": MODELS, "expect": expect, **kw})


def _results(tmp_path: Path, expect: list[dict[str, Any]], values: dict[str, list[float]],
             *, status: dict[str, str] | None = None, evals: dict[str, list[float]] | None = None,
             grad: dict[str, list[float]] | None = None, **kw: Any) -> Path:
    """A results dir of the spec with metric_mse per model label chosen seed by seed;
    labels: gru, rnn, lstm, lstm-nomlp. ``evals``: the same at an evaluation length 12."""
    suite = parse_suite(_spec(expect, **kw))
    rows = []
    for job in expand(suite):
        label = job.model.name + ("-nomlp" if "mlp_ratio" in job.model.params else "")
        if label not in values:
            continue
        value = values[label][job.seed]
        fields: dict[str, Any] = {"status": (status or {}).get(label, "ok"),
                                  "metric_mse": value, "baseline_mse": 1 / 6,
                                  "higher_is_better_mse": False, "primary_metric": "mse"}
        if grad is not None and label in grad:
            fields["grad_profile"] = [{"step": 0, "decay_per_step": grad[label][job.seed]},
                                      {"step": 4, "decay_per_step": -grad[label][job.seed]}]
        if evals is not None and label in evals:
            fields["evals"] = [{"seq_len": 12, "params": {}, "input_len": 12, "status": "ok",
                                "error": "", "metric_mse": evals[label][job.seed],
                                "baseline_mse": 1 / 6}]
        rows.append(complete_row(job, **fields).to_dict())
    return write_results_dir(tmp_path / "res", rows, suite=suite.name, spec=suite.dump())


def _only(check: ck.Check) -> ck.Verdict:
    assert len(check.verdicts) == 1, check.verdicts
    return check.verdicts[0]


GOOD, BAD = [0.01, 0.02, 0.015], [0.15, 0.16, 0.17]


def test_held_with_welch_numbers(tmp_path: Path) -> None:
    path = _results(tmp_path, [{"better": "gru", "worse": "rnn", "metric": "mse"}],
                    {"gru": GOOD, "rnn": BAD})
    v = _only(ck.check_dir(path))
    assert v.status == ck.HELD and not v.higher_is_better
    assert v.better_mean == pytest.approx(0.015) and v.worse_mean == pytest.approx(0.16)
    assert v.margin_diff == pytest.approx(0.145)  # lower is better: worse minus better
    expected = scipy.stats.ttest_ind(GOOD, BAD, equal_var=False)
    assert v.p_value == pytest.approx(expected.pvalue)
    assert v.low < v.margin_diff < v.high and v.low > 0


def test_flipped_below_margin_not_separated_untestable(tmp_path: Path) -> None:
    expect = [{"better": "rnn", "worse": "gru", "metric": "mse"},
              {"better": "gru", "worse": "rnn", "metric": "mse", "margin": 0.2},
              {"better": "gru", "worse": LSTM, "metric": "mse"}]
    path = _results(tmp_path, expect, {"gru": GOOD, "rnn": BAD, "lstm": [0.02, 0.01, 0.016]})
    check = ck.check_dir(path)
    assert [v.status for v in check.verdicts] == [ck.FLIPPED, ck.BELOW, ck.NOT_SEPARATED]
    assert check.failed() and check.failed(strict=True)
    assert check.counts() == {ck.FLIPPED: 1, ck.BELOW: 1, ck.NOT_SEPARATED: 1}
    # one seed only: no test, whatever the means say
    one = _results(tmp_path / "one", [{"better": "gru", "worse": "rnn", "metric": "mse"}],
                   {"gru": GOOD, "rnn": BAD}, seeds=[0])
    assert _only(ck.check_dir(one)).status == ck.UNTESTABLE


def test_missing_when_every_seed_of_a_side_failed(tmp_path: Path) -> None:
    path = _results(tmp_path, [{"better": "gru", "worse": "rnn", "metric": "mse"}],
                    {"gru": GOOD, "rnn": BAD}, status={"rnn": "oom"})
    v = _only(ck.check_dir(path))
    assert v.status == ck.MISSING and "3 oom" in v.note and v.failing


def test_no_rows_at_all_is_missing(tmp_path: Path) -> None:
    path = _results(tmp_path, [{"better": "gru", "worse": "rnn", "metric": "mse"}],
                    {"lstm": GOOD})
    check = ck.check_dir(path)
    assert not check.verdicts and check.unmatched and check.failed()


def test_baseline_side(tmp_path: Path) -> None:
    expect = [{"better": "gru", "worse": "baseline", "metric": "mse", "margin": 0.1},
              {"better": "rnn", "worse": "baseline", "metric": "mse"}]
    path = _results(tmp_path, expect, {"gru": GOOD, "rnn": [0.16, 0.17, 0.168]})
    held, near = ck.check_dir(path).verdicts
    assert held.status == ck.HELD and held.worse_mean == pytest.approx(1 / 6)
    assert held.margin_diff == pytest.approx(1 / 6 - 0.015)
    assert near.status == ck.NOT_SEPARATED  # the RNN sits at the trivial baseline


def test_model_params_pick_one_entry(tmp_path: Path) -> None:
    expect = [{"better": {"name": "lstm", "params": {"mlp_ratio": 0.0}}, "worse": "rnn",
               "metric": "mse"}]
    path = _results(tmp_path, expect, {"lstm": BAD, "lstm-nomlp": GOOD, "rnn": BAD})
    v = _only(ck.check_dir(path))
    assert v.status == ck.HELD and v.better_mean == pytest.approx(0.015)
    assert "mlp_ratio=0.0" in ck.table(ck.check_dir(path))["expectation"][0]


def test_eval_length_reads_the_evaluation_setting(tmp_path: Path) -> None:
    tasks = [{"name": "adding", "seq_lens": [6], "eval": [{"seq_lens": [12]}]}]
    expect = [{"better": "gru", "worse": "rnn", "metric": "mse", "eval_len": 12},
              {"better": "gru", "worse": "rnn", "metric": "mse"}]
    path = _results(tmp_path, expect, {"gru": GOOD, "rnn": BAD}, tasks=tasks,
                    evals={"gru": BAD, "rnn": GOOD})  # at length 12 the ordering flips
    at_eval, main = ck.check_dir(path).verdicts
    assert (at_eval.eval_len, at_eval.seq_len, at_eval.status) == (12, 6, ck.FLIPPED)
    assert (main.eval_len, main.status) == (6, ck.HELD)


def test_cli_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    held = _results(tmp_path / "a", [{"better": "gru", "worse": "rnn", "metric": "mse"}],
                    {"gru": GOOD, "rnn": BAD})
    weak = _results(tmp_path / "b", [{"better": "gru", "worse": LSTM, "metric": "mse"}],
                    {"gru": GOOD, "lstm": GOOD})
    flip = _results(tmp_path / "c", [{"better": "rnn", "worse": "gru", "metric": "mse"}],
                    {"gru": GOOD, "rnn": BAD})
    md = tmp_path / "out" / "check.md"
    assert cli(["check", str(held), "--markdown", str(md)]) == 0
    assert "| held |" in md.read_text()
    assert cli(["check", str(weak)]) == 0
    assert cli(["check", str(weak), "--strict"]) == 1
    assert cli(["check", str(held), str(flip)]) == 1
    assert "FLIPPED" in capsys.readouterr().out
    assert cli(["check", str(tmp_path)]) == 2  # not a results directory
    assert "RESULTS" in capsys.readouterr().err


def test_expect_refused_at_load() -> None:
    cases = [
        ({"better": "mamba", "worse": "gru", "metric": "mse"}, "expect[0].better"),
        ({"better": {"name": "lstm", "params": {"mlp_ratio": 3.0}}, "worse": "gru",
          "metric": "mse"}, "expect[0].better"),
        ({"better": "gru", "worse": "gru", "metric": "mse"}, "expect[0]"),
        ({"better": "lstm", "worse": "gru", "metric": "mse"}, "expect[0].better"),  # 2 match
        ({"better": "gru", "worse": "rnn", "metric": "accuracy"}, "expect[0].metric"),
        ({"better": "gru", "worse": "rnn", "metric": "mse", "task": "copy"}, "expect[0].task"),
        ({"better": "gru", "worse": "rnn", "metric": "mse", "seq_len": 7}, "expect[0].seq_len"),
        ({"better": "gru", "worse": "rnn", "metric": "mse", "eval_len": 12},
         "expect[0].eval_len"),
        ({"better": "baseline", "worse": "rnn", "metric": "mse", "margin": math.inf},
         "expect[0].margin"),
    ]
    from seqbench.config.resolve import check_suite

    for entry, field in cases:
        with pytest.raises(SpecError) as info:
            check_suite(parse_suite(_spec([entry])), "spec.yaml")
        assert info.value.field.startswith(field), (entry, str(info.value))


def test_expect_leaves_job_ids_alone() -> None:
    plain = [j.job_id for j in expand(parse_suite(_spec([])))]
    expect = [{"better": "gru", "worse": "rnn", "metric": "mse"}]
    assert [j.job_id for j in expand(parse_suite(_spec(expect)))] == plain


def test_report_shows_the_verdicts(tmp_path: Path) -> None:
    from seqbench.results.report import write_report

    path = _results(tmp_path, [{"better": "rnn", "worse": "gru", "metric": "mse",
                                "why": "planted flip"}], {"gru": GOOD, "rnn": BAD})
    page = write_report(path, tmp_path / "report", figures=False)
    text = (page.parent / "report.md").read_text()
    assert "Expected orderings: tiny" in text and "| flipped |" in text
    assert "1 flipped" in text


def test_gradient_decay_metrics(tmp_path: Path) -> None:
    """grad_decay_init/_end come from the probe at step 0 and the last probe; higher (a slower
    decay) is better."""
    expect = [{"better": "gru", "worse": "rnn", "metric": "grad_decay_init"},
              {"better": "gru", "worse": "rnn", "metric": "grad_decay_end"}]
    train = {**tiny_spec()["train"], "grad_probe": {"at": ["init", "end"]}}
    path = _results(tmp_path, expect, {"gru": GOOD, "rnn": BAD}, train=train,
                    grad={"gru": [-0.01, -0.02, -0.015], "rnn": [-0.5, -0.6, -0.55]})
    init, end = ck.check_dir(path).verdicts
    assert init.status == ck.HELD and init.better_mean == pytest.approx(-0.015)
    assert end.status == ck.FLIPPED and end.worse_mean == pytest.approx(0.55)
    with pytest.raises(SpecError, match=r"expect\[0\]\.metric"):  # no probe, no such metric
        from seqbench.config.resolve import check_suite

        check_suite(parse_suite(_spec(expect)), "spec.yaml")


def test_ood_metric_is_the_mean_beyond_the_training_lengths(tmp_path: Path) -> None:
    tasks = [{"name": "adding", "seq_lens": [6], "eval": [{"seq_lens": [12]}]}]
    expect = [{"better": "gru", "worse": "rnn", "metric": "ood_mse"}]
    path = _results(tmp_path, expect, {"gru": BAD, "rnn": BAD}, tasks=tasks,
                    evals={"gru": GOOD, "rnn": BAD})  # equal at 6, apart at 12
    v = _only(ck.check_dir(path))
    assert v.status == ck.HELD and v.better_mean == pytest.approx(0.015)
    assert (v.seq_len, v.eval_len) == (6, 6)  # a per-job score, on the main record


REPRODUCTIONS = Path(__file__).resolve().parent.parent / "results"


@pytest.mark.parametrize("spec", __import__("seqbench.execution.nightly",
                                            fromlist=["REPRODUCTIONS"]).REPRODUCTIONS)
def test_committed_reproduction_runs_show_no_flipped_ordering(spec: str) -> None:
    """Each CPU reproduction's committed reference run holds its spec's jobs and none of its
    expected orderings flipped or went missing (what the nightly run checks)."""
    from seqbench.config import load_suite

    suite, _ = load_suite(spec)
    path = REPRODUCTIONS / f"reference-{spec}"
    stored = {r["job_id"] for r in ck.read_dir(path).rows()}
    assert {j.job_id for j in expand(suite)} == stored
    check = ck.check_dir(path, suite.expect)
    assert check.verdicts and not check.failed(), ck.to_markdown(check)
