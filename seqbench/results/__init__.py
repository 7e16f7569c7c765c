"""Reading, aggregating, plotting and reporting seqbench results.

>>> from seqbench.results import load, aggregate, summary_table
>>> df = load("results/quick")            # one row per job, units in column names
>>> stats = aggregate(df)                 # mean, std, n, bootstrap 95% CI, failed seeds
>>> summary_table(df)                     # the compact table `seqbench run` prints

Figures live in :mod:`seqbench.results.plots`, reports in :mod:`seqbench.results.report`
(both import matplotlib, so they are not imported here).
"""

from seqbench.results.load import ResultsWarning, describe, load, to_parquet
from seqbench.results.stats import aggregate, bootstrap_ci, summary_table

__all__ = ["ResultsWarning", "aggregate", "bootstrap_ci", "describe", "load", "summary_table",
           "to_parquet"]
