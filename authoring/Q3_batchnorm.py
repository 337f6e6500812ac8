# %% [markdown]
# # Q3 — Implement BatchNorm, then look at the activations
#
# Batch normalization (Ioffe & Szegedy, 2015) normalises every channel of a layer's activations with
# the mean and variance of the current mini-batch, then lets the network re-scale and re-shift them
# with two learned per-channel parameters. For inference it keeps exponentially weighted running
# averages of those statistics, so that a prediction does not depend on the other examples in its batch.
#
# In **Part A** you write the layer, following exactly the rules of PyTorch's `nn.BatchNorm2d`.
# In **Part B** you put it into the lesson's CNN and use hooks to watch what it does to the
# activations while the model trains, beside the same CNN without normalization.

# %% [setup]
%matplotlib inline
from functools import partial
from types import SimpleNamespace

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import (AvgStatsCallback, BatchTransformXCallback, DeviceCallback, GeneralRelu, Hooks,
                        ProgressCallback, accuracy, append_stats, get_cnn_model, get_learn_run,
                        get_mnist_databunch, init_cnn, mnist_view, set_seed)

set_seed(42)

# %% [markdown]
# ## Part A (11 points) — the layer
#
# Write `BatchNorm(nf, mom=0.1, eps=1e-5)` for activations of shape `(N, C, H, W)` with `C == nf`.
# Its **contract** is in the docstring below; it is the computation `nn.BatchNorm2d(nf, eps=eps,
# momentum=mom)` does, written with the lesson's names. Three details are easy to get wrong:
#
# - **Two variances.** The output is normalised with the *biased* batch variance (divide by
#   `n = N*H*W`), but the running variance stores the *unbiased* one (divide by `n - 1`). (The lesson's
#   own BatchNorm normalised with the unbiased variance; we follow PyTorch.)
# - **Momentum is the weight of the new batch**: `running = (1 - mom) * running + mom * batch`
#   (that is `running.lerp_(batch, mom)`), so with `mom=0.1` a new batch moves the average by 10 %.
# - **Parameters vs buffers.** `mults` and `adds` are learned by gradient descent (`nn.Parameter`);
#   `means` and `vars` are measured from data, so they are *buffers* (`self.register_buffer`): saved in
#   `state_dict`, moved by `.to(device)` and `.double()`, but never given to the optimiser, and updated
#   without autograd history.
#
# The layer reads its mode from `self.training`, which `model.train()` and `model.eval()` set.
# Write the math yourself with tensor operations: calling torch's own batch norm gets no points.

# %% [solution id=batchnorm]
class BatchNorm(nn.Module):
    """Batch normalization of (N, C, H, W) activations with exactly nn.BatchNorm2d's rules.

    BatchNorm(nf, mom=0.1, eps=1e-5), where nf is the number of channels C. Store mom and eps as
    self.mom and self.eps.

    Learned parameters (nn.Parameter), one scale and one shift per channel:
        self.mults  shape (nf, 1, 1), starts as ones    (gamma)
        self.adds   shape (nf, 1, 1), starts as zeros   (beta)
    Running statistics, registered buffers (self.register_buffer), not parameters:
        self.means  shape (1, nf, 1, 1), starts as zeros
        self.vars   shape (1, nf, 1, 1), starts as ones

    forward(x), x of shape (N, nf, H, W): returns a tensor of the same shape and dtype as x.
    The mode is self.training (set by .train() / .eval()), never torch.is_grad_enabled().
    Training mode:
        mean = per-channel mean of x over dims (0, 2, 3)
        var  = per-channel BIASED variance of x over dims (0, 2, 3)  (divide by n = N*H*W)
        out  = (x - mean) / sqrt(var + eps) * mults + adds
        then update the buffers with mom as the weight of the NEW batch (PyTorch's rule):
            means = (1 - mom) * means + mom * mean
            vars  = (1 - mom) * vars  + mom * var_unbiased        (divide by n - 1)
        The update carries no autograd history (torch.no_grad() or detached values); the output
        keeps its gradient through mean and var.
    Eval mode:
        out = (x - means) / sqrt(vars + eps) * mults + adds, and the buffers do not change.
    Raises ValueError if x is not 4-D, if x.shape[1] != nf, or, in training mode, if there is
    only one value per channel (N*H*W == 1: its unbiased variance is undefined).
    """

    def __init__(self, nf: int, mom: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.nf, self.mom, self.eps = nf, mom, eps
        self.mults = nn.Parameter(torch.ones(nf, 1, 1))
        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))
        # Buffers, not parameters: the optimiser must not touch them, but state_dict and .to() must.
        self.register_buffer("means", torch.zeros(1, nf, 1, 1))
        self.register_buffer("vars", torch.ones(1, nf, 1, 1))
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        """Normalise x with the batch's statistics (training, updating the buffers) or the running ones (eval)."""
        ### BEGIN SOLUTION
        if x.dim() != 4 or x.shape[1] != self.nf:
            raise ValueError(f"BatchNorm({self.nf}) expects an input of shape (N, {self.nf}, H, W), "
                             f"got {tuple(x.shape)}")
        if self.training:
            n = x.numel() // x.shape[1]
            if n < 2:
                raise ValueError(f"BatchNorm needs more than one value per channel in training mode, "
                                 f"got an input of shape {tuple(x.shape)}")
            mean = x.mean(dim=(0, 2, 3), keepdim=True)
            var = x.var(dim=(0, 2, 3), keepdim=True, correction=0)
            # The running averages record the data; they are not part of the computation to differentiate.
            with torch.no_grad():
                self.means.lerp_(mean, self.mom)
                self.vars.lerp_(var * n / (n - 1), self.mom)
        else:
            mean, var = self.means, self.vars
        return (x - mean) / torch.sqrt(var + self.eps) * self.mults + self.adds
        ### END SOLUTION

