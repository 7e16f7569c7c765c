"""Entry point of a job's worker process: ``python -m seqbench.worker IN.json OUT.json``.

A fresh interpreter per job (the equivalent of multiprocessing's spawn) contains crashes and
starts every memory counter from zero. ``--baseline`` imports the same modules and exits, so the
executor can subtract an idle worker's peak RSS from a job's.
"""

from __future__ import annotations

import json
import sys

from seqbench.store import write_json_atomic


def main(argv: list[str]) -> int:
    if argv[:1] == ["--baseline"]:
        import seqbench.runner  # noqa: F401  (the same imports as a job, nothing else)

        return 0
    in_path, out_path = argv
    with open(in_path, encoding="utf-8") as f:
        payload = json.load(f)
    from seqbench.runner import run_job

    row = run_job(payload["job"], payload.get("context", {}))
    write_json_atomic(out_path, row)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
