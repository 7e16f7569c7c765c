"""Benchmark scripts that compare seqbench code paths side by side (python -m seqbench.bench.X)."""
