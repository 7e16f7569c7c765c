"""Pure-PyTorch kernels of the state-space mixers, each next to its naive reference:
the selective scan (Mamba), the chunked SSD (Mamba-2) and the short causal convolution.
"""

from seqbench.worker.models.ops.conv import causal_conv, causal_conv_step
from seqbench.worker.models.ops.selective_scan import (
    selective_scan,
    selective_scan_naive,
    selective_scan_step,
)
from seqbench.worker.models.ops.ssd import segsum, ssd_chunked, ssd_naive, ssd_step

__all__ = ["causal_conv", "causal_conv_step", "segsum", "selective_scan", "selective_scan_naive",
           "selective_scan_step", "ssd_chunked", "ssd_naive", "ssd_step"]
