# %% [markdown]
# # Q2 — Advantages and disadvantages of BatchNorm
#
# BatchNorm (Ioffe & Szegedy, 2015) made deep convolutional networks much easier to train, and it is
# still in most of them. But it is the one common layer whose output for an example depends on the
# *other* examples in its batch. In this notebook you first measure that dependence (Part A and the
# experiment after it), then read your measurement (Part B), and then weigh what BatchNorm buys against
# what it costs (Parts C and D).

# %% [setup]
%matplotlib inline
import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor

from course_lib import get_data, normalize_to, set_seed

set_seed(42)


# %% [markdown]
# ## Part A (3 points) — measure how much an output depends on its batch mates
#
# In training mode BatchNorm normalises channel $c$ of every example with the statistics of the whole batch,
#
# $$\hat{x}_{nchw} = \frac{x_{nchw} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}}, \qquad
# \mu_c = \frac{1}{NHW}\sum_{n,h,w} x_{nchw}, \qquad \sigma_c^2 = \frac{1}{NHW}\sum_{n,h,w} \left(x_{nchw} - \mu_c\right)^2,$$
#
# so one example's $\hat{x}$ changes when its batch mates change (Ioffe & Szegedy 2015, §3: "BN(x) depends
# both on the training example and the other examples in the mini-batch").
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
# ## Experiment — how the dependence changes with the batch size
#
# One MNIST digit, and 50 random batches of mates for each batch size from 1 to 256, measured twice: on the
# image as a 1-channel 28 x 28 map (as the first conv layer of the lesson's CNN sees it), and on each image's
# mean pixel alone, a 1 x 1 map (the shape BatchNorm sees after global pooling, or after a linear layer: one
# value per channel per example). The dashed lines fall like 1/sqrt(batch size) from the measured value at
# batch size 2, for comparison.
#
# **Before you run it, write down your prediction** (it is not graded): on each map, will the spread at batch
# size 2 be closer to 0.01, 0.1 or 1? By what factor will it shrink from batch size 2 to 256? And what will
# it be at batch size 1?

# %% [experiment]
x_train, _, x_valid, _ = get_data()
x_train, x_valid = normalize_to(x_train, x_valid)
images = x_train.view(-1, 1, 28, 28)
maps = {"28 x 28 map (the image)": images, "1 x 1 map (the image's mean)": images.mean(dim=(2, 3), keepdim=True)}
batch_sizes = [1, 2, 4, 8, 16, 32, 64, 128, 256]
spreads = {}
threads = torch.get_num_threads()
torch.set_num_threads(1)  # many small computations: one thread is faster than several
for name, data in maps.items():
    example, pool = data[0], data[1:]
    generator = torch.Generator().manual_seed(0)
    spreads[name] = []
    for bs in batch_sizes:
        picks = torch.randint(len(pool), (50, bs - 1), generator=generator)  # 50 trials of bs - 1 mates
        spreads[name].append(spread_across_batches(example, pool[picks]).item())
    line, = plt.loglog(batch_sizes[1:], spreads[name][1:], "o-", label=name)
    plt.loglog(batch_sizes[1:], [spreads[name][1] * (2 / bs) ** 0.5 for bs in batch_sizes[1:]], "--",
               color=line.get_color(), label="1/sqrt(batch size)")
torch.set_num_threads(threads)
print("batch size   spread 28 x 28   spread 1 x 1")
for i, bs in enumerate(batch_sizes):
    print(f"{bs:10d}   " + "   ".join(f"{spreads[name][i]:14.4f}" for name in maps))
plt.xlabel("batch size")
plt.ylabel("spread of the example's output")
plt.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Part B (2 points) — what your plot shows
#
# Use your plot and printout. (1) How large is the spread at batch size 2 on each map, by what factor does it
# shrink up to batch size 256, and how close do the measured points stay to the dashed lines? (2) Why is the
# spread on the 1 x 1 map so much larger, and what does the zero at batch size 1 mean: is a batch of one the
# best case?

