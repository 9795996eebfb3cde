"""One optimizer step (forward, loss, backward, clip, AdamW) as a single call, captured as a CUDA graph.

Why a graph: the brain's models are small, so an eager step is hundreds of kernel launches of a
few microseconds of work each, and the host's Python, not the GPU, sets the pace (the failure
log's M-015 was a GPU at 5-7% because of host/device ping-pong). A captured step is one launch:
the host runs ahead, the GPU never waits, and a console sharing the interpreter lock with the
trainer costs it nothing it can feel.

The recipe is PyTorch's whole-network capture: a few eager warm-up steps on a side stream (real
training steps, counted as such), then one capture with the gradients set to None so the graph
owns them, then replays. The batch is copied into static input tensors before each replay; the
learning rate lives in a device tensor that the host fills each step (a float would be baked into
the graph). Randomness (batch sampling, memory choice, PAD-denoising) stays outside the graph,
in the caller, so every random stream advances exactly as it does eagerly.

On the CPU, or with graph=False, the same call runs the step eagerly: one code path for the
loss, the statistics and the schedule, whichever way the step is executed.

Under DDP (ranks of more than one process) the step runs eagerly too: DDP all-reduces the
gradients from hooks during backward, which a captured graph would not replay safely. Each
window's statistics are then summed over the ranks in take(), the one sync of a window.
"""

from __future__ import annotations

import time
from typing import Callable, Sequence

import torch

from navi_model.distributed import ONE_PROCESS, Ranks

# (*batch) -> (loss, *stats): every returned tensor is a scalar, summed over the log window
LossFn = Callable[..., Sequence[torch.Tensor]]


class TrainStep:
    def __init__(self, model: torch.nn.Module, opt: torch.optim.Optimizer, loss_fn: LossFn, *, grad_clip: float,
                 device: torch.device, graph: bool | None = None, warmup: int = 3, compiled: bool = False,
                 ranks: Ranks = ONE_PROCESS):
        """graph: None = capture on CUDA, eager elsewhere (and under DDP); False = always eager.
        compiled: the model's blocks are under torch.compile (only reported: the first call compiles).
        warmup: eager steps before the capture (at least one: it sizes the statistics).
        ranks: under DDP, loss_fn's loss is this rank's share of the global loss times world_size
        (see navi_model.distributed); take() sums the statistics over the ranks."""
        if warmup < 1:
            raise ValueError(f"TrainStep needs at least one warm-up step before a capture, got {warmup}")
        self.model, self.opt, self.loss_fn = model, opt, loss_fn
        self.grad_clip = grad_clip
        self.device = device
        self.ranks = ranks
        self.graphed = device.type == "cuda" and graph is not False and not ranks.distributed
        self.compiled = compiled
        self.warmup = warmup
        self.calls = 0
        # the call after which steps run at full speed: after the capture, or after the first
        # (compiling) eager call; ready_after is the host time from the first call until then
        self.ready_at_call = warmup + 1 if self.graphed else 1
        self.ready_after: float | None = None
        self._t_first: float | None = None
        self.sums: torch.Tensor | None = None  # (1 + n_stats,) on the device: loss and stats since take()
        self._graph: torch.cuda.CUDAGraph | None = None
        self._static: tuple[torch.Tensor, ...] = ()
        self._side = torch.cuda.Stream(device) if self.graphed else None
        self._params = [p for g in opt.param_groups for p in g["params"]]
        self._lr_tensors: list[torch.Tensor] = []
        if self.graphed:
            self._lr_tensors = _lr_as_device_tensors(opt, device)

    # --- the step

    @property
    def became_ready(self) -> bool:
        """True right after the call that made the step ready, once."""
        return self.calls == self.ready_at_call

    def __call__(self, lr: float, *batch: torch.Tensor) -> None:
        if self._t_first is None:
            self._t_first = time.perf_counter()
        self._set_lr(lr)
        if not self.graphed:
            self._eager(batch)
        elif self._graph is None and self.calls < self.warmup:
            # warm-up on a side stream, as the capture recipe asks: lazy handles and workspaces
            # are made here, not inside the capture
            self._side.wait_stream(torch.cuda.current_stream(self.device))
            with torch.cuda.stream(self._side):
                self._eager(batch)
            torch.cuda.current_stream(self.device).wait_stream(self._side)
        else:
            if self._graph is None:
                self._capture(batch)
            for static, value in zip(self._static, batch):
                static.copy_(value, non_blocking=True)
            self._graph.replay()
        self.calls += 1
        if self.calls == self.ready_at_call:
            self.ready_after = time.perf_counter() - self._t_first

    def close(self) -> None:
        """Drop the graph and the gradients it owns: the model lives on (benches, warm starts)
        without the step's memory."""
        self._graph, self._static = None, ()
        self.opt.zero_grad(set_to_none=True)

    def _body(self, batch: Sequence[torch.Tensor]) -> torch.Tensor:
        out = self.loss_fn(*batch)
        loss = out[0]
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self._params, self.grad_clip)
        self.opt.step()
        return torch.stack([o.detach().float() for o in out])

    def _eager(self, batch: Sequence[torch.Tensor]) -> None:
        stats = self._body(batch)
        # flush the gradients as soon as we can, no need for this memory anymore
        self.opt.zero_grad(set_to_none=True)
        self._accumulate(stats)

    def _accumulate(self, stats: torch.Tensor) -> None:
        if self.sums is None:
            self.sums = torch.zeros_like(stats)
        self.sums += stats

    def _capture(self, batch: Sequence[torch.Tensor]) -> None:
        self._static = tuple(t.clone() for t in batch)
        # gradients None: the graph's backward allocates them in its own pool and writes, not adds
        self.opt.zero_grad(set_to_none=True)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            stats = self._body(self._static)
            if self.sums.numel() != stats.numel():
                raise RuntimeError("captured step returned another number of statistics than its warm-up")
            self.sums += stats
        self._graph = graph

    # --- the window's statistics and the schedule

    def take(self) -> list[float]:
        """Loss and stats summed since the last take, read back in the one host sync of a window."""
        if self.sums is None:
            return []
        if self.ranks.distributed:
            # each rank's loss is its share times world_size: the sum over ranks / world_size is the
            # global batch's loss; the other statistics (counts) simply add up
            values = self.ranks.sum_(self.sums.clone()).tolist()
            values[0] /= self.ranks.world_size
            self.sums.zero_()
            return values
        values = self.sums.tolist()
        self.sums.zero_()
        return values

    def _set_lr(self, lr: float) -> None:
        if self._lr_tensors:
            for t in self._lr_tensors:
                t.fill_(lr)
        else:
            for group in self.opt.param_groups:
                group["lr"] = lr


