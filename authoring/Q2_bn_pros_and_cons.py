# %% [markdown]
# # Q2 — Advantages and disadvantages of BatchNorm
#
# BatchNorm (Ioffe & Szegedy, 2015) made deep convolutional networks much easier to train, and it is
# still in most of them. But it is the one common layer whose output for an example depends on the
# *other* examples in its batch. This notebook asks what that buys and what it costs, and lets you
# measure the cost.

# %% [setup]
%matplotlib inline
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib import get_data, normalize_to, set_seed

set_seed(42)

# %% [markdown]
# ## Part A (3 points) — advantages and disadvantages
#
# List BatchNorm's main advantages and disadvantages, with a sentence of explanation each.

# %% [answer id=q2_advantages_disadvantages points=3]
# **Advantages**
# - **Higher learning rates and faster training.** Normalising each channel keeps activations in a
#   stable range as the weights change, so gradients neither explode nor vanish as easily and much
#   larger learning rates train stably (Ioffe & Szegedy, 2015 trained Inception with 5-30x higher rates
#   and 14x fewer steps).
# - **Less sensitivity to initialisation.** The layer rescales whatever the previous layer produces,
#   so a badly scaled init matters far less (the output does not change if a layer's weights are scaled).
# - **A mild regularising effect.** The batch statistics add noise that depends on the random batch
#   mates, which slightly reduces overfitting (the original paper could reduce dropout).
#
# **Disadvantages**
# - **Dependence on batch size and composition.** Each output depends on the other examples in the
#   batch; small batches give noisy statistics and worse results, and the batch must be a fair sample
#   (not, say, all one class).
# - **Train/inference discrepancy.** Training normalises with batch statistics, inference with
#   running averages; if they differ (small batches, changing data, fine-tuning, few training steps)
#   accuracy drops at test time, and the running statistics are extra state to get right.
# - **Extra compute and memory** for the statistics in every forward and backward pass.
# - **Cross-device synchronisation.** With data-parallel training each device sees only its share
#   of the batch; true batch statistics need a synchronised BatchNorm that communicates every layer.
#
# **Mark scheme**
# - 1 point: at least two advantages among higher learning rates/faster training, less sensitivity to
#   initialisation, mild regularisation.
# - 1 point: dependence on batch size and composition (small batches are noisy).
# - 1 point: train/inference discrepancy, plus one of extra compute or cross-device synchronisation.

# %% [markdown]
# ## Part B (3 points) — three hard cases
#
# Discuss BatchNorm in (1) semantic segmentation, (2) recurrent networks, and (3) online learning with
# batch size 1. What exactly is the problem in each, and what do people use?

# %% [answer id=q2_hard_cases points=3]
# 1. **Semantic segmentation.** BatchNorm *is* used there: U-Net-style and DeepLab networks
#    (DeepLabv3, Chen et al., 2017) have BatchNorm after their convolutions. The difficulty is
#    the batch size: high-resolution images fill the GPU's memory, so each device holds only a few images
#    (often 1-2) and their statistics are noisy and differ from the running ones. Remedies: synchronised
#    BatchNorm across devices (statistics over the whole global batch, as PSPNet did), or a batch-independent
#    normaliser such as GroupNorm (Wu & He, 2018), which showed exactly this on detection and segmentation;
#    freezing BatchNorm's statistics from a pretrained backbone is also common.
# 2. **Recurrent networks.** The weights are shared over time, but that is not the problem: the
#    activations' statistics *differ per time step*, so one set of statistics does not fit every
#    step, and sequences have *different lengths*, so late time steps have few (or no) examples to
#    measure and a test sequence may be longer than any seen in training. Recurrent BatchNorm keeps
#    separate statistics per time step (Cooijmans et al., 2017), but the usual choice is LayerNorm
#    (Ba, Kiros & Hinton, 2016), which normalises each example over its features, needs no batch and
#    does the same at train and test time (it is the norm of transformers too).
# 3. **Batch size 1 / online learning.** There are no batch statistics to compute: with one example
#    the per-channel variance comes from one image's positions only (and is zero for a 1x1 map or a
#    fully connected layer, where PyTorch refuses to train), so training-mode normalisation is
#    meaningless or degenerates into per-example normalisation, and the running averages never see a
#    real batch. Use a batch-independent normaliser (LayerNorm, GroupNorm, InstanceNorm where it suits
#    the task) or keep running statistics that smooth over many steps (the lesson's RunningBatchNorm).
#
# **Mark scheme**
# - 1 point: segmentation — BN is used (U-Net, DeepLab); the problem is small per-device batches;
#   remedy SyncBN or GroupNorm. (No credit for "BN is not used in segmentation".)
# - 1 point: RNNs — statistics differ per time step and lengths vary; recurrent BN exists, LayerNorm is
#   the usual choice. (No credit for "because the weights are shared" alone.)
# - 1 point: batch size 1 has no batch statistics (zero variance on 1x1 maps); use a batch-independent
#   norm or smoothed running statistics.

