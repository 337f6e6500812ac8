# %% [markdown]
# # Q1 — What BatchNorm learns and what it measures
#
# A BatchNorm layer (Ioffe & Szegedy, 2015) holds two kinds of numbers per channel. Some are **learned**
# by gradient descent; others are **measured** from the data that flows through it. In this notebook you
# first measure: the statistics themselves (Part A), how one example's output depends on its batch in
# training and in eval mode (Part B), and how fast the running statistics follow the data (the experiment
# before Part C). Then you explain what you saw: which numbers are which, and why inference uses running
# averages.
#
# In training mode, for each channel $c$ of an activation $x$ of shape (N, C, H, W), BatchNorm computes
# the batch's mean and (biased) variance over the batch and all positions,
#
# $$\mu_c = \frac{1}{NHW}\sum_{n,h,w} x_{nchw}, \qquad \sigma_c^2 = \frac{1}{NHW}\sum_{n,h,w} \left(x_{nchw} - \mu_c\right)^2,$$
#
# and outputs $y_{nchw} = \gamma_c \, \dfrac{x_{nchw} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c$
# (Ioffe & Szegedy 2015, Algorithm 1; §3.2 for the per-channel statistics of a convolutional layer).

# %% [setup]
%matplotlib inline
import copy

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import get_data, normalize_to, set_seed

set_seed(42)


# %% [markdown]
# ## Part A (3 points) — measure the statistics
#
# Write `channel_stats(x)`: the per-channel mean $\mu_c$ and **biased** variance $\sigma_c^2$ above (divide
# by n, as BatchNorm's output uses) of an activation `x` of shape (N, C, H, W), over the batch and the
# spatial positions. Each result has shape (C,) and the dtype of `x`. Raise a `ValueError` with a message
# when `x` is not 4-D.

# %% [solution id=channel_stats]
def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel (mean, biased variance) of an (N, C, H, W) tensor over dims 0, 2 and 3; each of shape (C,)."""
    ### BEGIN SOLUTION
    if x.dim() != 4:
        raise ValueError(f"channel_stats expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    mean = x.mean(dim=(0, 2, 3))
    var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))
    return mean, var
    ### END SOLUTION

# %% [demo]
# Check that it does: after nn.BatchNorm2d in training mode (gamma 1, beta 0) every channel has mean 0
# and variance close to 1 (not exactly 1: eps is added to the variance).
x = torch.randn(16, 4, 5, 5) * torch.tensor([1., 2., 3., 4.])[:, None, None] + 7
mean, var = channel_stats(x)
print("input :", mean.round(decimals=2).tolist(), var.round(decimals=2).tolist())
mean, var = channel_stats(nn.BatchNorm2d(4)(x))
print("output:", mean.round(decimals=3).abs().tolist(), var.round(decimals=3).tolist())

# %% [demo]
# NBVAL_CHECK_OUTPUT
# Small enough to check by hand: channel 0 holds 0-3 and 8-11, channel 1 holds 4-7 and 12-15.
mean, var = channel_stats(torch.arange(16.).view(2, 2, 2, 2))
print(mean.tolist(), var.tolist())

# %% [output]
# [5.5, 9.5] [17.25, 17.25]

# %% [test id=test_channel_stats_values points=2]
"""channel_stats: per-channel mean and biased variance over batch and positions."""
from course_lib.checks import student_checks

with student_checks():
    x = torch.arange(24.).reshape(2, 3, 2, 2)
    mean, var = channel_stats(x)
    assert mean.shape == (3,) and var.shape == (3,), (
        f"expected two (3,) tensors, one value per channel, reduced over dims 0, 2 and 3 (no keepdim); "
        f"got {tuple(mean.shape)} and {tuple(var.shape)}")
    mean, var = mean.double(), var.double()  # the values only: test_channel_stats_contract checks the dtype
    assert torch.allclose(mean, torch.tensor([7.5, 11.5, 15.5], dtype=torch.float64)), (
        f"expected the means [7.5, 11.5, 15.5], got {mean.tolist()}")
    assert (var >= 0).all(), f"a variance cannot be negative, got {var.tolist()}"
    # Every channel holds 8 values (2 examples x 4 positions), e.g. channel 0: 0-3 and 12-15; mean 7.5, and the
    # squared deviations sum to 298, so the biased variance is 298 / 8 = 37.25 for every channel.
    known = {298 / 7: "the UNBIASED variance (dividing by n - 1 = 7): divide by the number of values n = 8",
             298 ** 0.5 / 8 ** 0.5: "the standard deviation: return the variance, not its square root",
             1.25: "each example's own variance, averaged: compute one variance over the batch and the positions together",
             93.5: "the mean of the squares, without subtracting the mean first"}
    for value, mistake in known.items():
        assert not torch.allclose(var, torch.full((3,), value, dtype=torch.float64), atol=1e-3), (
            f"the variances should be [37.25, 37.25, 37.25]; yours are {value:.4g}: that is {mistake}")
    assert torch.allclose(var, torch.full((3,), 37.25, dtype=torch.float64)), (
        f"expected the biased variances [37.25, 37.25, 37.25], got {var.tolist()}")
### BEGIN HIDDEN TESTS
from course_recorder import q1

q1.channel_stats_values(channel_stats)
### END HIDDEN TESTS

# %% [test id=test_channel_stats_contract points=1]
"""channel_stats: shapes (C,), the input's dtype, any memory layout, and a ValueError for an input that is not 4-D."""
torch.manual_seed(0)  # the same visible inputs on every run
from course_lib.checks import student_checks

