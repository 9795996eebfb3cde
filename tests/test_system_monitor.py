"""The system monitor: it samples utilisation and stops a run whose GPU sits idle after warm-up.

    python -m pytest tests/test_system_monitor.py -q

NVML needs an NVIDIA driver, which this machine has not: the sampler is a function that
answers as NVML would; the thread, the window and the stop are the real ones.
"""

import time

from navi_model.control import TrainingControl
from navi_tui.system_monitor import SystemMonitor, gpu_name, host_warnings


def run_monitor(values, **kw):
    it = iter(values)
    control = TrainingControl()
    reasons = []
    monitor = SystemMonitor(lambda: next(it, values[-1]), interval=0.005, warmup=4, control=control,
                            on_stop=reasons.append, **kw).start()
    time.sleep(0.3)
    samples = monitor.close()
    return control, reasons, samples


def test_an_idle_gpu_after_warm_up_stops_the_run():
    control, reasons, samples = run_monitor([0, 0, 0, 0] + [6.0] * 20)  # M-015: 5-7% for hours
    assert control.stopped
    assert reasons and reasons[0].startswith("GPU utilisation averaged 6% over the last 4 samples after warm-up")
    assert len(samples) >= 8


def test_a_busy_gpu_runs_on():
    control, reasons, _ = run_monitor([0, 0, 0, 0] + [93.0] * 20)
    assert not control.stopped and reasons == []


def test_no_gpu_here():
    assert gpu_name() is None  # no NVIDIA driver on this machine
    assert isinstance(host_warnings(), list)
