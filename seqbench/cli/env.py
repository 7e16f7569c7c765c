"""``seqbench env``: the provenance every row will carry, and which kernel paths work here."""

from __future__ import annotations

import argparse
import json


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    import torch

    from seqbench.catalog import MODELS
    from seqbench.config.expand import resolve_device
    from seqbench.recording.provenance import code_provenance
    from seqbench.worker.backends import probe
    from seqbench.worker.provenance import runtime_provenance

    device = resolve_device("auto")
    info = {**code_provenance(), **runtime_provenance(device)}
    backends = probe()
    models = {}
    for entry in MODELS:
        try:
            cls = entry.load()
            reason = cls.unavailable_reason(cls.Config(), torch.device(device))
        except Exception as exc:  # a broken model file must not hide the others
            reason = f"{type(exc).__name__}: {exc}"
        models[entry.name] = reason
    if args.json:
        print(json.dumps({"provenance": info, "backends": backends, "models": models}, indent=2))
        return 0
    print("provenance:")
    for key, value in info.items():
        print(f"  {key:<18} {value}")
    print("backends:")
    for name, reason in backends.items():
        print(f"  {name:<18} {'available' if reason is None else 'unavailable: ' + reason}")
    print(f"models on {device}:")
    for name, reason in models.items():
        print(f"  {name:<18} {'runs' if reason is None else 'unavailable: ' + reason}")
    return 0