with student_checks():
    x = torch.randn(3, 5, 4, 4, dtype=torch.float64)
    mean, var = channel_stats(x)
    assert mean.shape == (5,) and var.shape == (5,), (
        f"expected two (5,) tensors, one value per channel, reduced over dims 0, 2 and 3 (no keepdim); "
        f"got {tuple(mean.shape)} and {tuple(var.shape)}")
    assert mean.dtype == torch.float64 and var.dtype == torch.float64, "keep the input's dtype"
    mean32, _ = channel_stats(x.float())
    assert mean32.dtype == torch.float32, f"keep the input's dtype: a float32 input gave {mean32.dtype}"
    try:
        swapped, _ = channel_stats(x.transpose(2, 3))  # the same values per channel, not contiguous in memory
    except RuntimeError as err:
        raise AssertionError(f"channel_stats(x.transpose(2, 3)) raised {err}: .view needs a contiguous tensor; use "
                             f".reshape or .flatten, which accept any tensor") from None
    assert torch.allclose(swapped, mean), "a transposed input has the same per-channel statistics"
    try:
        channel_stats(torch.randn(3, 5, 4, dtype=torch.float64))
    except ValueError:
        pass
    except Exception as err:
        raise AssertionError(f"a 3-D input should raise a ValueError (channel_stats takes (N, C, H, W) tensors), "
                             f"not {type(err).__name__}: {err}") from None
    else:
        raise AssertionError("a 3-D input should raise a ValueError (channel_stats takes (N, C, H, W) tensors)")
### BEGIN HIDDEN TESTS
from course_recorder import q1

q1.channel_stats_contract(channel_stats)
### END HIDDEN TESTS

# %% [markdown]
# ## Part B (4 points) — one example, different batch mates
#
# Write `output_in_batch(bn, example, mates, train)`: the output of the BatchNorm layer `bn` for one
# `example` of shape (C, H, W) when it is the **first** item of the batch `[example, *mates]`
# (`mates` has shape (M, C, H, W), M may be 0), with `bn` in training mode if `train` is true and in eval
# mode otherwise. Return the example's output only, shape (C, H, W). Measuring must not change the layer:
# its running statistics, its `num_batches_tracked` and its train/eval mode are the same after the call
# as before (a training-mode forward updates the running statistics — work on a copy, or save and restore).

