# %% [markdown]
# # Q7 — InstanceNorm
#
# Instance normalization (Ulyanov, Vedaldi & Lempitsky, 2016) goes one step further than LayerNorm:
# every channel of every example is normalised on its own, with the mean and variance of that one
# feature map over its `H x W` positions. It was invented for style transfer, where exactly this is
# wanted. The lesson tried it in the MNIST classifier and printed a NaN loss and 10 % accuracy.
#
# In **Part A** you write the layer. In **Part B** you see what it does to the lesson's CNN and
# explain, in **Part C**, why a classifier normalised this way cannot classify — and where the
# lesson's NaN came from.

# %% [setup]
%matplotlib inline
from functools import partial
from types import SimpleNamespace
from typing import Callable

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import (AvgStatsCallback, BatchTransformXCallback, DataBunch, Dataset, DeviceCallback, GeneralRelu,
                        Hooks, ProgressCallback, Recorder, accuracy, get_cnn_model, get_data, get_dls,
                        get_learn_run, init_cnn, mnist_view, normalize_to, set_seed)

set_seed(42)

# %% [markdown]
# ## Part A (9 points) — the layer
#
# Write `InstanceNorm(nf, eps=1e-5)` for activations of shape `(N, C, H, W)` with `C == nf`. Its
# **contract** is in the docstring below; in numbers it is `F.instance_norm(x, weight=mults.flatten(),
# bias=adds.flatten(), eps=eps)`: one mean and one **biased** variance per example and per channel,
# over the `H*W` positions, `eps` inside the square root, then a learned scale and shift **per channel**.
#
# Like LayerNorm it keeps no running statistics: training and eval mode compute the same thing.
#
# **A 1x1 map.** When `H = W = 1` each group holds a single value `v`: its mean is `v`, its biased
# variance is 0, so the normalised value is `(v - v) / sqrt(0 + eps) = 0` exactly, and the output is
# `adds`, whatever the input. That is the contract: no error, no NaN. (The *unbiased* variance of one
# value divides 0 by 0: NaN — the lesson's NaN.)
#
# Write the math yourself with tensor operations: calling torch's own instance norm gets no points.

# %% [solution id=instancenorm]
class InstanceNorm(nn.Module):
    """Instance normalization of (N, C, H, W) activations: each example's each channel on its own.

    InstanceNorm(nf, eps=1e-5), where nf is the number of channels C. Store nf and eps as self.nf, self.eps.

    Learned parameters (nn.Parameter), one scale and one shift per channel:
        self.mults  shape (nf, 1, 1), starts as ones    (gamma)
        self.adds   shape (nf, 1, 1), starts as zeros   (beta)
    No buffers: the layer keeps nothing between batches.

    forward(x), x of shape (N, nf, H, W): returns a tensor of the same shape and dtype as x.
    For every example n and channel c on its own, over its H*W values:
        mean = the mean of x[n, c]
        var  = the BIASED variance of x[n, c]   (divide by H*W, not H*W - 1)
        out[n, c] = (x[n, c] - mean) / sqrt(var + eps) * mults[c] + adds[c]
    The same in training and eval mode. On a 1x1 map (H = W = 1) the normalised value is exactly 0,
    so the output is adds broadcast to (N, nf, 1, 1): finite, never NaN, no error.
    Raises ValueError if x is not 4-D or if x.shape[1] != nf.
    """

    def __init__(self, nf: int, eps: float = 1e-5) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.nf, self.eps = nf, eps
        self.mults = nn.Parameter(torch.ones(nf, 1, 1))
        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        """Normalise every (example, channel) map of x over (H, W), then scale and shift per channel."""
        ### BEGIN SOLUTION
        if x.dim() != 4 or x.shape[1] != self.nf:
            raise ValueError(f"InstanceNorm({self.nf}) expects an input of shape (N, {self.nf}, H, W), "
                             f"got {tuple(x.shape)}")
        # keepdim=True gives shape (N, C, 1, 1), which broadcasts against the examples and channels.
        mean = x.mean(dim=(2, 3), keepdim=True)
        var = x.var(dim=(2, 3), keepdim=True, correction=0)  # biased: 0 (not NaN) for a single value
        return (x - mean) / torch.sqrt(var + self.eps) * self.mults + self.adds
        ### END SOLUTION