# %% [markdown]
# ## Part C (3 points) — measure how much an output depends on its batch mates
#
# Write `spread_across_batches(example, mate_batches, eps=1e-5)`.
#
# - `example` has shape (C, H, W); `mate_batches` has shape (T, M, C, H, W): T trials, each with M
#   other examples (M may be 0).
# - For each trial t, form the batch `[example, *mate_batches[t]]` (M + 1 examples, the example first)
#   and normalise it as BatchNorm does in training, without scale and shift: per channel, the mean and
#   **biased** variance over the batch and all positions, then `(x - mean) / sqrt(var + eps)`. Keep the
#   example's normalised output (C, H, W).
# - Return the spread of those T outputs: the **population** standard deviation over the trials
#   (`correction=0`) at each position, averaged over H and W — a tensor of shape (C,), in the input's dtype.
# - Raise a `ValueError` with a message when `example` is not 3-D, `mate_batches` is not 5-D, or their
#   channel or spatial sizes differ.
#
# You may use `F.batch_norm` or write the math yourself.

# %% [solution id=spread_across_batches]
def spread_across_batches(example: Tensor, mate_batches: Tensor, eps: float = 1e-5) -> Tensor:
    """Per channel, how much example's train-mode BatchNorm output varies over T batches of mates: shape (C,)."""
    ### BEGIN SOLUTION
    if example.dim() != 3:
        raise ValueError(f"example must be (C, H, W), got shape {tuple(example.shape)}")
    if mate_batches.dim() != 5:
        raise ValueError(f"mate_batches must be (T, M, C, H, W), got shape {tuple(mate_batches.shape)}")
    if mate_batches.shape[2:] != example.shape:
        raise ValueError(f"mates of shape {tuple(mate_batches.shape[2:])} do not fit an example of shape "
                         f"{tuple(example.shape)}")
    trials = mate_batches.shape[0]
    batches = torch.cat([example.expand(trials, 1, *example.shape), mate_batches], dim=1)  # (T, M+1, C, H, W)
    mean = batches.mean(dim=(1, 3, 4), keepdim=True)
    var = batches.var(dim=(1, 3, 4), keepdim=True, correction=0)
    outputs = ((batches - mean) / (var + eps).sqrt())[:, 0]  # the example's output in each trial
    return outputs.std(dim=0, correction=0).mean(dim=(1, 2))
    ### END SOLUTION

# %% [demo]
# Check that it does: no spread when every trial has the same mates, some when they differ.
example = torch.randn(2, 3, 3)
same = torch.randn(1, 4, 2, 3, 3).expand(5, 4, 2, 3, 3)
print("same mates:     ", spread_across_batches(example, same).tolist())
print("different mates:", spread_across_batches(example, torch.randn(5, 4, 2, 3, 3)).tolist())

