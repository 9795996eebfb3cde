"""The system monitor: it samples utilisation and stops a run whose GPU sits idle after warm-up.

    python -m pytest tests/test_system_monitor.py -q

NVML needs an NVIDIA driver, which this machine has not: the sampler is a function that
answers as NVML would; the thread, the window and the stop are the real ones.
"""

import threading

from navi_model.control import TrainingControl
from navi_tui.system_monitor import SystemMonitor, gpu_name, host_warnings

# generous: the monitor samples every 5 ms, so a wait this long means its thread is stuck, not slow
SAMPLES_TIMEOUT_S = 60.0


class CountingSampler:
    """Answers like NVML and counts its calls, so a test waits for samples instead of sleeping.

    The monitor's thread calls it, records the answer (judging it, perhaps stopping the run),
    then waits its interval before the next call: once call n + 1 has begun, the first n
    samples are recorded. set() changes the answer from the next call on, under the same lock
    as the count, so a test knows which samples read the old value and which the new."""

    def __init__(self, values: list[float]):
        self.calls = 0
        self._values, self._first = list(values), 0  # the answer of call i is _values[i - 1 - _first]
        self._cond = threading.Condition()

    def __call__(self) -> float:
        with self._cond:
            value = self._values[min(self.calls - self._first, len(self._values) - 1)]
            self.calls += 1
            self._cond.notify_all()
            return value

    def set(self, value: float) -> None:
        """Answer value from the next call on."""
        with self._cond:
            self._values, self._first = [value], self.calls

    def wait_recorded(self, n: int) -> None:
        """Until the monitor has recorded n samples: its call n + 1 has begun."""
        with self._cond:
            if not self._cond.wait_for(lambda: self.calls > n, SAMPLES_TIMEOUT_S):
                raise AssertionError(f"the monitor took {self.calls} samples in {SAMPLES_TIMEOUT_S}s, "
                                     f"waiting for {n + 1}")

    def wait_more(self, k: int) -> None:
        """Until k samples more than have begun now are recorded: each of them began after this call."""
        with self._cond:
            now = self.calls
        self.wait_recorded(now + k)


def run_monitor(values, training=True, samples=24, **kw):
    sampler = CountingSampler(values)
    control = TrainingControl()
    reasons = []
    monitor = SystemMonitor(sampler, interval=0.005, warmup=4, window=4, control=control,
                            on_stop=reasons.append, **kw)
    if training:
        monitor.training()  # before the thread starts: every sample, the warm-up's zeros too, is the phase's
    monitor.start()
    # enough for warm-up and a whole window, several times over: a stop would have come by now
    sampler.wait_recorded(samples)
    judged = monitor.close()
    return control, reasons, judged, monitor


def test_an_idle_gpu_after_warm_up_stops_the_run():
    control, reasons, judged, _ = run_monitor([0, 0, 0, 0] + [6.0] * 40)  # M-015: 5-7% for hours
    assert control.stopped
    assert reasons and reasons[0].startswith("GPU utilisation averaged 6% over the last 4 samples while training")
    assert judged[:4] == [6.0] * 4  # the warm-up's zeros are not judged


def test_a_busy_gpu_runs_on():
    control, reasons, judged, _ = run_monitor([0, 0, 0, 0] + [93.0] * 40)
    assert not control.stopped and reasons == [] and set(judged) == {93.0}


def test_the_gaps_between_training_phases_are_not_judged():
    # idle between models (benches, checkpoints): sampled, never judged, never a stop
    control, reasons, judged, monitor = run_monitor([3.0] * 60, training=False)
    assert not control.stopped and judged == [] and len(monitor.samples) > 20


def test_no_gpu_here():
    assert gpu_name() is None  # no NVIDIA driver on this machine
    assert isinstance(host_warnings(), list)


def test_a_compile_before_the_step_is_warm_is_not_judged():
    # the first steps of a compiled, captured loop keep the GPU idle for seconds; the loop says
    # when its step is warm, and judging starts a couple of samples later
    sampler = CountingSampler([0.0])
    monitor = SystemMonitor(sampler, interval=0.005, warmup=10_000, window=4, settle=2).start()
    monitor.training()
    sampler.wait_more(20)  # compiling: twenty idle samples, none judged
    assert monitor.judged == []
    sampler.set(95.0)
    monitor.warmed()
    # every sample begun from here on reads 95 and lands in the phase warmed() began; the one in
    # flight may read 0.0 and land there too, but first, inside settle (2): never judged
    sampler.wait_more(2 + 20)
    judged = monitor.close()
    assert len(judged) >= 20 and set(judged) == {95.0}


def test_an_idle_gpu_after_the_warm_step_still_stops_the_run():
    sampler = CountingSampler([0.0])
    control, reasons = TrainingControl(), []
    monitor = SystemMonitor(sampler, interval=0.005, warmup=10_000, window=4, settle=2, control=control,
                            on_stop=reasons.append).start()
    monitor.training()
    sampler.set(6.0)
    monitor.warmed()
    # settle (2) and a window (4) of samples begun after warmed(), all 6.0 (the one in flight may
    # read 0.0, but it goes first and the window is the last 4): the stop comes with the last of them
    sampler.wait_more(2 + 4)
    monitor.close()
    assert control.stopped and reasons[0].startswith("GPU utilisation averaged 6%")


SAMPLES_A_WINDOW = 12  # two stepping windows of them: more than the 20 the gate's test asks for


def _stepping_run(step_value: float):
    """A monitor over a phase: compile (idle), two log windows at step_value, a checkpoint write (idle)."""
    from navi_model.events import MetricsLogged
    from navi_model.gates import gpu_util_gate
    from navi_tui.training_run import SteppingWindows

    sampler = CountingSampler([0.0])
    monitor = SystemMonitor(sampler, interval=0.005).start()
    windows = SteppingWindows()
    sampler.wait_more(SAMPLES_A_WINDOW)  # the first window: compiling, the GPU idle
    # the GPU steps from here on: its value changes before the window opens, so the one sample that
    # may still read the idle value inside a window is the one in flight as it changed
    sampler.set(step_value)
    windows(MetricsLogged(50, "policy", {"loss": 1.0, "step_ms": 2.0}))
    for step in (100, 150):
        # samples begun after a window opened are stamped inside it, and recorded before it closes
        sampler.wait_more(SAMPLES_A_WINDOW)
        windows(MetricsLogged(step, "policy", {"loss": 1.0, "step_ms": 2.0}))
    # the last window closes before the GPU idles: a sample stamped inside it read step_value
    sampler.set(0.0)
    sampler.wait_more(SAMPLES_A_WINDOW)  # benches and a checkpoint write: idle, after the last window
    monitor.close()
    stepped = monitor.during(windows.intervals)
    return gpu_util_gate(stepped, 80.0, 0, "while stepping"), stepped, monitor


def test_utilisation_is_judged_while_the_trainers_step_only():
    verdict, stepped, monitor = _stepping_run(95.0)
    # the idle compile and checkpoint write were sampled, but they are not what the gate holds to 80%
    assert 0.0 in monitor.samples
    # the sample in flight as the GPU began stepping may still read the idle value: one, of dozens
    assert verdict.passed and len(stepped) > 20 and stepped.count(0.0) <= 1
    assert "while stepping" in verdict.summary


def test_an_idle_gpu_while_stepping_fails_the_gate():
    verdict, stepped, _ = _stepping_run(6.0)  # M-015: the steps themselves leave the GPU idle
    assert not verdict.passed and verdict.value < 20
