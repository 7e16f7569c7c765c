"""Reading, aggregating, plotting and reporting seqbench results."""
