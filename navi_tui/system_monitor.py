"""SystemMonitor: a service thread that samples GPU utilisation through NVML while a run trains.

Utilisation is NVML's `utilization.gpu`: the share of time a kernel ran on the whole GPU, in
percent; never a per-core figure. After the warm-up, a mean under the stop threshold stops the
run through its control object (M-015: hours at 5-7% went unnoticed once).
"""

from __future__ import annotations

import threading
import time
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
    """Samples all the time; judges only while a training loop steps.

    Between phases (benches, galleries, checkpoint writes, the next model's setup) the GPU
    rightly idles for seconds: judged, those gaps stopped a healthy base run on an H100 at the
    planner -> talker boundary (49% over 10 s). So the run calls training() when a loop starts
    and idle() when it ends, and each phase's warm-up starts over.
    """

    def __init__(self, sample: Callable[[], float], *, interval: float = 0.5, warmup: int = 20, window: int = 60,
                 stop_below: float = 50.0, control: TrainingControl | None = None,
                 on_stop: Callable[[str], None] | None = None, settle: int = 2):
        # the stop window is long (30 s): a talker's gallery decode inside its phase idles the gpu
        # for seconds (a 10 s window stopped a healthy H100 run at 50%); M-015 lasted hours
        self.sample, self.interval, self.warmup, self.window = sample, interval, warmup, window
        self.stop_below, self.control, self.on_stop = stop_below, control, on_stop
        # once a loop says its step is compiled and captured, a phase's warm-up shrinks to this
        # many samples: the compile is a one-off cost of the host, not the ping-pong M-015 is about
        self.settle = settle
        self._phase_warmup = warmup
        self.samples: list[float] = []  # every sample, training or not
        self.stamped: list[tuple[float, float]] = []  # (wall time, value) of every sample
        self.judged: list[float] = []  # samples taken while training, after each phase's warm-up
        self.stop_reason: str | None = None
        self._lock = threading.Lock()
        self._active = False
        self._phase: list[float] = []
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name="navi-system-monitor", daemon=True)

    def start(self) -> "SystemMonitor":
        self._thread.start()
        return self

    def training(self) -> None:
        with self._lock:
            self._active, self._phase, self._phase_warmup = True, [], self.warmup

    def warmed(self) -> None:
        """The loop's step runs at full speed from now on (navi_model.train.announce_ready):
        judge after `settle` samples instead of the whole warm-up."""
        with self._lock:
            if self._active:
                self._phase, self._phase_warmup = [], self.settle

    def idle(self) -> None:
        with self._lock:
            self._active = False

    def close(self) -> list[float]:
        """Stop sampling; returns the judged samples (what the gpu_util gate holds to 80%)."""
        self._done.set()
        self._thread.join(timeout=5)
        return list(self.judged)

    def during(self, intervals: list[tuple[float, float]]) -> list[float]:
        """The samples taken inside any of these (start, end) wall-time intervals."""
        with self._lock:
            stamped = list(self.stamped)
        return [v for t, v in stamped if any(a <= t <= b for a, b in intervals)]

    def _run(self) -> None:
        while not self._done.wait(self.interval):
            value = self.sample()
            with self._lock:
                self.samples.append(value)
                self.stamped.append((time.time(), value))
                if not self._active:
                    continue
                self._phase.append(value)
                if len(self._phase) <= self._phase_warmup:
                    continue
                self.judged.append(value)
                window = self._phase[-self.window:]
                # judge a whole window of the phase, never a single sample, and only once warm
                if len(self._phase) >= self._phase_warmup + self.window and self.stop_reason is None:
                    mean = sum(window) / len(window)
                    if mean < self.stop_below:
                        self.stop_reason = (f"GPU utilisation averaged {mean:.0f}% over the last {len(window)} "
                                            f"samples while training, after warm-up, under {self.stop_below:.0f}%: "
                                            f"the GPU is mostly idle, so the run stops (M-015)")
                        reason = self.stop_reason
                    else:
                        reason = None
                else:
                    reason = None
            if reason:
                if self.on_stop:
                    self.on_stop(reason)
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


class SystemStats:
    """One reading of the whole machine for the system pane: CPU and RAM through psutil, the GPU
    through NVML. Every figure is a share of the whole CPU, RAM or GPU, never of one core."""

    def __init__(self, gpu_index: int = 0):
        import psutil

        self._psutil = psutil
        psutil.cpu_percent(interval=None)  # the first call only starts the interval
        self.gpu = None
        self.gpu_error = "no GPU"
        try:
            import pynvml

            pynvml.nvmlInit()
            if pynvml.nvmlDeviceGetCount() > gpu_index:
                self._nvml, self.gpu = pynvml, pynvml.nvmlDeviceGetHandleByIndex(gpu_index)
                name = pynvml.nvmlDeviceGetName(self.gpu)
                self.gpu_name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception as e:  # no driver, no device, no nvidia-ml-py: the pane says "no GPU"
            self.gpu_error = f"no GPU ({type(e).__name__})"

    def read(self) -> dict:
        ps = self._psutil
        vm = ps.virtual_memory()
        out = {"cpu_percent": ps.cpu_percent(interval=None), "ram_percent": vm.percent,
               "ram_used_gib": (vm.total - vm.available) / 1024**3, "ram_total_gib": vm.total / 1024**3,
               "cpus": ps.cpu_count() or 1, "gpu": None}
        if self.gpu is not None:
            nv = self._nvml
            try:
                mem = nv.nvmlDeviceGetMemoryInfo(self.gpu)
                gpu = {"name": self.gpu_name, "util": float(nv.nvmlDeviceGetUtilizationRates(self.gpu).gpu),
                       "mem_used_gib": mem.used / 1024**3, "mem_total_gib": mem.total / 1024**3,
                       "temp_c": float(nv.nvmlDeviceGetTemperature(self.gpu, nv.NVML_TEMPERATURE_GPU))}
                try:
                    gpu["power_w"] = nv.nvmlDeviceGetPowerUsage(self.gpu) / 1000.0
                    gpu["power_limit_w"] = nv.nvmlDeviceGetEnforcedPowerLimit(self.gpu) / 1000.0
                except Exception:  # some boards do not report power
                    pass
                out["gpu"] = gpu
            except Exception as e:
                out["gpu_error"] = f"GPU read failed ({type(e).__name__})"
        else:
            out["gpu_error"] = self.gpu_error
        return out
