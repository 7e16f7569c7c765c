"""The measurement rules of seqbench.worker.measure, with fakes: CUDA calls (monkeypatched on a
CPU build) happen in the right order around the measured region only, warm-up never enters the
statistics, repeats adapt, and the units are seconds and bytes."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from types import SimpleNamespace

import pytest
import torch

from seqbench.worker import measure
from seqbench.worker.measure import CudaMemory, Samples, repeat, timed, timing_method


class FakeClock:
    """``time.perf_counter`` for the measure module: each call of ``fn`` takes the next of
    ``durations`` seconds."""

    def __init__(self, durations: list[float]) -> None:
        self.durations = list(durations)
        self.now = 100.0
        self.calls = 0

    def perf_counter(self) -> float:
        return self.now

    def fn(self) -> None:
        self.now += self.durations[min(self.calls, len(self.durations) - 1)]
        self.calls += 1


@pytest.fixture
def clock(monkeypatch):
    def make(durations: list[float]) -> FakeClock:
        fake = FakeClock(durations)
        monkeypatch.setattr(measure, "time", SimpleNamespace(perf_counter=fake.perf_counter))
        return fake

    return make


class CudaLog:
    """Every torch.cuda call the measurement makes, in order, with the user's calls between."""

    ALLOCATED, RESERVED, EVENT_MS = 123_456_789, 150_000_000, 250.0

    def __init__(self, monkeypatch) -> None:
        self.calls: list[str] = []
        log = self.calls

        class Event:
            count = 0

            def __init__(self, enable_timing: bool = False) -> None:
                assert enable_timing, "events must be created with enable_timing=True"
                Event.count += 1
                self.name = f"event{Event.count}"

            def record(self, stream=None) -> None:
                log.append(f"record {self.name}")

            def synchronize(self) -> None:
                log.append(f"wait {self.name}")

            def elapsed_time(self, end) -> float:
                return CudaLog.EVENT_MS  # milliseconds, as CUDA reports them

        def record(name, value=None):
            def call(*args, **kwargs):
                log.append(name)
                return value

            return call

        for name, value in (("synchronize", None), ("empty_cache", None),
                            ("reset_peak_memory_stats", None),
                            ("max_memory_allocated", self.ALLOCATED),
                            ("max_memory_reserved", self.RESERVED)):
            monkeypatch.setattr(torch.cuda, name, record(name, value))
        monkeypatch.setattr(torch.cuda, "Event", Event)

    def user(self, name: str = "fn"):
        def fn() -> None:
            self.calls.append(name)

        return fn


def test_cuda_timing_waits_for_queued_work_then_brackets_the_call_with_events(monkeypatch):
    cuda = CudaLog(monkeypatch)
    seconds, _ = timed(cuda.user(), "cuda")
    assert cuda.calls == ["synchronize", "record event1", "fn", "record event2", "wait event2"]
    assert seconds == pytest.approx(CudaLog.EVENT_MS / 1e3)  # ms from CUDA -> seconds
    assert timing_method("cuda") == "cuda-events after synchronize"


def test_cuda_memory_reset_before_and_read_after_the_measured_region_only(monkeypatch):
    cuda = CudaLog(monkeypatch)
    cuda.user("setup")()  # model building, data: before the measured phase
    with CudaMemory("cuda") as memory:
        samples = repeat(cuda.user(), "cuda", warmup=1, min_repeats=3, max_repeats=3)
        fields = memory.fields()
    calls = cuda.calls
    first_fn, last_fn = calls.index("fn"), len(calls) - 1 - calls[::-1].index("fn")
    # reset the counters once, after setup and before the first measured call
    assert calls[calls.index("setup") + 1: first_fn] == [
        "synchronize", "empty_cache", "reset_peak_memory_stats", "synchronize", "record event1"]
    assert calls.count("reset_peak_memory_stats") == 1 and calls.count("empty_cache") == 1
    # read the peaks once, after the last call has finished (its event waited on, synchronized)
    tail = calls[last_fn + 1:]
    assert tail[:2] == ["record event" + str(2 * calls.count("fn")), "wait event" +
                        str(2 * calls.count("fn"))]
    assert tail[2:] == ["synchronize", "max_memory_allocated", "max_memory_reserved"]
    # every call of fn sits between a synchronize + start event and its end event
    for i, call in enumerate(calls):
        if call == "fn":
            assert calls[i - 2] == "synchronize" and calls[i - 1].startswith("record")
            assert calls[i + 1].startswith("record") and calls[i + 2].startswith("wait")
    assert calls.count("fn") == len(samples.warmup_s) + len(samples.samples_s)
    assert fields["peak_mem_bytes"] == CudaLog.ALLOCATED and isinstance(
        fields["peak_mem_bytes"], int)
    assert fields["peak_mem_reserved_bytes"] == CudaLog.RESERVED
    assert samples.median_s == pytest.approx(0.25)