# %% [demo]
# Check that it does: your layer against nn.BatchNorm2d on a few batches, in float64, in both modes.
torch.manual_seed(0)
mine, theirs = BatchNorm(3).double(), nn.BatchNorm2d(3, eps=1e-5, momentum=0.1).double()
for step in range(3):
    x = torch.randn(16, 3, 5, 5, dtype=torch.float64) * (step + 1) + step
    print(f"batch {step + 1}, train mode: same output as nn.BatchNorm2d?", torch.allclose(mine(x), theirs(x)))
print("same running means?", torch.allclose(mine.means.flatten(), theirs.running_mean))
print("same running vars? ", torch.allclose(mine.vars.flatten(), theirs.running_var))
mine.eval()
theirs.eval()
print("eval mode: same output?", torch.allclose(mine(x), theirs(x)))

# %% [test id=test_parameters_and_buffers points=1]
"""mults/adds are nn.Parameters of shape (nf, 1, 1); means/vars are registered buffers of shape (1, nf, 1, 1)."""
from course_lib.checks import check_batchnorm, student_checks

with student_checks():
    bn = BatchNorm(5)
    params, buffers = dict(bn.named_parameters()), dict(bn.named_buffers())
    assert set(params) == {"mults", "adds"}, f"the learned parameters must be exactly mults and adds, got {sorted(params)}"
    assert {"means", "vars"} <= set(buffers), (
        f"means and vars must be registered buffers (self.register_buffer), got buffers {sorted(buffers)}")
    for name, shape in (("mults", (5, 1, 1)), ("adds", (5, 1, 1)), ("means", (1, 5, 1, 1)), ("vars", (1, 5, 1, 1))):
        got = tuple(getattr(bn, name).shape)
        assert got == shape, f"BatchNorm(5).{name} should have shape {shape}, got {got}"
    other = BatchNorm(5)
    assert all(getattr(bn, n) is not getattr(other, n) for n in ("mults", "adds", "means", "vars")), (
        "two BatchNorm(5) layers share a tensor: create each layer's tensors inside __init__")

check_batchnorm(BatchNorm, "arguments")
### BEGIN HIDDEN TESTS
from course_recorder import q3

q3.parameters_and_buffers(BatchNorm)
### END HIDDEN TESTS
print("checks passed: parameters and buffers")

# %% [test id=test_train_mode_output points=2]
"""Training mode: each channel normalised with the batch mean and biased variance over (N, H, W), then scaled and shifted."""
from course_lib.checks import check_batchnorm

check_batchnorm(BatchNorm, "train")
### BEGIN HIDDEN TESTS
from course_recorder import q3

q3.train_mode_output(BatchNorm)
### END HIDDEN TESTS

