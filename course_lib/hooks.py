"""Forward hooks that record activation statistics, and plots of what they recorded."""
from __future__ import annotations

from functools import partial
from typing import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

__all__ = ["Hook", "Hooks", "append_stats", "append_stats_hist", "get_hist", "get_min",
           "plot_layer_stats", "plot_hists", "plot_mins"]

HIST_BINS, HIST_MIN, HIST_MAX = 40, 0.0, 10.0


class Hook:
    """A forward hook on one module calling func(hook, module, input, output); remove() detaches it."""

    def __init__(self, module: nn.Module, func: Callable) -> None:
        self.module = module
        self.hook = module.register_forward_hook(partial(func, self))

    def remove(self) -> None:
        """Detach the hook from its module (safe to call twice)."""
        if getattr(self, "hook", None) is not None:
            self.hook.remove()
            self.hook = None

    def __del__(self) -> None:
        self.remove()


class Hooks:
    """One Hook per module; a context manager removing them all on exit, and list-like."""

    def __init__(self, modules: nn.Module | Iterable[nn.Module], func: Callable) -> None:
        # A model (e.g. nn.Sequential) means its direct children: the lesson's "one hook per layer".
        mods = list(modules.children()) if isinstance(modules, nn.Module) else list(modules)
        self.hooks = [Hook(m, func) for m in mods]

    def __getitem__(self, i: int | slice):
        return self.hooks[i]  # an int gives a Hook, a slice a list of Hooks

    def __len__(self) -> int:
        return len(self.hooks)

    def __iter__(self) -> Iterator[Hook]:
        return iter(self.hooks)

    def __enter__(self) -> "Hooks":
        return self

    def __exit__(self, *args) -> None:
        self.remove()

    def __del__(self) -> None:
        self.remove()

    def remove(self) -> None:
        """Remove every hook."""
        for h in getattr(self, "hooks", []):
            h.remove()

    def __repr__(self) -> str:
        return f"Hooks({len(self)} hooks)"


def append_stats(hook: Hook, mod: nn.Module, inp, outp: Tensor) -> None:
    """Append the output's mean and std to hook.stats = ([means], [stds]), in training only."""
    if not hasattr(hook, "stats"):
        hook.stats = ([], [])
    if not mod.training:  # validation batches would mix another distribution into the curves
        return
    out = outp.detach()
    means, stds = hook.stats
    means.append(out.mean().item())
    stds.append(out.std().item())


def append_stats_hist(hook: Hook, mod: nn.Module, inp, outp: Tensor) -> None:
    """Like append_stats, plus a 40-bin histogram of |output| over [0, 10]: hook.stats = (means, stds, hists)."""
    if not hasattr(hook, "stats"):
        hook.stats = ([], [], [])
    if not mod.training:
        return
    out = outp.detach()
    means, stds, hists = hook.stats
    means.append(out.mean().item())
    stds.append(out.std().item())
    hists.append(out.abs().float().histc(HIST_BINS, HIST_MIN, HIST_MAX).cpu())


def get_hist(hook: Hook) -> Tensor:
    """The recorded histograms as (bins, batches), log1p-scaled for display."""
    return torch.stack(hook.stats[2]).t().float().log1p()


def get_min(hook: Hook) -> Tensor:
    """Per batch, the fraction of activations in the lowest two bins (|x| < 0.5): near zero."""
    h = torch.stack(hook.stats[2]).t().float()
    return h[:2].sum(0) / h.sum(0)


def plot_layer_stats(hooks: Iterable[Hook], n_batches: int | None = None, ax=None):
    """Means (left) and stds (right) of each hooked layer over batches; returns (fig, axes)."""
    import matplotlib.pyplot as plt
    if ax is None:
        fig, ax = plt.subplots(1, 2, figsize=(10, 4))
    else:
        fig = ax[0].figure
    for i, h in enumerate(hooks):
        means, stds = h.stats[0], h.stats[1]
        ax[0].plot(means[:n_batches], label=f"layer {i}")
        ax[1].plot(stds[:n_batches], label=f"layer {i}")
    ax[0].set(title="activation mean", xlabel="batch")
    ax[1].set(title="activation std", xlabel="batch")
    ax[1].legend(fontsize="small")
    return fig, ax


def plot_hists(hooks: Iterable[Hook], ncols: int = 2):
    """The 'colourful dimension': histogram of |activations| per batch for each layer; returns (fig, axes)."""
    import matplotlib.pyplot as plt
    hooks = list(hooks)
    nrows = max(1, -(-len(hooks) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3 * nrows), squeeze=False)
    for i, (ax, h) in enumerate(zip(axes.flat, hooks)):
        ax.imshow(get_hist(h).numpy(), origin="lower", aspect="auto")  # numpy: tensors make matplotlib warn
        ax.set(title=f"layer {i}", xlabel="batch", ylabel="|activation| bin")
    for ax in list(axes.flat)[len(hooks):]:
        ax.axis("off")
    return fig, axes


def plot_mins(hooks: Iterable[Hook], ncols: int = 2):
    """Fraction of near-zero activations per batch for each layer; returns (fig, axes)."""
    import matplotlib.pyplot as plt
    hooks = list(hooks)
    nrows = max(1, -(-len(hooks) // ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(5 * ncols, 3 * nrows), squeeze=False)
    for i, (ax, h) in enumerate(zip(axes.flat, hooks)):
        ax.plot(get_min(h).numpy())
        ax.set(title=f"layer {i}", xlabel="batch", ylim=(0, 1))
    for ax in list(axes.flat)[len(hooks):]:
        ax.axis("off")
    return fig, axes
