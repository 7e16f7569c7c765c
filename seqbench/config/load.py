"""Loading a spec: find the file (a path, or the name of a shipped spec), read it strictly
(:mod:`seqbench.config.yaml_strict`), apply command-line overrides, validate
(:mod:`seqbench.config.spec`) and check it against the registries
(:mod:`seqbench.config.resolve`). Every refusal is one line and exit code 2, before anything
is written.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from seqbench.config.messages import spec_error
from seqbench.config.overrides import Overrides
from seqbench.config.resolve import check_suite
from seqbench.config.spec import Suite
from seqbench.config.yaml_strict import read_spec_file
from seqbench.errors import SpecError

DEFAULT_SPEC = "quick"


def find_spec(name_or_path: str | None) -> Path:
    """A spec path, or the name of a shipped spec (``quick`` -> the packaged tasks/quick.yaml)."""
    name_or_path = name_or_path or DEFAULT_SPEC
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") or path.exists():
        return path
    shipped = resources.files("seqbench.specs") / f"{name_or_path}.yaml"
    if shipped.is_file():
        return Path(str(shipped))
    raise SpecError("spec", name_or_path,
                    f"not a file; shipped specs: {', '.join(shipped_specs())}")


def shipped_specs() -> list[str]:
    root = resources.files("seqbench.specs")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def parse_suite(data: dict[str, Any], source: str = "spec",
                overrides: Overrides | None = None) -> Suite:
    """Validate spec data (after ``overrides``, if any) and check it against the registries."""
    if overrides is not None:
        data = overrides.apply(data, source)
    try:
        suite = Suite.model_validate(data)
    except ValidationError as exc:
        raise spec_error(exc, source) from None
    if overrides is not None:
        suite = overrides.select(suite, source)
    check_suite(suite, source)
    return suite


def load_suite(name_or_path: str | None,
               overrides: Overrides | None = None) -> tuple[Suite, Path]:
    path = find_spec(name_or_path)
    return parse_suite(read_spec_file(path), str(path), overrides), path