# %% [test id=test_eval_mode_output points=2]
"""Eval mode: normalised with the running statistics means and vars; an untrained layer gives x / sqrt(1 + eps) * mults + adds."""
from course_lib.checks import check_batchnorm

check_batchnorm(BatchNorm, "eval")
### BEGIN HIDDEN TESTS
from course_recorder import q3

q3.eval_mode_output(BatchNorm)
### END HIDDEN TESTS

# %% [test id=test_running_statistics points=2]
"""Training updates means and vars with mom as the new batch's weight, storing the unbiased batch variance."""
from course_lib.checks import check_batchnorm

check_batchnorm(BatchNorm, "buffers")
### BEGIN HIDDEN TESTS
from course_recorder import q3

q3.running_statistics(BatchNorm)
### END HIDDEN TESTS

# %% [test id=test_eval_leaves_buffers_alone points=1]
"""Eval mode never changes the running statistics; the mode comes from self.training, not from gradient mode."""
from course_lib.checks import check_batchnorm

check_batchnorm(BatchNorm, "modes")
### BEGIN HIDDEN TESTS
from course_recorder import q3

q3.eval_leaves_buffers_alone(BatchNorm)
### END HIDDEN TESTS

# %% [test id=test_gradients points=1]
"""Training-mode gradients with respect to the input, mults and adds are right (against autograd on the contract, float64)."""
from course_lib.checks import check_batchnorm

check_batchnorm(BatchNorm, "gradients")
### BEGIN HIDDEN TESTS
from course_recorder import q3

q3.gradients_probe(BatchNorm)
### END HIDDEN TESTS

# %% [test id=test_buffers_without_history points=1]
"""The running statistics carry no autograd history, stay registered buffers, survive a state_dict round trip and follow .double()."""
from course_lib.checks import check_batchnorm

check_batchnorm(BatchNorm, "history")
### BEGIN HIDDEN TESTS
from course_recorder import q3

q3.buffers_without_history(BatchNorm)
### END HIDDEN TESTS

# %% [test id=test_clear_errors points=1]
"""ValueError for a non-4-D input, the wrong number of channels, or one value per channel in training."""
from course_lib.checks import check_batchnorm

check_batchnorm(BatchNorm, "errors")
### BEGIN HIDDEN TESTS
from course_recorder import q3

q3.clear_errors(BatchNorm)
### END HIDDEN TESTS

# %% [markdown]
# ## Part B (1 point) — BatchNorm in the lesson's CNN
#
# The block below is the lesson's `conv_layer`: a convolution without a bias when a norm follows (the
# lesson's `bias=not bn`; with the norm after the activation the norm does not cancel a bias: Q4 shows
# why), the lesson's `GeneralRelu(leak=0.1, sub=0.4, maxv=6.)` and then the norm, **after** the activation. `norm` picks
# the norm layer; by default it is your `BatchNorm`. Every block has stride 2, so the maps shrink
# 28 → 14 → 7 → 4 → 2 → 1. Nothing to write here: the test checks that your layer trains the CNN
# like `nn.BatchNorm2d` does (same weights, same batches, 30 steps).

# %% [setup]
NFS = [8, 16, 32, 64, 64]
ACTIVATION = dict(leak=0.1, sub=0.4, maxv=6.)


def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 2, bn: bool = True, norm: type | None = None,
               **kwargs) -> nn.Sequential:
    """Conv2d -> GeneralRelu(**kwargs) -> norm(nf) when bn; norm defaults to this notebook's BatchNorm."""
    layers = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn), GeneralRelu(**kwargs)]
    if bn:
        layers.append((norm or BatchNorm)(nf))
    return nn.Sequential(*layers)


def lesson_cnn(norm: type | None = None, bn: bool = True) -> nn.Sequential:
    """The lesson's CNN (10 classes) built from conv_layer blocks, Kaiming-initialised."""
    block = partial(conv_layer, bn=bn, norm=norm)
    return init_cnn(get_cnn_model(SimpleNamespace(c=10), NFS, block, **ACTIVATION))

# %% [test id=test_training_curve points=1]
"""The lesson's CNN with your BatchNorm trains like the same CNN with nn.BatchNorm2d (same weights, batches and lr)."""
from course_lib.checks import student_checks

