"""The 2019 lesson's training loop: Learner, Runner and the Callback protocol."""
from __future__ import annotations

import re
from typing import Any, Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

from .model import get_cnn_model, init_cnn

__all__ = [
    "EVENTS", "CancelTrainException", "CancelEpochException", "CancelBatchException",
    "Callback", "TrainEvalCallback", "Learner", "Runner", "get_runner", "get_learn_run",
]

# Every event a callback may implement, in the order they can happen.
EVENTS = ("begin_fit", "begin_epoch", "begin_batch", "after_pred", "after_loss", "after_backward",
          "after_step", "after_cancel_batch", "after_batch", "begin_validate", "after_cancel_epoch",
          "after_epoch", "after_cancel_train", "after_fit")


class CancelTrainException(Exception):
    """Raise from a callback to stop fit (after_cancel_train, then after_fit run)."""


class CancelEpochException(Exception):
    """Raise from a callback to end the current pass over a loader (after_cancel_epoch runs)."""


class CancelBatchException(Exception):
    """Raise from a callback to skip the rest of this batch (after_cancel_batch, after_batch run)."""


def _camel2snake(name: str) -> str:
    s = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", s).lower()


def _listify(o: Any) -> list:
    if o is None:
        return []
    if isinstance(o, (list, tuple)):
        return list(o)
    return [o]


class Callback:
    """Base class: implement methods named after events; unknown attributes are read from the runner."""
    _order = 0

    def set_runner(self, run: "Runner") -> None:
        self.run = run

    def __getattr__(self, k: str) -> Any:
        # Only called when normal lookup fails: lets callbacks write self.model, self.epoch, ...
        if k == "run" or k.startswith("__"):
            raise AttributeError(k)
        return getattr(self.run, k)

    @property
    def name(self) -> str:
        """Snake-case class name without 'Callback': the runner attribute it is reachable by."""
        return _camel2snake(re.sub(r"Callback$", "", type(self).__name__) or "callback")

    def __call__(self, event: str) -> bool:
        f = getattr(type(self), event, None)
        return bool(f is not None and f(self))


class TrainEvalCallback(Callback):
    """Counts epochs (as a float) and iterations and switches the model between train and eval."""
    _order = -10  # before everything else: other callbacks read in_train and n_epochs

    def begin_fit(self) -> None:
        self.run.n_epochs, self.run.n_iter = 0.0, 0

    def after_batch(self) -> None:
        if not self.in_train:
            return
        # Computed, not accumulated, so the position has no rounding drift.
        self.run.n_epochs = self.epoch + (self.iter + 1) / self.iters
        self.run.n_iter += 1

    def begin_epoch(self) -> None:
        self.run.n_epochs = float(self.epoch)
        self.model.train()
        self.run.in_train = True

    def begin_validate(self) -> None:
        self.model.eval()
        self.run.in_train = False


class Learner:
    """A bag holding the model, optimizer, loss function and data."""

    def __init__(self, model: nn.Module, opt: torch.optim.Optimizer, loss_func: Callable, data) -> None:
        self.model, self.opt, self.loss_func, self.data = model, opt, loss_func, data


class Runner:
    """Runs the training loop, calling every callback's method for each event."""

    def __init__(self, cbs: Iterable | None = None, cb_funcs: Iterable | None = None) -> None:
        self.in_train, self.stop = False, False
        self.logger: Callable[[str], None] = print  # ProgressCallback redirects it to its bar
        self.learn = None
        self.cbs: list[Callback] = [TrainEvalCallback()]
        for cb in _listify(cbs) + _listify(cb_funcs):
            self.add_cb(cb)

    def add_cb(self, cb) -> Callback:
        """Add a callback; a class or partial is called with no arguments first."""
        if not isinstance(cb, Callback):
            cb = cb()
        setattr(self, cb.name, cb)
        self.cbs.append(cb)
        return cb

    @property
    def opt(self):
        return self.learn.opt

    @property
    def model(self):
        return self.learn.model

    @property
    def loss_func(self):
        return self.learn.loss_func

    @property
    def data(self):
        return self.learn.data

    def _build_dispatch(self) -> None:
        # Resolve once per fit which callbacks handle which event: keeps per-batch overhead tiny.
        cbs = sorted(self.cbs, key=lambda c: c._order)
        for cb in cbs:
            cb.set_runner(self)
        self._handlers = {e: [getattr(cb, e) for cb in cbs if callable(getattr(type(cb), e, None))]
                          for e in EVENTS}

    def __call__(self, event: str) -> bool:
        """Call `event` on every callback in _order; True if any returned True."""
        res = False
        for f in self._handlers[event]:
            res = bool(f()) or res
        return res

    def one_batch(self, xb, yb) -> None:
        try:
            self.xb, self.yb = xb, yb
            if self("begin_batch"):
                return
            self.pred = self.model(self.xb)
            self("after_pred")
            self.loss = self.loss_func(self.pred, self.yb)
            self("after_loss")
            if not self.in_train:
                return
            self.loss.backward()
            self("after_backward")
            self.opt.step()
            self("after_step")
            self.opt.zero_grad()
        except CancelBatchException:
            self("after_cancel_batch")
        finally:
            self("after_batch")

    def all_batches(self, dl) -> None:
        self.iters, self.dl = len(dl), dl
        try:
            for i, (xb, yb) in enumerate(dl):
                self.iter = i
                self.one_batch(xb, yb)
        except CancelEpochException:
            self("after_cancel_epoch")

    def fit(self, epochs: int, learn: Learner) -> None:
        """Train learn.model for `epochs` epochs, validating (without gradients) after each."""
        self.epochs, self.learn, self.loss = epochs, learn, torch.tensor(0.)
        self._build_dispatch()
        try:
            self("begin_fit")
            for epoch in range(epochs):
                self.epoch = epoch
                if not self("begin_epoch"):
                    self.all_batches(self.data.train_dl)
                with torch.no_grad():
                    if not self("begin_validate"):
                        self.all_batches(self.data.valid_dl)
                self("after_epoch")
        except CancelTrainException:
            self("after_cancel_train")
        finally:
            self("after_fit")
            self.learn = None


def get_runner(model: nn.Module, data, lr: float = 0.6, cbs: Iterable | None = None,
               opt_func: Callable | None = None, loss_func: Callable = F.cross_entropy) -> tuple[Learner, Runner]:
    """A Learner with opt_func (default SGD) at lr, and a Runner with the callbacks cbs."""
    opt_func = torch.optim.SGD if opt_func is None else opt_func
    learn = Learner(model, opt_func(model.parameters(), lr=lr), loss_func, data)
    return learn, Runner(cb_funcs=_listify(cbs))


def get_learn_run(nfs, data, lr: float, layer: Callable[..., nn.Module], cbs: Iterable | None = None,
                  opt_func: Callable | None = None, uniform: bool = False, **kwargs) -> tuple[Learner, Runner]:
    """The lesson's one-liner: build the CNN from `layer` blocks, init it and get a runner."""
    model = get_cnn_model(data, nfs, layer, **kwargs)
    init_cnn(model, uniform=uniform)
    return get_runner(model, data, lr=lr, cbs=cbs, opt_func=opt_func)
