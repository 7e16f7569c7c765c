"""seqbench/bench/prefill.py: the parallel prefill and the token-by-token prefill are timed
only when they return the same outputs and state; a prefill that returns a wrong state is
reported as a mismatch (exit 1)."""

from __future__ import annotations

import torch

from seqbench.bench import prefill
from seqbench.worker.models import MODELS


def test_both_prefills_agree_and_the_ratio_is_reported(capsys):
    assert prefill.main(["--models", "mamba", "lru", "--lengths", "9", "--threads", "1",
                         "--repeats", "1", "--width", "16"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "ratio" in line]
    assert len(lines) == 2 and all("MISMATCH" not in line for line in lines)


def test_a_wrong_state_is_a_mismatch(monkeypatch, capsys):
    cls = MODELS["minlstm"].load()
    real = cls.prefill

    def off_by_one_step(self, x):
        _, state = real(self, x[:, :-1])  # the state one token early
        return real(self, x)[0], state

    monkeypatch.setattr(cls, "prefill", off_by_one_step)
    torch.manual_seed(0)
    m = cls(16, cls.Config()).eval()
    x = torch.randn(1, 9, 16)
    assert prefill.compare(m, x, 1, 5.0)["max_rel_diff"] > 1e-2
    assert prefill.main(["--models", "minlstm", "--lengths", "9", "--threads", "1",
                         "--repeats", "1", "--width", "16"]) == 1
    assert "MISMATCH" in capsys.readouterr().out


def test_states_are_compared_leaf_by_leaf():
    a, b = torch.ones(2), torch.zeros(3)
    assert prefill.leaves({"z": a, "a": [b, (a,)]}) == [b, a, a]
