"""Configuration, on the driver side: specs (the YAML files in ``tasks/``), their strict
validation, command-line overrides, and their expansion into typed jobs. Nothing here imports
torch at import time; checking a spec against the model and task registries imports the worker's
classes lazily."""
