"""The YAML specs users run; shipped inside the package as ``seqbench.specs``."""
