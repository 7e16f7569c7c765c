"""The catalogue: every registered architecture and task, torch-free.

One line per model and one per task. An entry names its implementation as
``"package.module:attr"``; the module is imported only when the entry is first loaded, so the
driver (spec validation, listings, tables and plots) reads names, display names, colours,
markers, families and order without importing torch or any model code. Registration order is
the order of architectures in every table and plot, and ``display``, ``color`` and ``marker``
are their only source.

A new architecture is one file in ``seqbench/worker/models/`` plus one ``MODELS.add(...)`` line
here; a new kind of data is one generator class in ``seqbench/worker/data/`` plus one
``TASKS.add(...)`` line.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from seqbench.errors import UnknownNameError

E = TypeVar("E", bound="Entry")


@dataclass(frozen=True)
class Entry:
    name: str
    target: str  # "package.module:attr", imported lazily
    description: str = ""

    @property
    def module(self) -> str:
        return self.target.partition(":")[0]

    def load(self) -> Any:
        module_name, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module_name), attr)


@dataclass(frozen=True)
class ModelEntry(Entry):
    display: str = ""  # name shown in tables and plots
    color: str = "#333333"  # one colour per architecture, used by every plot
    family: str = ""  # "rnn", "attention", "linear-attention", "ssm", "conv"
    marker: str = "o"  # matplotlib marker: models with equal values stay distinguishable
    linestyle: str = "-"  # matplotlib line style, for the same reason


@dataclass(frozen=True)
class TaskEntry(Entry):
    kind: str = "synthetic"  # "synthetic", "embedded" (ships in a package), "local" (data dir)


@dataclass
class Registry(Generic[E]):
    kind: str  # "model" or "task", used in error messages
    _entries: dict[str, E] = field(default_factory=dict)

    def add(self, entry: E) -> E:
        if entry.name in self._entries:
            raise ValueError(f"duplicate {self.kind} name {entry.name!r}")
        self._entries[entry.name] = entry
        return entry

    def __getitem__(self, name: str) -> E:
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise UnknownNameError(self.kind, name, self.names()) from None

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[E]:
        return iter(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    def names(self) -> list[str]:
        return list(self._entries)

    def order(self, name: str) -> int:
        """Registration order, the canonical order of architectures in tables and plots."""
        names = self.names()
        return names.index(name) if name in names else len(names)


def display_name(model: str) -> str:
    """The model's display name, or the name itself for a model this seqbench does not know."""
    return (MODELS[model].display or model) if model in MODELS else model


_M = "seqbench.worker.models"
MODELS: Registry[ModelEntry] = Registry("model")
MODELS.add(ModelEntry("rnn", f"{_M}.rnn:RNN", "Elman RNN (tanh), torch.nn / cuDNN",
                      display="RNN", color="#7f7f7f", family="rnn", marker="v", linestyle=":"))
MODELS.add(ModelEntry("lstm", f"{_M}.rnn:LSTM", "LSTM, torch.nn / cuDNN",
                      display="LSTM", color="#1f77b4", family="rnn", marker="s"))
MODELS.add(ModelEntry("gru", f"{_M}.rnn:GRU", "GRU, torch.nn / cuDNN",
                      display="GRU", color="#2ca02c", family="rnn", marker="^", linestyle="--"))
MODELS.add(ModelEntry("transformer", f"{_M}.transformer:Attention",
                      "causal softmax attention (scaled_dot_product_attention)",
                      display="Transformer", color="#d62728", family="attention", marker="D"))
MODELS.add(ModelEntry("transformer_math", f"{_M}.transformer:MathAttention",
                      "naive attention: the same model, math SDPA kernel (L x L scores in memory)",
                      display="Transformer (math)", color="#ff9896", family="attention",
                      marker="d", linestyle="-."))
MODELS.add(ModelEntry("s4d", f"{_M}.s4d:S4D", "diagonal SSM (S4D-Lin), FFT convolution",
                      display="S4D", color="#9467bd", family="ssm", marker="P", linestyle="--"))
MODELS.add(ModelEntry("mamba", f"{_M}.mamba:Mamba",
                      "selective SSM: mamba_ssm CUDA kernels, else seqbench's chunked scan",
                      display="Mamba", color="#ff7f0e", family="ssm", marker="o"))
