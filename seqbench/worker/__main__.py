"""``python -m seqbench.worker``: the entry point of a job's worker process (see
:mod:`seqbench.worker.process`)."""

import sys

from seqbench.worker.process import main

sys.exit(main(sys.argv[1:]))