# %% [answer id=q2_spread_plot points=2]
# Figures from the reference run in student mode (full data; bench/measure_q2_spread.py computes the same);
# every seed is fixed, so a student's printout should match them up to rounding.
#
# 1. **How large, how fast.** At batch size 2 the spread is 0.076 on the 28 x 28 map and 0.93 on
#    the 1 x 1 map; at 256 it is 0.0088 and 0.063, a factor of about 9 and 15, where
#    1/sqrt(batch size) predicts sqrt(128) = 11.3. The points scatter around the dashed lines (50 trials give
#    a rough estimate of a spread) but follow their slope: the dependence on the mates falls roughly like
#    1/sqrt(batch size), the way the error of a mean over more samples does.
# 2. **Why the 1 x 1 map, and batch size 1.** On the 1 x 1 map each image adds one value per channel, so a
#    batch of two has two values: normalised, they are about -1 and +1, and which one the example gets
#    depends only on whether its mate is larger. Its output is decided by the mate (a spread near 1). On the
#    28 x 28 map every image brings 784 values, which already vary a lot within the image, and the mean and
#    variance of one digit differ little from another's, so a mate moves the batch statistics only a little
#    (a spread below 0.1); what remains is that digit-to-digit variation, which averages out over more
#    images, not over more positions of the same image. At batch size
#    1 the spread is 0 only because there are no mates: the example is normalised with its own statistics,
#    which on the 28 x 28 map removes its own mean and contrast (per-image normalisation, as InstanceNorm
#    does) and on the 1 x 1 map outputs 0 for every input (its variance is 0; PyTorch's BatchNorm refuses to
#    train on one value per channel). The spread measures the dependence on the batch, not the quality of the
#    statistics; batch size 1 is the degenerate case, not the best one.
#
# **Mark scheme**
# - 1 point: reads the figures (the 28 x 28 spread is below 0.1 at batch size 2, the 1 x 1 spread near 1;
#   both shrink by roughly a factor of ten up to 256, about like 1/sqrt(batch size); accept any reading that
#   matches the printout).
# - 1 point: the 1 x 1 map has one value per example (two values in a batch of two, normalised to about
#   +-1), and the zero at batch size 1 is degenerate (own statistics only; zero output on a 1 x 1 map), not
#   an ideal.

# %% [markdown]
# ## Part C (3 points) — advantages and disadvantages
#
# List BatchNorm's main advantages and disadvantages, with a sentence of explanation each.

# %% [answer id=q2_advantages_disadvantages points=3]
# **Advantages**
# - **Higher learning rates and faster training.** Normalising each channel keeps activations in a
#   stable range as the weights change, so gradients neither explode nor vanish as easily and much
#   larger learning rates train stably (Ioffe & Szegedy 2015, §3.3). BN-Inception trained with 5 and 30
#   times Inception's initial learning rate (BN-x5, BN-x30); BN-x5 reached Inception's 72.2% accuracy in 14
#   times fewer steps (§4.2.2, Figure 3).
# - **Less sensitivity to initialisation.** The layer rescales whatever the previous layer produces,
#   so a badly scaled init matters far less: for BatchNorm right after a linear layer,
#   $\mathrm{BN}(Wu) = \mathrm{BN}((aW)u)$ for any scalar $a > 0$, and the gradient with respect to the layer's input
#   does not change either (§3.3).
# - **A mild regularising effect.** The batch statistics add noise that depends on the random batch
#   mates (Part A measured it), which slightly reduces overfitting. The paper found that dropout "can be
#   either removed or reduced in strength" (§3.4) and removed it from BN-Inception (§4.2.1, "Remove
#   Dropout"); some members of its ensemble used 5% or 10% dropout, against Inception's 40% (§4.2.3).
#
# **Disadvantages**
# - **Dependence on batch size and composition.** Each output depends on the other examples in the
#   batch (the experiment above); small batches give noisy statistics and worse results (Wu & He 2018,
#   §1 and §4.1), and the batch must be a fair sample, not, say, all one class. (The paper also found that
#   shuffling more thoroughly, so that the same examples do not keep meeting in a batch, improved its
#   validation accuracy by about 1%, §4.2.1.)
# - **Train/inference discrepancy.** Training normalises with batch statistics, inference with
#   running averages; if they differ (small batches, changing data, fine-tuning, few training steps)
#   accuracy drops at test time, and the running statistics are extra state to get right.
# - **Extra compute and memory** for the statistics in every forward and backward pass.
# - **Cross-device synchronisation.** With data-parallel training each device sees only its share
#   of the batch; true batch statistics need a synchronised BatchNorm that communicates at every layer
#   (cross-GPU BatchNorm, Peng et al. 2018, MegDet; `nn.SyncBatchNorm` in PyTorch).
#
# **Mark scheme**
# - 1 point: at least two advantages among higher learning rates/faster training, less sensitivity to
#   initialisation, mild regularisation.
# - 1 point: dependence on batch size and composition (small batches are noisy).
# - 1 point: train/inference discrepancy, plus one of extra compute or cross-device synchronisation.