# %% [solution id=output_in_batch]
def output_in_batch(bn: nn.BatchNorm2d, example: Tensor, mates: Tensor, train: bool) -> Tensor:
    """bn's output for `example` as the first item of [example, *mates], in train or eval mode; bn is left unchanged."""
    ### BEGIN SOLUTION
    layer = copy.deepcopy(bn)  # a copy: its running statistics may change, bn's must not
    layer.train(train)
    with torch.no_grad():
        return layer(torch.cat([example[None], mates]))[0]
    ### END SOLUTION

# %% [markdown]
# **Before you run the next cell, write down your prediction** (it is not graded): one MNIST image goes
# through a conv layer and a BatchNorm layer three times, each time with 32 different batch mates. By how
# much will its output change from one set of mates to another, in training mode and in eval mode:
# not at all, about 0.01, about 0.1, or about 1 (the output's values are of the order of 1)?

# %% [demo]
# Check that it does: the largest change of the example's output over three sets of batch mates, in each mode.
x_train, _, x_valid, _ = get_data()
x_train, x_valid = normalize_to(x_train, x_valid)
images = x_train[:97].view(-1, 1, 28, 28)
conv = nn.Conv2d(1, 4, 5, stride=2, padding=2)
bn = nn.BatchNorm2d(4)
with torch.no_grad():
    for start in range(0, 48 * 20, 48):  # 20 training-mode batches: the running statistics move off 0 and 1
        bn(conv(x_train[start:start + 48].view(-1, 1, 28, 28)))
    features = conv(images)
example, pools = features[0], [features[1:33], features[33:65], features[65:97]]
for train in (True, False):
    outs = [output_in_batch(bn, example, mates, train) for mates in pools]
    spread = max((a - b).abs().max().item() for a in outs for b in outs)
    print(f"{'train' if train else 'eval '} mode: largest change of the example's output across batches = {spread:.4f}")

# %% [test id=test_output_in_batch_train points=2]
"""output_in_batch(train=True): normalised with the statistics of the whole batch the example sits in."""
torch.manual_seed(0)  # the same visible inputs on every run
from course_lib.checks import student_checks

with student_checks():
    bn = nn.BatchNorm2d(2)
    example, mates = torch.randn(2, 3, 3), torch.randn(5, 2, 3, 3)
    out = output_in_batch(bn, example, mates, True)
    assert out.shape == (2, 3, 3), f"expected the example's output, shape (2, 3, 3), got {tuple(out.shape)}"
    assert not torch.allclose(out, output_in_batch(bn, example, mates * 3 + 1, True)), (
        "in train mode the example's output should change when its batch mates change")
    # With one mate equal to -example the batch's mean is 0 and its variance the mean of example**2, per channel.
    mirrored = output_in_batch(bn, example, -example[None], True)
    want = example / (example.pow(2).mean((1, 2), keepdim=True) + bn.eps).sqrt()
    assert torch.allclose(mirrored, want, atol=1e-5), (
        "with the single mate -example, the batch (example and mate together) has mean 0 and variance mean(example**2) "
        "per channel, and the example's output is example / sqrt(mean(example**2) + eps); yours differs (are the "
        "statistics taken over the whole batch, example included?)")
    alone = output_in_batch(bn, example, torch.empty(0, 2, 3, 3), True)
    assert torch.allclose(alone.mean((1, 2)), torch.zeros(2), atol=1e-5), (
        f"without batch mates the example is a batch of one: in train mode it is normalised with its own statistics, so "
        f"each channel's mean is 0; got {alone.mean((1, 2)).tolist()}")
### BEGIN HIDDEN TESTS
from course_recorder import q1

q1.output_in_batch_train(output_in_batch)
### END HIDDEN TESTS

# %% [test id=test_output_in_batch_eval points=1]
"""output_in_batch(train=False): normalised with the running statistics, whatever the batch mates."""
torch.manual_seed(0)  # the same visible inputs on every run
from course_lib.checks import student_checks