with student_checks():
    x_check = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 2 + 1
    out_check = BatchNorm(3).double()(x_check)
    assert out_check.shape == x_check.shape and torch.isfinite(out_check).all(), (
        "BatchNorm(3) should return a finite tensor shaped like its input")
### BEGIN HIDDEN TESTS
from course_recorder import q3

q3.training_curve(lesson_cnn)
### END HIDDEN TESTS

# %% [markdown]
# ## The experiment: what BatchNorm does to the activations
#
# We train the CNN for one epoch twice, with a hook on each of the five blocks that records the
# mean and standard deviation of the block's output at every training batch (`append_stats`):
#
# 1. without normalization, at the lesson's learning rate 0.4 (its anchor: about 97 % after 2 epochs);
# 2. with your `BatchNorm`, at learning rate 1.0 (its anchor: about 97 % after 3 epochs).
#
# On the full data one epoch is 98 batches of 512 images: a few seconds to half a minute per run on
# a laptop CPU, on the GPU when there is one (when the notebook is graded, both runs use the small
# grading subset and take a second or two).

# %% [experiment]
data = get_mnist_databunch(bs=512)
cbfs = [partial(AvgStatsCallback, accuracy), DeviceCallback, partial(BatchTransformXCallback, mnist_view),
        ProgressCallback]


def train_with_hooks(lr: float, bn: bool) -> tuple[list, dict]:
    """Train the lesson's CNN for one epoch; return each block's recorded (means, stds) and the epoch's stats."""
    set_seed(0)  # the same initial weights and batch order for both runs
    learn, run = get_learn_run(NFS, data, lr, partial(conv_layer, bn=bn), cbs=cbfs, **ACTIVATION)
    with Hooks(learn.model[:5], append_stats) as hooks:  # the five conv blocks
        run.fit(1, learn)
        stats = [hook.stats for hook in hooks]
    return stats, run.avg_stats.history[-1]


stats_plain, history_plain = train_with_hooks(lr=0.4, bn=False)
stats_bn, history_bn = train_with_hooks(lr=1.0, bn=True)

# %% [experiment]
def plot_side_by_side(runs: dict[str, list], n_batches: int | None, title: str) -> None:
    """Means (top row) and stds (bottom row) of each block's output, one column per model, on shared scales."""
    # Shared y-axes per row, so the two models' statistics are read on the same scale.
    fig, axes = plt.subplots(2, len(runs), figsize=(6 * len(runs), 7), squeeze=False, sharey="row")
    for col, (name, stats) in enumerate(runs.items()):
        for block, (means, stds) in enumerate(stats):
            axes[0, col].plot(means[:n_batches], label=f"block {block + 1}")
            axes[1, col].plot(stds[:n_batches], label=f"block {block + 1}")
        axes[0, col].set(title=f"{name}: activation mean")
        axes[1, col].set(title=f"{name}: activation std", xlabel="training batch")
    axes[0, -1].legend(fontsize="small")
    fig.suptitle(title)
    fig.tight_layout()
    plt.show()


runs = {"no normalization, lr 0.4": stats_plain, "your BatchNorm, lr 1.0": stats_bn}
plot_side_by_side(runs, 10, "The first 10 batches")
plot_side_by_side(runs, None, "The whole epoch")
for name, history in (("no normalization", history_plain), ("BatchNorm", history_bn)):
    print(f"{name:17s} valid loss {history['valid_loss']:.3f}  valid accuracy {history['valid_accuracy']:.3f}")

# %% [markdown]
# **What to look for.** Without normalization the statistics of the five blocks differ from block to
# block, swing over the first batches (the deepest block's std can double within a few steps) and keep
# drifting during the whole epoch: every layer is trained on inputs whose distribution keeps moving
# under it, and the learning rate has to stay small. With BatchNorm every block's output starts at
# mean 0 and std 1 by construction (`adds` = 0, `mults` = 1) and stays close to that, moving only as
# fast as the network learns `mults` and `adds`: each block hands the next one inputs with a stable
# distribution, and a learning rate of 1.0 trains without trouble. Ioffe & Szegedy (2015) called the
# moving input distribution *internal covariate shift*; later work (Santurkar et al., 2018) argues
# that BatchNorm helps mainly by making the loss surface smoother. The statistics plotted are the
# training batches' own; in eval mode the layer uses its running averages instead. Plot the two
# columns on separate scales (drop `sharey`) to see how much the BatchNorm curves move.