# %% [test id=test_spread_values points=2]
"""spread_across_batches: the spread of the example's train-mode BatchNorm output over the trials."""
torch.manual_seed(0)  # the same visible inputs on every run
from course_lib.checks import student_checks

with student_checks():
    example, mate_batches = torch.randn(2, 3, 3, dtype=torch.float64), torch.randn(6, 3, 2, 3, 3, dtype=torch.float64)
    spread = spread_across_batches(example, mate_batches)
    assert spread.shape == (2,), f"expected one value per channel, shape (2,), got {tuple(spread.shape)}"
    assert torch.isfinite(spread).all() and (spread > 0).all(), f"expected finite, positive spreads, got {spread.tolist()}"
    # One channel, one position: the example is 0, and four trials put it beside one mate, 2, -2, 0 or 0. With eps=0.5
    # the example's output is -1/sqrt(1.5), +1/sqrt(1.5), 0 and 0 (batches {0, 2}, {0, -2}, {0, 0}, {0, 0}: biased
    # variance 1, 1, 0, 0), and the spread of those four numbers (their standard deviation, dividing by 4) is
    # sqrt((2/3) / 4) = 1/sqrt(3) = 0.5774.
    hand = spread_across_batches(torch.zeros(1, 1, 1, dtype=torch.float64),
                                 torch.tensor([2.0, -2.0, 0.0, 0.0], dtype=torch.float64).view(4, 1, 1, 1, 1), eps=0.5)
    known = {2 / 3: "the SAMPLE standard deviation over the trials (dividing by T - 1 = 3): divide by T = 4",
             1 / 3: "the variance over the trials: the spread is their standard deviation",
             0.4714: "eps added to the standard deviation: the batch is normalised with sqrt(var + eps)",
             0.4472: "the UNBIASED variance inside BatchNorm: train-mode BatchNorm normalises with the biased one",
             0.7071: "eps = 1e-5, the default, where eps=0.5 was given: pass the eps argument on"}
    for value, mistake in known.items():
        assert abs(hand.item() - value) > 1e-3, (
            f"expected the spread 1/sqrt(3) = 0.5774; yours is {hand.item():.4f}: that is {mistake}")
    assert abs(hand.item() - 3 ** -0.5) < 1e-4, (
        f"expected the spread 1/sqrt(3) = 0.5774 (see the comment above); got {hand.tolist()}")
    # Two positions (one channel, H=1, W=2), eps almost 0: the example [2, 0], beside the mate [0, -2] (batch mean 0,
    # variance 2: output [sqrt(2), 0]) and beside the mate [2, 0] (mean 1, variance 1: output [1, -1]). The spread at
    # position 0 is (sqrt(2) - 1) / 2 = 0.2071, at position 1 it is 0.5; their mean is sqrt(2) / 4 = 0.3536.
    two = spread_across_batches(torch.tensor([2.0, 0.0], dtype=torch.float64).view(1, 1, 2),
                                torch.tensor([0.0, -2.0, 2.0, 0.0], dtype=torch.float64).view(2, 1, 1, 1, 2), eps=1e-12)
    known = {0.5: "the largest spread over the positions instead of their mean, or statistics taken per position (over "
                  "the batch only) instead of over the batch and all positions",
             0.3827: "the variance over the trials averaged over the positions, then its square root: average the "
                     "standard deviations instead",
             0.9354: "one standard deviation over the trials and the positions together: take it at each position"}
    for value, mistake in known.items():
        assert abs(two.item() - value) > 1e-3, (
            f"expected the spread sqrt(2) / 4 = 0.3536; yours is {two.item():.4f}: that is {mistake}")
    assert abs(two.item() - 2 ** 0.5 / 4) < 1e-4, (
        f"expected the spread sqrt(2) / 4 = 0.3536 (see the comment above); got {two.tolist()}")