with student_checks():
    bn = nn.BatchNorm2d(2)
    with torch.no_grad():
        bn.running_mean.copy_(torch.tensor([0.5, -1.0]))
        bn.running_var.copy_(torch.tensor([4.0, 0.25]))
    example, mates = torch.randn(2, 3, 3), torch.randn(5, 2, 3, 3)
    out = output_in_batch(bn, example, mates, False)
    assert torch.allclose(out, output_in_batch(bn, example, mates * 3 + 1, False)), (
        "in eval mode the example's output must not depend on its batch mates")
    # Channel 0 has running mean 0.5 and variance 4: its output is (example - 0.5) / sqrt(4 + eps); channel 1 has
    # running mean -1 and variance 0.25: (example + 1) / sqrt(0.25 + eps) (gamma 1 and beta 0 change nothing).
    want = (example - bn.running_mean[:, None, None]) / (bn.running_var[:, None, None] + bn.eps).sqrt()
    assert torch.allclose(out, want, atol=1e-5), (
        "in eval mode the example is normalised with bn.running_mean and bn.running_var: (example - running_mean) / "
        "sqrt(running_var + eps), then scaled and shifted; yours differs")
### BEGIN HIDDEN TESTS
from course_recorder import q1

q1.output_in_batch_eval(output_in_batch)
### END HIDDEN TESTS

# %% [test id=test_output_in_batch_leaves_layer points=1]
"""output_in_batch leaves the layer's running statistics, counter and mode unchanged."""
torch.manual_seed(0)  # the same visible inputs on every run
from course_lib.checks import student_checks

with student_checks():
    bn = nn.BatchNorm2d(2).eval()
    output_in_batch(bn, torch.randn(2, 3, 3), torch.randn(5, 2, 3, 3) + 4, True)
    assert torch.equal(bn.running_mean, torch.zeros(2)), f"bn.running_mean changed to {bn.running_mean.tolist()}"
    assert int(bn.num_batches_tracked) == 0, f"bn.num_batches_tracked changed to {int(bn.num_batches_tracked)}"
    assert not bn.training, "bn was in eval mode before the call and should be after it"
### BEGIN HIDDEN TESTS
from course_recorder import q1

q1.output_in_batch_leaves_layer(output_in_batch)
### END HIDDEN TESTS

# %% [markdown]
# ## Experiment — how fast do the running statistics follow the data?
#
# A new `nn.BatchNorm2d` starts with `running_mean` 0 and `running_var` 1, whatever its data. Below, the
# outputs of one fixed conv layer (4 channels, 14 x 14) are fed in training mode to two new BatchNorm layers,
# 500 random batches of 16 images, and after every batch channel 0's `running_mean` is recorded. The dashed
# line is the mean of the whole training set's outputs, measured with your `channel_stats`; the grey dots
# are each batch's own mean. The two layers differ only in `momentum`: 0.1 (PyTorch's default, and the
# lesson's `mom`) and 0.01. The right panel zooms in on the last 300 batches.
#
# **Before you run it, write down your prediction** (it is not graded): which of the two layers gets close
# to the dashed line sooner, after roughly how many batches, and which one wobbles more once it is there?

# %% [experiment]
x_train, _, x_valid, _ = get_data()
x_train, x_valid = normalize_to(x_train, x_valid)
torch.manual_seed(0)  # the same conv layer and the same batches on every run
conv = nn.Conv2d(1, 4, 5, stride=2, padding=2)
with torch.no_grad():
    features = conv(x_train.view(-1, 1, 28, 28))  # what a BatchNorm after this conv sees: (N, 4, 14, 14)
data_mean, data_var = channel_stats(features)
batches = features[torch.randint(len(features), (500, 16))]  # 500 random batches of 16: (500, 16, 4, 14, 14)
batch_means = batches[:, :, 0].mean(dim=(1, 2, 3))  # channel 0's mean in each batch
print(f"channel 0 of the whole training set: mean {data_mean[0].item():+.4f}, variance {data_var[0].item():.4f}; "
      f"the batches' own means scatter with a standard deviation of {batch_means.std().item():.4f}")
