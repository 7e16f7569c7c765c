"""The GPU checks of seqbench/bench/gpu_check.py under pytest, one test per check:

    pytest -m gpu tests/gpu

Deselected by the default run (``-m 'not ... gpu'``) and skipped where no CUDA device is
usable; ``python -m seqbench.bench.gpu_check -o gpu-report.md`` runs the same checks and writes
the report.
"""

from __future__ import annotations

import pytest
import torch

from seqbench.bench import gpu_check

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(),
                                 reason="needs a CUDA device (torch.cuda.is_available() is False)")]


@pytest.mark.parametrize("name", gpu_check.check_names())
def test_gpu_check(name):
    result = gpu_check.run_check(name, torch.device("cuda"))
    if result.status == "skip":
        pytest.skip(result.detail)
    assert result.status == "pass", result.detail