# %% [demo]
# Check that it does: your layer against torch's instance_norm in float64, and on a 1x1 map.
x = torch.randn(4, 3, 5, 5, dtype=torch.float64) * 3 + 2
inorm = InstanceNorm(3).double()
with torch.no_grad():
    inorm.mults.copy_(torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1))
    inorm.adds.copy_(torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1))
    expected = F.instance_norm(x, weight=inorm.mults.flatten(), bias=inorm.adds.flatten(), eps=1e-5)
    print(f"largest difference from F.instance_norm: {(inorm(x) - expected).abs().max().item():.1e}")
    print("on a 1x1 map, example 0:", inorm(torch.randn(2, 3, 1, 1, dtype=torch.float64))[0].flatten().tolist(),
          "(= adds)")

# %% [test id=test_parameters points=1]
"""mults and adds are nn.Parameters of shape (nf, 1, 1) starting as ones and zeros, each layer's own; no buffers."""
from course_lib.checks import check_instancenorm, student_checks

with student_checks():
    inorm = InstanceNorm(5)
    params = dict(inorm.named_parameters())
    assert set(params) == {"mults", "adds"}, f"the learned parameters must be exactly mults and adds, got {sorted(params)}"
    for name in ("mults", "adds"):
        assert tuple(getattr(inorm, name).shape) == (5, 1, 1), (
            f"InstanceNorm(5).{name} should have shape (5, 1, 1), one value per channel, got {tuple(getattr(inorm, name).shape)}")
check_instancenorm(InstanceNorm, "arguments")
### BEGIN HIDDEN TESTS
from course_recorder import q7

q7.parameters(InstanceNorm)
### END HIDDEN TESTS

# %% [test id=test_output points=3]
"""Each (example, channel) map normalised over (H, W) with its mean and biased variance, eps inside the sqrt, then scaled and shifted per channel."""
from course_lib.checks import check_instancenorm

check_instancenorm(InstanceNorm, "output")
### BEGIN HIDDEN TESTS
from course_recorder import q7

q7.output(InstanceNorm)
### END HIDDEN TESTS

# %% [test id=test_independence points=1]
"""Every (example, channel) map is normalised on its own: changing one map changes no other output."""
from course_lib.checks import check_instancenorm

check_instancenorm(InstanceNorm, "independence")
### BEGIN HIDDEN TESTS
from course_recorder import q7

q7.independence_probe(InstanceNorm)
### END HIDDEN TESTS

# %% [test id=test_train_equals_eval points=1]
"""Training and eval mode give the same output, with no running statistics kept."""
from course_lib.checks import check_instancenorm

check_instancenorm(InstanceNorm, "modes")
### BEGIN HIDDEN TESTS
from course_recorder import q7

q7.train_equals_eval(InstanceNorm)
### END HIDDEN TESTS

# %% [test id=test_one_by_one_map points=1]
"""On a 1x1 map the output is exactly adds, for every example: finite, no NaN, no error."""
from course_lib.checks import check_instancenorm

check_instancenorm(InstanceNorm, "one_by_one")
### BEGIN HIDDEN TESTS
from course_recorder import q7

q7.one_by_one_map(InstanceNorm)
### END HIDDEN TESTS

# %% [test id=test_gradients points=1]
"""Gradients with respect to the input, mults and adds are right (against autograd on the contract, float64), in both modes."""
from course_lib.checks import check_instancenorm

check_instancenorm(InstanceNorm, "gradients")
### BEGIN HIDDEN TESTS
from course_recorder import q7

q7.gradients_probe(InstanceNorm)
### END HIDDEN TESTS

# %% [test id=test_clear_errors points=1]
"""ValueError for an input that is not 4-D or whose channel count is not nf."""
from course_lib.checks import check_instancenorm

check_instancenorm(InstanceNorm, "errors")
### BEGIN HIDDEN TESTS
from course_recorder import q7

