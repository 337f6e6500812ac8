"""The lesson's callbacks: statistics, recording, scheduling, batch transforms, device, progress bar."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
from torch import Tensor

from .runner import Callback

__all__ = [
    "AvgStats", "AvgStatsCallback", "Recorder", "ParamScheduler", "BatchTransformXCallback",
    "default_device", "DeviceCallback", "CudaCallback", "ProgressCallback",
]


class AvgStats:
    """Running sums of loss and metrics over one pass, weighted by batch size."""

    def __init__(self, metrics: Sequence[Callable], in_train: bool) -> None:
        self.metrics, self.in_train = list(metrics), in_train
        self.reset()

    def reset(self) -> None:
        self.tot_loss: Tensor | float = 0.0
        self.tot_mets: list[Tensor | float] = [0.0] * len(self.metrics)
        self.count = 0

    @property
    def all_stats(self) -> list[float]:
        return [float(self.tot_loss)] + [float(m) for m in self.tot_mets]

    @property
    def avg_stats(self) -> list[float]:
        """[loss, *metrics] averaged over examples (not batches)."""
        return [s / self.count if self.count else math.nan for s in self.all_stats]

    def accumulate(self, run) -> None:
        bn = run.xb.shape[0]
        # Sums stay tensors: no .item() per batch (that would sync a GPU every step).
        self.tot_loss = self.tot_loss + run.loss.detach() * bn
        self.count += bn
        for i, m in enumerate(self.metrics):
            self.tot_mets[i] = self.tot_mets[i] + m(run.pred.detach(), run.yb) * bn

    def __repr__(self) -> str:
        if not self.count:
            return ""
        return f"{'train' if self.in_train else 'valid'}: {self.avg_stats}"


def _metric_name(m: Callable) -> str:
    return getattr(m, "__name__", type(m).__name__)


class AvgStatsCallback(Callback):
    """Per-epoch average loss and metrics for training and validation; prints one line per epoch."""

    def __init__(self, metrics: Callable | Sequence[Callable] = ()) -> None:
        metrics = list(metrics) if isinstance(metrics, (list, tuple)) else [metrics]
        self.train_stats, self.valid_stats = AvgStats(metrics, True), AvgStats(metrics, False)
        self.history: list[dict] = []

    def begin_fit(self) -> None:
        self.history = []

    def begin_epoch(self) -> None:
        self.train_stats.reset()
        self.valid_stats.reset()

    def after_loss(self) -> None:
        stats = self.train_stats if self.in_train else self.valid_stats
        stats.accumulate(self.run)

    def after_epoch(self) -> None:
        names = ["loss"] + [_metric_name(m) for m in self.train_stats.metrics]
        row: dict = {"epoch": self.epoch + 1}
        for phase, stats in (("train", self.train_stats), ("valid", self.valid_stats)):
            row.update({f"{phase}_{n}": v for n, v in zip(names, stats.avg_stats)})
        self.history.append(row)
        parts = [f"{phase}: " + " ".join(f"{n} {row[f'{phase}_{n}']:.3f}" for n in names)
                 for phase in ("train", "valid")]
        self.run.logger(f"epoch {self.epoch + 1}  " + " | ".join(parts))


class Recorder(Callback):
    """Records the learning rate of each parameter group and the training loss of every batch."""

    def begin_fit(self) -> None:
        self.lrs: list[list[float]] = [[] for _ in self.opt.param_groups]
        self._losses: list[Tensor] = []

    def after_batch(self) -> None:
        if not self.in_train:
            return
        for pg, lrs in zip(self.opt.param_groups, self.lrs):
            lrs.append(float(pg["lr"]))
        self._losses.append(self.loss.detach())  # converted to floats only when read

    @property
    def losses(self) -> list[float]:
        """Training loss of every batch, as floats."""
        return [float(l) for l in getattr(self, "_losses", [])]

    def plot_lr(self, pgid: int = -1, ax=None):
        """Plot the learning rate of parameter group pgid against the iteration; returns the axes."""
        import matplotlib.pyplot as plt
        ax = ax if ax is not None else plt.subplots()[1]
        ax.plot(self.lrs[pgid])
        ax.set(xlabel="iteration", ylabel="learning rate")
        return ax

    def plot_loss(self, skip_last: int = 0, ax=None):
        """Plot the training loss per batch, leaving out the last skip_last batches; returns the axes."""
        import matplotlib.pyplot as plt
        ax = ax if ax is not None else plt.subplots()[1]
        losses = self.losses
        ax.plot(losses[:len(losses) - skip_last])
        ax.set(xlabel="iteration", ylabel="training loss")
        return ax

    def plot(self, skip_last: int = 0, pgid: int = -1, ax=None):
        """Loss against learning rate (log scale), as in an LR finder; returns the axes."""
        import matplotlib.pyplot as plt
        ax = ax if ax is not None else plt.subplots()[1]
        n = len(self.losses) - skip_last
        ax.plot(self.lrs[pgid][:n], self.losses[:n])
        ax.set(xscale="log", xlabel="learning rate", ylabel="training loss")
        return ax


class ParamScheduler(Callback):
    """Sets hyper-parameter pname of each parameter group from a schedule of the training position."""
    _order = 1

    def __init__(self, pname: str, sched_funcs: Callable | Sequence[Callable]) -> None:
        self.pname, self.sched_funcs = pname, sched_funcs

    def begin_fit(self) -> None:
        if not isinstance(self.sched_funcs, (list, tuple)):
            self.sched_funcs = [self.sched_funcs] * len(self.opt.param_groups)
        if len(self.sched_funcs) != len(self.opt.param_groups):
            raise ValueError(f"ParamScheduler got {len(self.sched_funcs)} schedules for "
                             f"{len(self.opt.param_groups)} parameter groups")

    def set_param(self) -> None:
        pos = self.n_epochs / self.epochs
        for pg, f in zip(self.opt.param_groups, self.sched_funcs):
            pg[self.pname] = f(pos)

    def begin_batch(self) -> None:
        if self.in_train:
            self.set_param()


class BatchTransformXCallback(Callback):
    """Applies tfm to every input batch (e.g. mnist_view to reshape flat images)."""
    _order = 2  # after the device callback has moved the batch

    def __init__(self, tfm: Callable[[Tensor], Tensor]) -> None:
        self.tfm = tfm

    def begin_batch(self) -> None:
        self.run.xb = self.tfm(self.xb)


def default_device() -> torch.device:
    """CUDA when available, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