def _lr_as_device_tensors(opt: torch.optim.Optimizer, device: torch.device) -> list[torch.Tensor]:
    """Each group's lr as a device tensor the graph reads (one shared tensor if the groups share one)."""
    by_value: dict[int, torch.Tensor] = {}
    for group in opt.param_groups:
        lr = group["lr"]
        if isinstance(lr, torch.Tensor) and lr.device == device:
            by_value.setdefault(id(lr), lr)
            continue
        t = torch.tensor(float(lr), device=device)
        group["lr"] = t
        by_value[id(t)] = t
    return list(by_value.values())


def plain_optimizer_state(opt: torch.optim.Optimizer) -> dict:
    """opt.state_dict() with every tensor on the CPU and each lr a float: a checkpoint that loads
    on any device with weights_only=True, whether or not the step was graphed."""
    state = opt.state_dict()
    state["state"] = {k: {n: (v.detach().cpu().clone() if isinstance(v, torch.Tensor) else v) for n, v in s.items()}
                      for k, s in state["state"].items()}
    state["param_groups"] = [{**g, "lr": float(g["lr"])} for g in state["param_groups"]]
    return state


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict) -> None:
    """opt.load_state_dict, keeping this optimizer's own execution flags (fused, capturable, foreach):
    a checkpoint written on the CPU resumes on CUDA with a graph, and one written under a graph
    resumes eagerly on the CPU. Step counters go where this optimizer's flags want them."""
    flags = [{k: g.get(k) for k in ("fused", "capturable", "foreach")} for g in opt.param_groups]
    opt.load_state_dict(state)
    for group, own in zip(opt.param_groups, flags):
        group.update(own)
        on_device = bool(own["fused"] or own["capturable"])
        for p in group["params"]:
            st = opt.state.get(p)
            if st and isinstance(st.get("step"), torch.Tensor):
                st["step"] = st["step"].to(device=p.device if on_device else "cpu", dtype=torch.float32)