# %% [markdown]
# ## Part D (3 points) — three hard cases
#
# Discuss BatchNorm in (1) semantic segmentation, (2) recurrent networks, and (3) online learning with
# batch size 1. What exactly is the problem in each, and what do people use?

# %% [answer id=q2_hard_cases points=3]
# 1. **Semantic segmentation.** BatchNorm is used there, but not everywhere: the original U-Net
#    (Ronneberger et al., 2015, §2) has no normalisation layer at all and trained on one image per batch
#    (§3), while later U-Nets add BatchNorm (3D U-Net, Çiçek et al., 2016) and DeepLabv3 (Chen et al.,
#    2017) trains BatchNorm in its added modules. The difficulty is the batch size: high-resolution
#    images fill the GPU's memory, so each device holds only a few images (often 1-2) and their statistics
#    are noisy and differ from the running ones. DeepLabv3 says a large batch is needed to train BatchNorm:
#    it computes the statistics over 16 images at output stride 16, then freezes BatchNorm's parameters to
#    train on at output stride 8 (§4, "Batch normalization"). Remedies: synchronised BatchNorm across devices
#    (statistics over the whole global batch; `nn.SyncBatchNorm`), freezing the statistics of a
#    pretrained backbone, or a batch-independent normaliser such as GroupNorm (Wu & He, 2018), which beat
#    its BatchNorm counterparts on COCO detection and instance segmentation with 1-2 images per GPU (§4.2).
# 2. **Recurrent networks.** The weights are shared over time, but that is not the problem: the
#    activations' statistics *differ per time step*, so one set of statistics does not fit every
#    step, and sequences have *different lengths*, so late time steps have few (or no) examples to
#    measure and a test sequence may be longer than any seen in training. Recurrent BatchNorm keeps
#    separate statistics per time step (Cooijmans et al., 2017), but the usual choice is LayerNorm
#    (Ba, Kiros & Hinton, 2016), which normalises each example over its features, needs no batch and
#    does the same at train and test time. LayerNorm also went into the original Transformer (Vaswani et
#    al., 2017), BERT and GPT-2; most of today's large language models (Llama and others) use RMSNorm
#    (Zhang & Sennrich, 2019), which drops the mean subtraction, placed before each sub-layer (pre-norm;
#    Xiong et al., 2020).
# 3. **Batch size 1 / online learning.** There are no batch statistics to compute: with one example
#    the per-channel variance comes from one image's positions only (and is zero for a 1x1 map or a
#    fully connected layer, where PyTorch refuses to train), so training-mode normalisation is
#    meaningless or degenerates into per-example normalisation (the experiment's batch size 1), and the
#    running averages never see a real batch. Use a batch-independent normaliser (LayerNorm, GroupNorm,
#    InstanceNorm where it suits the task) or keep running statistics that smooth over many steps (the
#    lesson's RunningBatchNorm).
#
# **Mark scheme**
# - 1 point: segmentation — BN is used (e.g. DeepLabv3; the original U-Net had no normalisation); the
#   problem is small per-device batches; remedy SyncBN, frozen statistics or GroupNorm. (No credit for
#   "BN is not used in segmentation".)
# - 1 point: RNNs — statistics differ per time step and lengths vary; recurrent BN exists, LayerNorm is
#   the usual choice (RMSNorm in most current LLMs also earns it). (No credit for "because the weights are
#   shared" alone.)
# - 1 point: batch size 1 has no batch statistics (zero variance on 1x1 maps); use a batch-independent
#   norm or smoothed running statistics.