class DeviceCallback(Callback):
    """Moves the model (at begin_fit) and every batch (at begin_batch) to a device."""
    _order = 1

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else default_device()

    def begin_fit(self) -> None:
        self.model.to(self.device)

    def begin_batch(self) -> None:
        # non_blocking overlaps the copy with compute on CUDA; a no-op on CPU.
        self.run.xb = self.xb.to(self.device, non_blocking=True)
        self.run.yb = self.yb.to(self.device, non_blocking=True)


class CudaCallback(DeviceCallback):
    """The lesson's name (run.cuda): a DeviceCallback, so it uses CUDA when present and CPU otherwise."""


class ProgressCallback(Callback):
    """fastprogress bars: one over epochs and a live one over the current batches; AvgStatsCallback's lines go
    through the master bar. When training ends the bars give way to those lines (no empty or 0/N bar is left)."""
    _order = -1

    def begin_fit(self) -> None:
        from fastprogress.fastprogress import master_bar, progress_bar  # chooses notebook or console bars
        self._progress_bar = progress_bar
        # The master bar shows itself when its epoch bar first updates: showing it here as well would leave a
        # second, never-updated copy in a notebook's output.
        self.mbar = master_bar(range(self.epochs)) if self.epochs > 0 else None
        self._old_logger = self.run.logger
        if self.mbar is not None:
            self.run.logger = self.mbar.write
        self.pb = None

    def after_fit(self) -> None:
        self.run.logger = self._old_logger
        if self.mbar is not None:  # finished or stopped early: the lines stay, the bars go
            self.mbar.on_iter_end()

    def _set_pb(self, dl) -> None:
        self.pb = None
        if self.mbar is None:
            return
        self.mbar.update(self.epoch)
        n = len(dl)
        if n == 0:  # fastprogress warns (to stderr) on an empty bar: show none
            return
        self.pb = self._progress_bar(range(n), parent=self.mbar)
        self.pb.update(0)

    def begin_epoch(self) -> None:
        self._set_pb(self.data.train_dl)

    def begin_validate(self) -> None:
        self._set_pb(self.data.valid_dl)

    def after_epoch(self) -> None:
        if self.mbar is not None:
            self.mbar.update(self.epoch + 1)

    def after_batch(self) -> None:
        if self.pb is not None:
            self.pb.update(self.iter + 1)
