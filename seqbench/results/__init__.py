"""Reading, aggregating, plotting and reporting seqbench results.

>>> from seqbench.results import load, aggregate, summary_table
>>> df = load("results/quick")            # one row per job, units in column names
>>> stats = aggregate(df)                 # mean, std, n, 95% CI (t; none below 3 seeds), failed
>>> summary_table(df)                     # the compact table `seqbench run` prints

Which model beats which: :func:`~seqbench.results.stats.difference` (Welch's t-test),
:func:`~seqbench.results.stats.rank` (a ranking with its uncertainty). Figures live in
:mod:`seqbench.results.plots`, reports in :mod:`seqbench.results.report` (both import
matplotlib, so they are not imported here).
"""

from seqbench.results.load import ResultsWarning, describe, load, to_parquet
from seqbench.results.stats import aggregate, difference, interval, rank, summary_table

__all__ = ["ResultsWarning", "aggregate", "describe", "difference", "interval", "load", "rank",
           "summary_table", "to_parquet"]