def test_cpu_measurement_makes_no_cuda_call(monkeypatch):
    cuda = CudaLog(monkeypatch)
    with CudaMemory("cpu") as memory:
        repeat(cuda.user(), "cpu", warmup=1, min_repeats=2, max_repeats=2)
        assert memory.fields() == {}
    assert set(cuda.calls) == {"fn"}


def test_warmup_is_excluded_from_the_median_and_the_first_call_kept_apart(clock):
    fake = clock([5.0, 1.0, 1.0, 1.0])
    s = repeat(fake.fn, "cpu", warmup=1, max_warmup=5, min_repeats=4, max_repeats=4)
    assert s.first_s == 5.0
    assert s.warmup_s == [5.0, 1.0, 1.0]  # until two calls in a row agree within 10%
    assert s.samples_s == [1.0] * 4 and s.median_s == 1.0
    assert s.total_s == pytest.approx(11.0)  # timed seconds, warm-up included


def test_warmup_continues_while_times_still_fall_up_to_max_warmup(clock):
    fake = clock([8.0, 4.0, 2.0, 1.0, 1.0])
    assert repeat(fake.fn, "cpu", warmup=1, max_warmup=10, min_repeats=1,
                  max_repeats=1).warmup_s == [8.0, 4.0, 2.0, 1.0, 1.0]
    fake = clock([8.0, 4.0, 2.0, 1.0, 1.0])
    assert repeat(fake.fn, "cpu", warmup=1, max_warmup=3, min_repeats=1,
                  max_repeats=1).warmup_s == [8.0, 4.0, 2.0]
    fake = clock([8.0, 1.0])  # no max_warmup: exactly `warmup` calls, as before
    assert repeat(fake.fn, "cpu", warmup=2, min_repeats=1, max_repeats=1).warmup_s == [8.0, 1.0]


def test_repeats_stop_once_the_spread_is_small(clock):
    fake = clock([1.0])
    s = repeat(fake.fn, "cpu", warmup=1, min_repeats=5, max_repeats=100, budget_s=1e9)
    assert len(s.samples_s) == 5  # constant times: IQR/median = 0 after the minimum


def test_noisy_repeats_stop_at_the_budget(clock):
    fake = clock([1.0, 1.0] + [1.0, 3.0] * 50)
    s = repeat(fake.fn, "cpu", warmup=1, max_warmup=2, min_repeats=3, max_repeats=100,
               budget_s=20.0)
    assert s.spread() > 0.1
    assert sum(s.samples_s) >= 20.0 and sum(s.samples_s[:-1]) < 20.0


def test_percentiles_and_tokens_per_second_from_seconds():
    s = Samples(first_s=9.0, samples_s=[0.1, 0.2, 0.3, 0.4, 0.5])
    f = s.fields("train", tokens=1000)
    assert f["train_step_s_median"] == pytest.approx(0.3)
    assert f["train_step_s_p20"] == pytest.approx(0.18) and f["train_step_s_p80"] == \
        pytest.approx(0.42)
    assert f["train_tokens_per_s"] == pytest.approx(1000 / 0.3)
    assert f["train_tokens_per_s_p20"] == pytest.approx(1000 / 0.42)  # slow steps: low tok/s


def test_cpu_timings_are_in_seconds():
    seconds, out = timed(lambda: time.sleep(0.05) or "done", "cpu")
    assert out == "done"
    assert 0.045 <= seconds < 1.0


def test_a_data_limit_makes_torch_allocations_raise_an_oom_error():
    """The executor caps a CPU worker with RLIMIT_DATA: torch must raise, not be killed."""
    script = textwrap.dedent("""
        import resource, torch
        from seqbench.worker.job import is_oom
        for line in open("/proc/self/status"):
            if line.startswith("VmData:"):
                data = int(line.split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_DATA, (data + 64 * 2**20, resource.RLIM_INFINITY))
        small = torch.ones(2**20)  # 4 MiB: fits
        try:
            torch.empty(2**28).fill_(1.0)  # 1 GiB: does not
        except Exception as exc:
            print("oom" if is_oom(exc) else f"other {exc!r}")
        else:
            print("allocated")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr[-500:]
    assert out.stdout.strip() == "oom"
