"""The task registry: one line per task, imported lazily.

A new kind of data is one generator class in this package plus one ``TASKS.add(...)`` line; a
new experiment on existing data is one YAML file in ``tasks/``.
"""

from __future__ import annotations

from typing import Any

from seqbench.data.base import IGNORE, Metric, Task, TaskInfo
from seqbench.errors import SpecError
from seqbench.registry import Registry, TaskEntry

TASKS: Registry[TaskEntry] = Registry("task")
TASKS.add(TaskEntry("copy", "seqbench.data.synthetic:CopyMemory",
                    "copy memory (TCN study): recall 10 symbols after a delay T", kind="synthetic"))
TASKS.add(TaskEntry("adding", "seqbench.data.synthetic:Adding",
                    "adding problem (TCN variant): sum the two marked values", kind="synthetic"))
TASKS.add(TaskEntry("digits", "seqbench.data.embedded:Digits",
                    "scikit-learn 8x8 digits, pixel by pixel (64 steps)", kind="embedded"))
TASKS.add(TaskEntry("pdigits", "seqbench.data.embedded:PermutedDigits",
                    "digits under a fixed seeded pixel permutation", kind="embedded"))
TASKS.add(TaskEntry("ucr", "seqbench.data.embedded:UCR",
                    "UCR/UEA time-series classification bundled with sktime", kind="embedded"))
TASKS.add(TaskEntry("forecast", "seqbench.data.embedded:Forecast",
                    "forecast statsmodels series (co2, sunspots, elnino, nile)", kind="embedded"))
TASKS.add(TaskEntry("pystdlib", "seqbench.data.embedded:StdlibText",
                    "byte-level LM on CPython's standard library source", kind="embedded"))
TASKS.add(TaskEntry("smnist", "seqbench.data.local:SequentialMNIST",
                    "sequential MNIST from idx files (784 steps)", kind="local"))
TASKS.add(TaskEntry("psmnist", "seqbench.data.local:PermutedMNIST",
                    "permuted sequential MNIST from idx files", kind="local"))
TASKS.add(TaskEntry("scifar", "seqbench.data.local:SequentialCIFAR",
                    "sequential CIFAR-10, grayscale (1024 steps)", kind="local"))
TASKS.add(TaskEntry("imdb", "seqbench.data.local:IMDBBytes",
                    "byte-level IMDB sentiment (LRA Text)", kind="local"))
TASKS.add(TaskEntry("text8", "seqbench.data.local:Text8", "character-level LM on text8",
                    kind="local"))
TASKS.add(TaskEntry("enwik8", "seqbench.data.local:Enwik8", "byte-level LM on enwik8",
                    kind="local"))
TASKS.add(TaskEntry("ptb_char", "seqbench.data.local:PTBChar",
                    "character-level LM on Penn Treebank", kind="local"))
TASKS.add(TaskEntry("speech_commands", "seqbench.data.local:SpeechCommands",
                    "Speech Commands v0.02, 35 words, raw 16 kHz audio", kind="local"))


def build_task(name: str, seq_len: int, params: dict[str, Any] | None = None) -> Task:
    cls = TASKS[name].load()
    try:
        return cls(seq_len, **(params or {}))
    except TypeError as exc:
        raise SpecError(f"tasks.{name}.params", params, f"not accepted by {name}: {exc}") from None


__all__ = ["IGNORE", "TASKS", "Metric", "Task", "TaskInfo", "build_task"]