### BEGIN HIDDEN TESTS
from course_recorder import q2

q2.spread_values(spread_across_batches)
### END HIDDEN TESTS

# %% [test id=test_spread_contract points=1]
"""spread_across_batches: zero without batch mates, the input's dtype, any memory layout, ValueError for shapes that do not fit."""
torch.manual_seed(0)  # the same visible inputs on every run
from course_lib.checks import student_checks

with student_checks():
    example = torch.randn(2, 3, 3)
    alone = spread_across_batches(example, torch.empty(4, 0, 2, 3, 3))
    assert alone.dtype == torch.float32, f"keep the input's dtype (float32), got {alone.dtype}"
    assert torch.allclose(alone, torch.zeros(2)), f"with no batch mates every trial is the same: expected 0, got {alone.tolist()}"
    # The same mates in every trial, made with .expand as in the demo (a view, not a copy): every trial is the same.
    same = spread_across_batches(example, torch.randn(1, 4, 2, 3, 3).expand(5, 4, 2, 3, 3))
    assert torch.allclose(same, torch.zeros(2), atol=1e-6), f"the same mates in every trial: expected 0, got {same.tolist()}"
    mates = torch.randn(4, 3, 2, 3, 3)
    try:  # the same values, H and W swapped in memory (not contiguous)
        swapped = spread_across_batches(example.transpose(1, 2), mates.transpose(3, 4))
    except RuntimeError as err:
        raise AssertionError(f"inputs that are transposed views raised {err}: .view needs a contiguous tensor; use "
                             f".reshape or .flatten, which accept any tensor") from None
    straight = spread_across_batches(example.transpose(1, 2).contiguous(), mates.transpose(3, 4).contiguous())
    assert torch.allclose(swapped, straight), "the same values in another memory layout should give the same spread"
    try:
        spread_across_batches(example, torch.randn(4, 3, 2, 5, 5))
    except ValueError:
        pass
    except Exception as err:
        raise AssertionError(f"mates of shape (2, 5, 5) do not fit an example of shape (2, 3, 3): expected a "
                             f"ValueError, not {type(err).__name__}: {err}") from None
    else:
        raise AssertionError("mates of shape (2, 5, 5) do not fit an example of shape (2, 3, 3): expected a ValueError")
### BEGIN HIDDEN TESTS
from course_recorder import q2

q2.spread_contract(spread_across_batches)
### END HIDDEN TESTS

# %% [markdown]
# ## How the dependence shrinks with the batch size
#
# One MNIST digit, 20 random batches of mates for each batch size (images as a 1-channel (1, 28, 28)
# map, as the first layer of the lesson's CNN sees them). At batch size 1 there are no mates and no
# spread — but then the "batch" statistics are just this one image's, the degenerate case of Part B.
# With more mates the spread falls roughly like 1/sqrt(batch size): small batches make BatchNorm's
# output noisy, large ones make it nearly deterministic.

# %% [experiment]
x_train, _, x_valid, _ = get_data()
x_train, x_valid = normalize_to(x_train, x_valid)
images = x_train.view(-1, 1, 28, 28)
example, pool = images[0], images[1:]
generator = torch.Generator().manual_seed(0)
batch_sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256]
spreads = []
for bs in batch_sizes:
    picks = torch.randint(len(pool), (20, bs - 1), generator=generator)
    spreads.append(spread_across_batches(example, pool[picks]).item())
for bs, s in zip(batch_sizes, spreads):
    print(f"batch size {bs:4d}: spread {s:.4f}")
plt.loglog(batch_sizes[1:], spreads[1:], "o-", label="measured")
plt.loglog(batch_sizes[1:], [spreads[1] * (2 / bs) ** 0.5 for bs in batch_sizes[1:]], "--", label="1/sqrt(batch size)")
plt.xlabel("batch size")
plt.ylabel("spread of the example's output")
plt.legend()
plt.show()
