"""SystemMonitor: a service thread that samples GPU utilisation through NVML while a run trains.

Utilisation is NVML's `utilization.gpu`: the share of time a kernel ran on the whole GPU, in
percent; never a per-core figure. After the warm-up, a mean under the stop threshold stops the
run through its control object (M-015: hours at 5-7% went unnoticed once).
"""

from __future__ import annotations

import threading
from typing import Callable

from navi_model.control import TrainingControl


def gpu_name() -> str | None:
    """The first NVIDIA GPU NVML can see, or None (no driver, no GPU, no nvidia-ml-py)."""
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            if pynvml.nvmlDeviceGetCount() == 0:
                return None
            name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
            return name.decode() if isinstance(name, bytes) else str(name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:
        return None


def nvml_sampler(index: int) -> Callable[[], float]:
    import pynvml

    pynvml.nvmlInit()
    # nvml numbers devices like cuda does when CUDA_VISIBLE_DEVICES is unset
    handle = pynvml.nvmlDeviceGetHandleByIndex(index)
    return lambda: float(pynvml.nvmlDeviceGetUtilizationRates(handle).gpu)


class SystemMonitor:
    def __init__(self, sample: Callable[[], float], *, interval: float = 0.5, warmup: int = 20,
                 stop_below: float = 50.0, control: TrainingControl | None = None,
                 on_stop: Callable[[str], None] | None = None):
        self.sample, self.interval, self.warmup = sample, interval, warmup
        self.stop_below, self.control, self.on_stop = stop_below, control, on_stop
        self.samples: list[float] = []
        self.stop_reason: str | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="navi-system-monitor", daemon=True)

    def start(self) -> "SystemMonitor":
        self._thread.start()
        return self

    def close(self) -> list[float]:
        self._done.set()
        self._thread.join(timeout=5)
        return list(self.samples)

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            self.samples.append(self.sample())
            after = self.samples[self.warmup:]
            # judge a window, not one sample: a gallery pass or a checkpoint write idles the gpu briefly
            if len(after) >= self.warmup and self.stop_reason is None:
                mean = sum(after[-self.warmup:]) / self.warmup
                if mean < self.stop_below:
                    self.stop_reason = (f"GPU utilisation averaged {mean:.0f}% over the last {self.warmup} samples "
                                        f"after warm-up, under {self.stop_below:.0f}%: the GPU is mostly idle, so the "
                                        f"run stops (M-015)")
                    if self.on_stop:
                        self.on_stop(self.stop_reason)
                    if self.control:
                        self.control.stop()


MIN_AVAILABLE_RAM = 4 * 1024**3  # below this, long runs on this host have been killed (M-030)


def host_warnings() -> list[str]:
    """What about this host deserves a warning in the verdict, though it fails nothing."""
    import psutil

    out = []
    available = psutil.virtual_memory().available
    if available < MIN_AVAILABLE_RAM:
        out.append(f"only {available / 1024**3:.1f} GiB of RAM available (under 4 GiB): a long run may be killed")
    return out
