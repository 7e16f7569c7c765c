"""Subcommands of the ``seqbench`` CLI, one module each (see ``seqbench.cli.COMMANDS``)."""