MODELS.add(ModelEntry("mamba2", f"{_M}.mamba2:Mamba2",
                      "SSD (Mamba-2): mamba_ssm Triton kernels, else seqbench's chunked SSD",
                      display="Mamba-2", color="#8c564b", family="ssm", marker="X",
                      linestyle=":"))
MODELS.add(ModelEntry("tcn", f"{_M}.tcn:TCN",
                      "temporal convolutional network (Bai et al. 2018), dilated causal convs",
                      display="TCN", color="#17becf", family="conv", marker="h", linestyle="-."))
MODELS.add(ModelEntry("mingru", f"{_M}.minrnn:MinGRU", "minGRU (Feng et al. 2024), parallel scan",
                      display="minGRU", color="#bcbd22", family="rnn", marker="<",
                      linestyle="--"))
MODELS.add(ModelEntry("minlstm", f"{_M}.minrnn:MinLSTM",
                      "minLSTM (Feng et al. 2024), parallel scan",
                      display="minLSTM", color="#aec7e8", family="rnn", marker=">",
                      linestyle=":"))
MODELS.add(ModelEntry("lru", f"{_M}.lru:LRU",
                      "linear recurrent unit (Orvieto et al. 2023), complex diagonal recurrence",
                      display="LRU", color="#e377c2", family="ssm", marker="p", linestyle="-."))
MODELS.add(ModelEntry("gla", f"{_M}.gla:GLA",
                      "gated linear attention (Yang et al. 2024): fla kernels, else chunked torch",
                      display="GLA", color="#98df8a", family="linear-attention", marker="*",
                      linestyle="--"))
MODELS.add(ModelEntry("hyena", f"{_M}.hyena:Hyena",
                      "Hyena (Poli et al. 2023): implicit long filters, FFT convolution",
                      display="Hyena", color="#c5b0d5", family="conv", marker="8",
                      linestyle=":"))
MODELS.add(ModelEntry("xlstm", f"{_M}.xlstm:XLSTM",
                      "xLSTM (Beck et al. 2024): mLSTM and sLSTM blocks in a pattern",
                      display="xLSTM", color="#393b79", family="rnn", marker="H",
                      linestyle="-."))

_D = "seqbench.worker.data"
TASKS: Registry[TaskEntry] = Registry("task")
TASKS.add(TaskEntry("copy", f"{_D}.synthetic:CopyMemory",
                    "copy memory (TCN study): recall 10 symbols after a delay T", kind="synthetic"))
TASKS.add(TaskEntry("adding", f"{_D}.synthetic:Adding",
                    "adding problem (TCN variant): sum the two marked values", kind="synthetic"))
TASKS.add(TaskEntry("selective_copy", f"{_D}.recall:SelectiveCopying",
                    "selective copying (Mamba; variant mad: MAD's layout)", kind="synthetic"))
TASKS.add(TaskEntry("induction", f"{_D}.recall:InductionHeads",
                    "induction heads (Mamba): recall the token after the trigger",
                    kind="synthetic"))
TASKS.add(TaskEntry("mqar", f"{_D}.recall:MQAR",
                    "multi-query associative recall (zoology)", kind="synthetic"))
TASKS.add(TaskEntry("mad_recall", f"{_D}.mad:InContextRecall",
                    "MAD in-context recall", kind="synthetic"))
TASKS.add(TaskEntry("mad_noisy_recall", f"{_D}.mad:NoisyInContextRecall",
                    "MAD noisy in-context recall", kind="synthetic"))
TASKS.add(TaskEntry("mad_fuzzy_recall", f"{_D}.mad:FuzzyInContextRecall",
                    "MAD fuzzy in-context recall (multi-token keys and values)",
                    kind="synthetic"))
TASKS.add(TaskEntry("mad_selective_copy", f"{_D}.mad:MADSelectiveCopying",
                    "MAD selective copying", kind="synthetic"))
TASKS.add(TaskEntry("mad_compression", f"{_D}.mad:Compression",
                    "MAD compression: a sequence through one vector and back", kind="synthetic"))
TASKS.add(TaskEntry("mad_memorization", f"{_D}.mad:Memorization",
                    "MAD memorization: a fixed key-value map", kind="synthetic"))
