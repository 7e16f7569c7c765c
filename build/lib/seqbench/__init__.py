"""seqbench: accuracy, peak memory and throughput of sequence architectures as length grows."""

__version__ = "0.1.0"