q7.clear_errors(InstanceNorm)
### END HIDDEN TESTS

# %% [markdown]
# ## Part B — InstanceNorm in the lesson's CNN (an experiment, not graded)
#
# The block below is the lesson's `conv_layer` with your `InstanceNorm` after the activation (the
# lesson's `conv_in`). Every block has stride 2, so the maps shrink 28 → 14 → 7 → 4 → 2 → **1**: the
# last block normalises 1x1 maps.

# %% [setup]
NFS = [8, 16, 32, 64, 64]
ACTIVATION = dict(leak=0.1, sub=0.4, maxv=6.)


def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 2, bn: bool = True,
               norm: Callable[[int], nn.Module] | None = None, **kwargs) -> nn.Sequential:
    """Conv2d -> GeneralRelu(**kwargs) -> norm(nf) when bn; norm defaults to this notebook's InstanceNorm."""
    layers = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn), GeneralRelu(**kwargs)]
    if bn:
        layers.append((norm or InstanceNorm)(nf))
    return nn.Sequential(*layers)


def lesson_cnn(norm: Callable[[int], nn.Module] | None = None, bn: bool = True) -> nn.Sequential:
    """The lesson's CNN (10 classes) built from conv_layer blocks, Kaiming-initialised."""
    return init_cnn(get_cnn_model(SimpleNamespace(c=10), NFS, partial(conv_layer, bn=bn, norm=norm), **ACTIVATION))

# %% [markdown]
# ### The experiment
#
# We train the CNN for one epoch on a fixed subset of 8,192 training images (16 batches of 512; the
# subset keeps this cell to a few seconds — more data changes nothing, as you will see), once with
# your `InstanceNorm` at learning rate 0.8 (the lesson's rate for LayerNorm; its InstanceNorm run used
# 0.1), and once without normalization at 0.4 for comparison. A hook records the last block's output on the validation images.

# %% [experiment]
x_train, y_train, x_valid, y_valid = get_data()
x_train, x_valid = normalize_to(x_train, x_valid)
SUBSET = 8192
train_dl, valid_dl = get_dls(Dataset(x_train[:SUBSET], y_train[:SUBSET]), Dataset(x_valid, y_valid), bs=512)
subset_data = DataBunch(train_dl, valid_dl, c=10)
cbfs = [partial(AvgStatsCallback, accuracy), DeviceCallback, partial(BatchTransformXCallback, mnist_view),
        Recorder, ProgressCallback]


def keep_output(hook, module: nn.Module, inputs: tuple, output: Tensor) -> None:
    """Hook function: remember the block's latest output (on the CPU)."""
    hook.output = output.detach().cpu()


def train_one_epoch(lr: float, bn: bool) -> tuple:
    """One epoch on the subset; returns the runner, the learner and the last block's output on the last valid batch."""
    set_seed(0)
    learn, run = get_learn_run(NFS, subset_data, lr, partial(conv_layer, bn=bn), cbs=cbfs, **ACTIVATION)
    with Hooks(learn.model[4:5], keep_output) as hooks:  # learn.model[4] is the last conv block
        run.fit(1, learn)
        last_block = hooks[0].output
    return run, learn, last_block


run_in, learn_in, last_in = train_one_epoch(lr=0.8, bn=True)
run_plain, learn_plain, last_plain = train_one_epoch(lr=0.4, bn=False)

# %% [experiment]
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(run_in.recorder.losses, label="InstanceNorm, lr 0.8")
ax.plot(run_plain.recorder.losses, label="no normalization, lr 0.4")
ax.set(xlabel="training batch", ylabel="training loss", title="One epoch on 8,192 images")
ax.legend()
plt.show()
for name, runner in (("InstanceNorm", run_in), ("no normalization", run_plain)):
    history = runner.avg_stats.history[-1]
    print(f"{name:17s} valid loss {history['valid_loss']:.3f}  valid accuracy {history['valid_accuracy']:.3f}")