TASKS.add(TaskEntry("digits", f"{_D}.embedded:Digits",
                    "scikit-learn 8x8 digits, pixel by pixel (64 steps)", kind="embedded"))
TASKS.add(TaskEntry("pdigits", f"{_D}.embedded:PermutedDigits",
                    "digits under a fixed seeded pixel permutation", kind="embedded"))
TASKS.add(TaskEntry("ucr", f"{_D}.embedded:UCR",
                    "UCR/UEA time-series classification bundled with sktime", kind="embedded"))
TASKS.add(TaskEntry("forecast", f"{_D}.embedded:Forecast",
                    "forecast statsmodels series (co2, sunspots, elnino, nile)", kind="embedded"))
TASKS.add(TaskEntry("pystdlib", f"{_D}.embedded:StdlibText",
                    "byte-level LM on CPython's standard library source", kind="embedded"))
TASKS.add(TaskEntry("smnist", f"{_D}.local:SequentialMNIST",
                    "sequential MNIST from idx files (784 steps)", kind="local"))
TASKS.add(TaskEntry("psmnist", f"{_D}.local:PermutedMNIST",
                    "permuted sequential MNIST from idx files", kind="local"))
TASKS.add(TaskEntry("scifar", f"{_D}.local:SequentialCIFAR",
                    "sequential CIFAR-10, grayscale (1024 steps)", kind="local"))
TASKS.add(TaskEntry("imdb", f"{_D}.local:IMDBBytes",
                    "byte-level IMDB sentiment (LRA Text)", kind="local"))
TASKS.add(TaskEntry("text8", f"{_D}.local:Text8", "character-level LM on text8", kind="local"))
TASKS.add(TaskEntry("enwik8", f"{_D}.local:Enwik8", "byte-level LM on enwik8", kind="local"))
TASKS.add(TaskEntry("ptb_char", f"{_D}.local:PTBChar",
                    "character-level LM on Penn Treebank", kind="local"))
TASKS.add(TaskEntry("speech_commands", f"{_D}.local:SpeechCommands",
                    "Speech Commands v0.02, 35 words, raw 16 kHz audio", kind="local"))
TASKS.add(TaskEntry("listops", f"{_D}.listops:ListOps",
                    "LRA ListOps: evaluate nested MIN/MAX/MED/SM expressions (10 classes)"))
TASKS.add(TaskEntry("pathfinder", f"{_D}.pathfinder:Pathfinder",
                    "LRA Pathfinder / Path-X: are two markers on one dashed contour? (res^2 px)"))
_FORMAL = (
    ("parity_check", "ParityCheck", "regular: number of 1s mod 2"),
    ("even_pairs", "EvenPairs", "regular: number of 01/10 pairs mod 2"),
    ("modular_arithmetic", "ModularArithmetic", "regular: evaluate d op d ... mod 5"),
    ("cycle_navigation", "CycleNavigation", "regular: final state of moves on a 5-cycle"),
    ("stack_manipulation", "StackManipulation", "DCF: final stack after push/pop actions"),
    ("reverse_string", "ReverseString", "DCF: the input reversed"),
    ("modular_arithmetic_brackets", "ModularArithmeticBrackets",
     "DCF: evaluate a bracketed expression mod 5"),
    ("solve_equation", "SolveEquation", "DCF: solve a bracketed linear equation mod 5 for x"),
    ("duplicate_string", "DuplicateString", "CS: the input twice"),
    ("missing_duplicate_string", "MissingDuplicateString",
     "CS: the masked symbol of a duplicated string"),
    ("odds_first", "OddsFirst", "CS: odd positions first, then even ones"),
    ("binary_addition", "BinaryAddition", "CS: add two little-endian binary numbers"),
    ("binary_multiplication", "BinaryMultiplication", "CS: multiply two binary numbers"),
    ("compute_sqrt", "ComputeSqrt", "CS: integer square root of a binary number"),
    ("bucket_sort", "BucketSort", "CS: sort a string over 5 symbols"),
)
for _name, _cls, _text in _FORMAL:  # Deletang et al. 2023, the Chomsky-hierarchy tasks
    TASKS.add(TaskEntry(_name, f"{_D}.chomsky:{_cls}", _text))