fig, (ax_all, ax_zoom) = plt.subplots(1, 2, figsize=(12, 4))
for ax in (ax_all, ax_zoom):
    ax.plot(batch_means, ".", color="0.7", markersize=3, label="each batch's mean")
    ax.axhline(data_mean[0].item(), color="k", linestyle="--", label="the training set's mean")
threads = torch.get_num_threads()
torch.set_num_threads(1)  # a thousand small steps: one thread is faster than several
for momentum in (0.1, 0.01):
    bn = nn.BatchNorm2d(4, momentum=momentum)
    running = []
    with torch.no_grad():
        for batch in batches:
            bn(batch)
            running.append(bn.running_mean[0].item())
    for ax in (ax_all, ax_zoom):
        ax.plot(running, label=f"running_mean, momentum={momentum}")
    print(f"momentum={momentum:<4}: running_mean after 10, 30, 100, 300, 500 batches: "
          + ", ".join(f"{running[k - 1]:+.4f}" for k in (10, 30, 100, 300, 500))
          + f"; its largest step from one batch to the next over the last 200: "
          f"{torch.tensor(running[300:]).diff().abs().max().item():.4f}")
torch.set_num_threads(threads)
ax_zoom.set_xlim(200, 500)
ax_zoom.set_ylim(data_mean[0].item() - 0.03, data_mean[0].item() + 0.03)
for ax in (ax_all, ax_zoom):
    ax.set_xlabel("training-mode batches seen")
    ax.set_ylabel("channel 0's mean")
ax_all.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## Part C (2 points) — what your plot shows
#
# Use your plot and printout above. (1) After about how many batches is each layer's `running_mean` close to
# the training set's mean, and what does that tell you about what PyTorch's `momentum` weights? (2) Once
# there, which layer's curve wobbles more, and why? Which would you rather have while the network's weights
# are still changing?

# %% [answer id=q1_running_stats_plot points=2]
# Figures from the reference run in student mode (full data; bench/measure_q1_running_stats.py computes the
# same); every seed is fixed, so a student's printout should match them up to rounding.
#
# 1. **How fast.** The training set's channel-0 mean is +0.2011. With `momentum=0.1` the running mean is
#    +0.135 after 10 batches and +0.192 after 30: close within a few tens of batches. With `momentum=0.01`
#    it is +0.053 after 30, +0.128 after 100 and +0.190 after 300 batches, and arrives only near 500
#    (+0.199). The update is `running = (1 - momentum) * running + momentum * batch_mean` (PyTorch's
#    documentation of `nn.BatchNorm2d`; the lesson's `means.lerp_(m, self.mom)` with `mom=0.1` is the same
#    update): `momentum` is the weight of the **new** batch, so the starting value 0 still weighs $0.9^k$
#    after $k$ batches with 0.1 (0.35 after 10, 0.04 after 30) but $0.99^k$ with 0.01 (0.37 after 100,
#    0.05 after 300). That is the opposite of an optimiser's momentum, where 0.9 is the weight of the past
#    (the lesson's comment: "pytorch bn mom is opposite of what you'd expect").
# 2. **How noisy.** The batches' own means scatter around the dashed line (standard deviation 0.0087,
#    batches of 16). The `momentum=0.1` curve follows that scatter: it moves by up to 0.0024 from one batch
#    to the next in the last 200 batches, against 0.0003 for `momentum=0.01`, because it averages, in
#    effect, only the last ten or twenty batches where 0.01 averages one or two hundred. Small momentum: less
#    noise, more lag. While the weights change, old batches' statistics are stale, so the faster 0.1
#    follows the network better; once training is over, a cumulative average over many batches measured
#    with the final weights (`momentum=None`) removes both the noise and the staleness.
#
# **Mark scheme**
# - 1 point: reads the plot or printout correctly (momentum 0.1 is close within a few tens of batches, 0.01
#   needs hundreds; accept any figures that match the printout) and concludes that PyTorch's `momentum` is
#   the weight of the new batch (larger momentum, faster). No point for "0.01 is faster".
# - 1 point: the 0.1 curve wobbles more because it averages fewer batches; 0.01 is smoother but lags behind
#   (stale statistics while the weights change); any sensible choice that names this trade-off.

