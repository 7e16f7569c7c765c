"""Entry point of a job's worker process.

``python -m seqbench.worker IN.json OUT.json`` runs one job in a fresh interpreter
(multiprocessing's spawn): it pays the torch import (about 2 s on a 2-core CPU) for every job.

``python -m seqbench.worker --zygote`` is the fork server the local executor uses by default: it
imports what a job imports once, never runs a tensor op, and forks one fresh child per job. A
child starts with the imports done but with nothing else shared: no CUDA context (the zygote
checks that CUDA is not initialised before every fork), no allocator cache, no OpenMP pool, its
own session and memory cap. Its exit status and peak RSS come from ``os.wait4`` in the zygote.
Protocol, one JSON object per line: the zygote first says ``{"baseline_rss": bytes}`` (the peak
RSS of an idle forked child); then for each request ``{"in": .., "out": .., "err": .., "cap": ..}``
it answers ``{"pid": pid}`` at once and ``{"status": wait status, "rss": bytes}`` when the child
has exited. End of input ends the zygote.

``--baseline`` imports the same modules and exits, so the executor can subtract an idle worker's
peak RSS from a job's. Both ways preload the same modules (``preload``), so a job's peak memory
never includes the ~60 MiB of modules torch imports lazily the first time an optimizer is built.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from typing import Any

from seqbench.recording.store import write_json_atomic


def run_payload(in_path: str, out_path: str) -> None:
    """Run the job of a payload file (``{"job": .., "context": ..}``) and write its row."""
    from seqbench.config.job import Job
    from seqbench.recording.rows import RunContext
    from seqbench.worker.job import run_job

    with open(in_path, encoding="utf-8") as f:
        payload = json.load(f)
    row = run_job(Job.parse(payload["job"]), RunContext(**payload.get("context", {})))
    write_json_atomic(out_path, row)


def _send(message: dict[str, Any]) -> None:
    os.write(1, (json.dumps(message) + "\n").encode())


def _child(request: dict[str, Any], zygote_pid: int) -> None:
    """In the forked child: become a fresh job process, run the job, never return."""
    code = 1
    try:
        from seqbench.execution.local import child_setup

        os.setsid()  # its own process group: a timeout kills it and whatever it started
        child_setup(int(request.get("cap") or 0), parent=zygote_pid)()
        null = os.open(os.devnull, os.O_RDWR)
        err = os.open(request["err"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(null, 0)
        os.dup2(null, 1)  # the zygote's protocol pipe is no longer reachable from the job
        os.dup2(err, 2)
        if request.get("in"):
            run_payload(request["in"], request["out"])
        code = 0
    except BaseException:  # whatever happens, the child must not return
        traceback.print_exc()
    finally:
        try:
            sys.stderr.flush()
        finally:
            os._exit(code)


def preload() -> None:
    """Import, without running a tensor op, what jobs import: torch, seqbench's runner, every
    registered model and task module, and torch._dynamo (the first optimizer a process builds
    imports it: 1.9 s of every job on a 2-core CPU). A module that fails to import here is left
    for the job to import, and to report."""

    import torch._dynamo  # noqa: F401

    import seqbench.worker.job  # noqa: F401
    from seqbench.config.params import check_dataclass, check_signature
    from seqbench.worker.data import TASKS
    from seqbench.worker.models import MODELS
    from seqbench.worker.models.base import BackboneConfig

    check_dataclass(BackboneConfig, {}, "preload")
    for entry in [*MODELS, *TASKS]:
        try:
            target = entry.load()
            # build the strict param checkers now, so every forked job inherits them
            if entry in MODELS:
                check_dataclass(target.Config, {}, "preload")
            else:
                check_signature(target.__init__, {}, "preload")
        except Exception:  # an optional dependency missing: the job will say so
            continue


def zygote() -> int:
    import torch

    preload()

    def fork_and_wait(request: dict[str, Any], announce: bool) -> tuple[int, int]:
        if torch.cuda.is_initialized():  # a forked CUDA context is unusable: refuse to go on
            raise RuntimeError("CUDA was initialised in the zygote; forked workers would break")
        pid = os.fork()
        if pid == 0:
            _child(request, zygote_pid)
        if announce:
            _send({"pid": pid})
        _, status, usage = os.wait4(pid, 0)
        return status, usage.ru_maxrss * 1024  # ru_maxrss is in KiB on Linux

    zygote_pid = os.getpid()
    _, baseline = fork_and_wait({"err": os.devnull}, announce=False)
    _send({"baseline_rss": baseline})
    for line in sys.stdin:
        if not line.strip():
            continue
        status, rss = fork_and_wait(json.loads(line), announce=True)
        _send({"status": status, "rss": rss})
    return 0


def main(argv: list[str]) -> int:
    if argv[:1] == ["--zygote"]:
        return zygote()
    preload()  # a spawned worker imports what a forked one starts with: same memory baseline
    if argv[:1] == ["--baseline"]:
        return 0
    in_path, out_path = argv
    run_payload(in_path, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
