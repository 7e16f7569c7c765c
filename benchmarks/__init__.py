"""The asv suite (``asv.conf.json`` at the top level): a thin layer over seqbench's own jobs and
measurement code. See :mod:`benchmarks.training`."""