# %% [markdown]
# ## Part D (2 points) — parameters and statistics
#
# Which of BatchNorm's per-channel numbers are **parameters** and which are **statistics**? For each,
# say how it gets its value and what training (or updating) it needs. Look at
# `nn.BatchNorm2d(8).named_parameters()` and `.named_buffers()` if it helps.

# %% [answer id=q1_parameters_and_statistics points=2]
# **Parameters — learned:** the scale `gamma` (`weight`, initialised to 1) and the shift `beta` (`bias`,
# initialised to 0), one of each per channel. They are `nn.Parameter`s: they receive gradients from the
# loss and the optimiser updates them, like the convolution weights. They let the network undo or
# reshape the normalisation: with $\gamma_c = \sqrt{\sigma_c^2 + \epsilon}$ and $\beta_c = \mu_c$ the layer
# is the identity, so normalising does not limit what a layer can represent (Ioffe & Szegedy, 2015, §3).
# Training them needs backpropagation through the layer.
#
# **Statistics — measured:** the per-channel mean and variance. In training they are computed from the
# current batch (over the batch and the spatial positions) in the forward pass; the layer also keeps
# exponentially weighted running averages (`running_mean`, `running_var`, and a counter
# `num_batches_tracked`, which is used only with `momentum=None`, a cumulative average) as **buffers**:
# saved in the `state_dict` and moved with `.to()`, but not parameters — no gradient, never touched by the
# optimiser. Updating them needs only forward passes in training mode
# (`running = (1 - momentum) * running + momentum * batch_stat`, where `momentum`, 0.1 by default, is the
# weight of the new batch; `running_var` is fed the unbiased batch variance, dividing by n - 1, while the
# output uses the biased one; both per PyTorch's documentation of `nn.BatchNorm2d`); in eval mode they are
# used and not changed.
#
# **Mark scheme**
# - 1 point: gamma and beta are learned parameters updated by gradient descent (per channel).
# - 1 point: mean and variance are measured from each batch in the forward pass; the running averages
#   are buffers, updated without gradients in training mode and used (not updated) in eval mode.

# %% [markdown]
# ## Part E (2 points) — why running averages?
#
# For inference, PyTorch's BatchNorm (and the lesson's) uses an exponentially weighted moving average of the
# statistics it saw in training rather than one batch's mean and variance (or the statistics of the batch
# being predicted). Why? Your measurements in Part B and in the experiment may help.

# %% [answer id=q1_why_running_averages points=2]
# - **A prediction must not depend on its batch.** At inference the batch is whatever arrives: one
#   example (whose variance over the batch is zero, or that depends only on itself), or a mix of
#   unrelated examples. With batch statistics the same image would get a different output depending
#   on which other images share its batch (Part B measured it). Fixed statistics make the layer a fixed
#   per-channel affine map, so each prediction is deterministic (Ioffe & Szegedy, 2015, §3.1: "we want the
#   output to depend only on the input, deterministically").
# - **One batch is a noisy estimate.** The mean and variance of a single batch of 512 (the lesson's batch
#   size), and worse of a small batch, fluctuate; averaging many batches estimates the population
#   statistics much better (the grey dots against the running curves in the experiment).
# - **The weights change during training.** Statistics of early batches were measured with older
#   weights and are stale. An exponential moving average weights recent batches most and forgets old
#   ones, and it costs one vector per statistic and no extra pass. The paper itself averages the
#   statistics of many training batches once training is done (§3.1, Algorithm 2, with the unbiased
#   variance $\frac{m}{m-1}\,\mathrm{E}[\sigma_\mathcal{B}^2]$) and notes that moving averages let one
#   track the model's accuracy while it trains.
#
# **Mark scheme**
# - 1 point: at inference the output must not depend on the other examples in the batch (batch of one
#   example, deterministic predictions).
# - 1 point: one batch is a noisy estimate and the weights change during training, so an exponentially
#   weighted average (recent batches count more, constant memory) is used.
