"""Configuration, on the driver side: specs (the YAML files in ``tasks/``), their strict
validation, command-line overrides, and their expansion into typed jobs. Nothing here imports
torch at import time; checking a spec against the model and task registries imports the worker's
classes lazily."""

from seqbench.config.expand import expand, resolve_device, spec_hash
from seqbench.config.job import Job
from seqbench.config.load import find_spec, load_suite, parse_suite, shipped_specs
from seqbench.config.overrides import Overrides
from seqbench.config.spec import Suite

__all__ = ["Job", "Overrides", "Suite", "expand", "find_spec", "load_suite", "parse_suite",
           "resolve_device", "shipped_specs", "spec_hash"]