most_common = torch.bincount(y_valid).max().item() / len(y_valid)
print(f"always predicting the most common digit: accuracy {most_common:.3f}")
print(f"last block's output, spread across the {len(last_in)} images of a validation batch:",
      f"InstanceNorm {last_in.std(0).max().item():.2g}, no normalization {last_plain.std(0).max().item():.2g}")
adds = learn_in.model[4][2].adds.detach().cpu()
print(f"InstanceNorm's last block output equals its adds for every image: {torch.equal(last_in, adds.expand_as(last_in))}")


def first_conv_gradient(model: nn.Module) -> float:
    """The largest gradient of the loss on one training batch with respect to the first conv's weights."""
    device = next(model.parameters()).device
    xb, yb = next(iter(subset_data.train_dl))
    model.zero_grad()
    F.cross_entropy(model(mnist_view(xb).to(device)), yb.to(device)).backward()
    return model[0][0].weight.grad.abs().max().item()


print(f"gradient reaching the first conv: InstanceNorm {first_conv_gradient(learn_in.model):.2g}, "
      f"no normalization {first_conv_gradient(learn_plain.model):.2g}")

# %% [markdown]
# **What to look for.** Without normalization the loss falls and the subset is enough to learn a good
# part of MNIST. With InstanceNorm the loss stalls near `ln(10) = 2.30` and the accuracy stays at the
# level of always predicting the same digit. The printout shows why: the last block's output is the
# same for every image — exactly its `adds` — so the logits are the same for every image, and the
# gradient reaching the convolutions is 0: nothing but the final linear layer's bias and the last
# `adds` can learn. That is not bad luck; it is the layer's contract on a 1x1 map.

# %% [markdown]
# ## Part C (3 points) — why InstanceNorm cannot classify
#
# Explain in a few sentences: (1) what information InstanceNorm removes from each image, and why a
# classifier needs it while style transfer wants it removed; (2) what it does to the lesson's last block
# (a 1x1 map), and so to the whole model's output, with our biased variance; (3) where the lesson's NaN
# loss came from. Cite the paper.

# %% [answer id=answer_why_not_classify points=3]
# **1. What it removes.** InstanceNorm normalises every channel of every image with that map's own mean
# and variance over `H x W`. After it, each feature map of each image has mean 0 and variance 1 (before the
# shared `mults`/`adds`): the image's per-channel *brightness* (how strongly the feature is present on
# average) and *contrast* (how much it varies) are gone, and only the spatial pattern within the map is left.
# For a classifier those amounts are the evidence: "this channel (say, a detector of a closed loop) fires
# strongly in this image" is what distinguishes a 0 from a 1, and InstanceNorm erases it in every block.
# Ulyanov, Vedaldi & Lempitsky (2016) designed it for style transfer precisely because there the
# contrast and brightness of the content image *should* not influence the stylised output: removing them
# per image is the point. BatchNorm and LayerNorm keep these differences between images, or between
# channels of one image.
#
# **2. The 1x1 map.** The lesson's fifth block has a 1x1 map: each (image, channel) group holds one value
# `v`. Its mean is `v` and its biased variance 0, so the normalised value is `(v - v) / sqrt(eps) = 0`
# and the block outputs `adds` for every image. The pooled features, hence the logits, are the same
# constant for every input: the model can only learn the class frequencies (accuracy of the most common
# digit, about 10-11 %), and no gradient flows back to the convolutions.
#
# **3. The lesson's NaN.** The lesson used the *unbiased* variance (`x.var` divides by `n - 1`). For one
# value that is `0 / 0 = NaN`, so the last block output NaN on the first batch and the loss was NaN from
# the start: a bug of the variance, hitting a model that could not have worked anyway.
#
# **Mark scheme** (3 points)
# - 1 point: it removes each image's per-channel mean and scale (brightness/contrast of each feature
#   map), the information the classifier needs; this is what style transfer wants removed (Ulyanov et al., 2016).
# - 1 point: on the 1x1 final map the normalised value is 0, so the output is the constant `adds`:
#   every image gets the same logits (accuracy of the most common class; no gradient to the convolutions).
# - 1 point: the NaN came from the unbiased variance of a single value (0/0), not from the learning rate.
