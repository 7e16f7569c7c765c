"""Recording: the row schema, building rows, the results store (one atomic file per job plus
the consolidated JSONL), the one reader of results directories, validation and provenance.
Torch-free: both sides use it."""
