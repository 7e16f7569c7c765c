"""``python -m seqbench.cli``: the same as the ``seqbench`` command."""

import sys

from seqbench.cli import main

sys.exit(main())
