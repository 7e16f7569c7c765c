"""Kernels of the state-space mixers, each next to its naive reference: the selective scan
(Mamba), the SSD (Mamba-2) and the short causal convolution, each as a pure-PyTorch path and as
a fused C++ CPU kernel (``*_fused``, built by :mod:`~seqbench.worker.models.ops.native`).
"""

from seqbench.worker.models.ops import native
from seqbench.worker.models.ops.conv import causal_conv, causal_conv_fused, causal_conv_step
from seqbench.worker.models.ops.selective_scan import (
    selective_scan,
    selective_scan_fused,
    selective_scan_naive,
    selective_scan_step,
)
from seqbench.worker.models.ops.ssd import segsum, ssd_chunked, ssd_fused, ssd_naive, ssd_step

__all__ = ["causal_conv", "causal_conv_fused", "causal_conv_step", "native", "segsum",
           "selective_scan", "selective_scan_fused", "selective_scan_naive",
           "selective_scan_step", "ssd_chunked", "ssd_fused", "ssd_naive", "ssd_step"]
