# %% [markdown]
# # Q7 — InstanceNorm
#
# Instance normalization (Ulyanov, Vedaldi & Lempitsky, 2016) goes one step further than LayerNorm:
# every channel of every example is normalised on its own, with the mean and variance of that one
# feature map over its `H x W` positions. It was invented for style transfer, where removing each image's
# contrast is exactly what is wanted. The lesson put it into its MNIST classifier and printed a NaN loss and an
# accuracy of 0.0986 (training) and 0.0991 (validation) for three epochs.
#
# In **Part A** you write the layer. In **Part B** you put it into the lesson's CNN, read what your own run
# shows, look closely at what average pooling does after it, and train a variant that places it differently.
# In **Part C** you explain why the lesson's model could not learn at all, where InstanceNorm does work in a
# classifier, and where the lesson's NaN came from.

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
                        get_runner, init_cnn, mnist_view, normalize_to, set_seed)

set_seed(42)

# %% [markdown]
# ## What InstanceNorm averages over
#
# Write the conv activations as $x_{nchw}$, of shape `(N, C, H, W)`. InstanceNorm takes one mean and one
# variance per example $n$ **and** channel $c$, over that feature map's $H \times W$ positions only
# (the instance-normalization equation of Ulyanov et al., 2016; their $t$ is our $n$ and their $i$ our $c$):
#
# $$\mu_{nc} = \frac{1}{HW}\sum_{h=1}^{H}\sum_{w=1}^{W} x_{nchw}, \qquad
# \sigma_{nc}^2 = \frac{1}{HW}\sum_{h,w}\left(x_{nchw}-\mu_{nc}\right)^2, \qquad
# y_{nchw} = \gamma_c\,\frac{x_{nchw}-\mu_{nc}}{\sqrt{\sigma_{nc}^2+\epsilon}} + \beta_c .$$
#
# The paper's equation stops at the normalised value; like BatchNorm (Ioffe & Szegedy, 2015, §3) and
# `nn.InstanceNorm2d(affine=True)`, ours then applies a learned scale $\gamma_c$ (`mults`) and shift $\beta_c$
# (`adds`) per channel. Compare the sets: BatchNorm's mean $\mu_c$ is over $(n, h, w)$, one per channel;
# LayerNorm's $\mu_n$ over $(c, h, w)$, one per example; InstanceNorm's $\mu_{nc}$ over $(h, w)$ alone, so a batch
# of $N$ images with $C$ channels has $N \cdot C$ of them. The figure shades the values *one* mean and variance
# are computed from (Wu & He, 2018, Figure 2).

# %% [experiment]
from course_lib import draw_norm_axes

draw_norm_axes("batch", "layer", "instance")
plt.show()

# %% [markdown]
# ## Part A (9 points) — the layer
#
# Write `InstanceNorm(nf, eps=1e-5)` for activations of shape `(N, C, H, W)` with `C == nf`. Its
# **contract** is in the docstring below: the formula above, with one mean and one **biased** variance
# (divide by $HW$) per example and per channel, `eps` inside the square root, then a learned scale and shift
# **per channel**. On maps of more than one position that is, in numbers,
# `F.instance_norm(x, weight=mults.flatten(), bias=adds.flatten(), eps=eps)`.
#
# Like LayerNorm it keeps no running statistics: training and eval mode compute the same thing.
#
# **A 1x1 map.** When `H = W = 1` each group holds a single value `v`: its mean is `v`, its biased
# variance is 0, so the normalised value is `(v - v) / sqrt(0 + eps) = 0` exactly, and the output is
# `adds`, whatever the input. That is the contract: no error, no NaN. PyTorch's own layer refuses instead:
# `nn.InstanceNorm2d` raises `ValueError: Expected more than 1 spatial element when training, got input size
# torch.Size([N, C, 1, 1])` on a 1x1 map in training mode (and in eval mode too, unless it was built with
# `track_running_stats=True` and so normalises with running averages), and so does `F.instance_norm` with its
# default `use_input_stats=True` (PyTorch 2.14; the demo below shows it). The course's contract deliberately
# returns `adds`, what the formula gives, so that you can run the lesson's model and see for yourself what a
# normalised single value leaves. (The *unbiased* variance of one value divides 0 by 0: NaN.)
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
    one_by_one = torch.randn(2, 3, 1, 1, dtype=torch.float64)
    print("your layer on a 1x1 map, example 0:", inorm(one_by_one)[0].flatten().tolist(), "(= adds)")
    for name, torch_layer in (("nn.InstanceNorm2d(3, affine=True)", nn.InstanceNorm2d(3, affine=True).double()),
                              ("F.instance_norm", F.instance_norm)):
        try:
            torch_layer(one_by_one)
            print(f"{name} on a 1x1 map: no error")
        except ValueError as error:
            print(f"{name} on a 1x1 map: ValueError: {error}")

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
# ## Part B (2 points) — InstanceNorm in the lesson's CNN
#
# The block below is the course's `conv_layer` (Q4) with your `InstanceNorm` **after** the activation, the
# order of the lesson's `conv_in`. Where this run differs from the lesson's, by choice: the lesson's conv kept
# its bias (`bias=True`), its activation was a plain ReLU (it passed no `GeneralRelu` arguments), its layer used
# `eps=1` and the unbiased variance, and it trained at learning rate 0.1; here the conv has no bias, the
# activation is the course's `GeneralRelu(leak=0.1, sub=0.4, maxv=6.)` and the layer is yours from Part A.
#
# Every block has stride 2, so the maps shrink 28 → 14 → 7 → 4 → 2 → 1. After the five blocks come, as in the
# lesson, global average pooling (`nn.AdaptiveAvgPool2d(1)`: the mean of each channel's map), a flatten and one
# linear layer to the 10 classes (`get_cnn_layers` in `course_lib/model.py`).

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
# We train the CNN for one epoch on a fixed subset of 8,192 training images (16 batches of 512; the subset
# keeps this cell to a few seconds), once with your `InstanceNorm` in every block at learning rate 0.8 (the
# lesson's rate for LayerNorm; its InstanceNorm run used 0.1), and once without normalization at 0.4 for
# comparison. A hook records the **pooled features** (the average pooling's output, what the linear layer
# sees) on a batch of validation images, and we measure the gradient of the loss that reaches the first conv.
#
# **Before you run it, predict** (write it down; this is not graded): how will the training loss of the model
# with InstanceNorm in every block move over the batches, next to the model without normalization? What
# validation accuracy do you expect from each?

# %% [experiment]
x_train, y_train, x_valid, y_valid = get_data()
x_train, x_valid = normalize_to(x_train, x_valid)
SUBSET = 8192
train_dl, valid_dl = get_dls(Dataset(x_train[:SUBSET], y_train[:SUBSET]), Dataset(x_valid, y_valid), bs=512)
subset_data = DataBunch(train_dl, valid_dl, c=10)
cbfs = [partial(AvgStatsCallback, accuracy), DeviceCallback, partial(BatchTransformXCallback, mnist_view),
        Recorder, ProgressCallback]
POOL = 5  # model[0:5] are the conv blocks, model[5] the average pooling, then flatten and the linear layer


def keep_output(hook, module: nn.Module, inputs: tuple, output: Tensor) -> None:
    """Hook function: remember the module's latest output (on the CPU)."""
    hook.output = output.detach().cpu()


def train_one_epoch(build: Callable[[], nn.Module], lr: float) -> tuple:
    """One epoch on the subset of a model from build(); returns the runner, the learner and the pooled
    features of the last validation batch."""
    set_seed(0)
    learn, run = get_runner(build(), subset_data, lr=lr, cbs=cbfs)
    with Hooks(learn.model[POOL:POOL + 1], keep_output) as hooks:
        run.fit(1, learn)
        pooled = hooks[0].output.flatten(1)  # (images, 64)
    return run, learn, pooled


def first_conv_gradient(model: nn.Module) -> float:
    """The largest gradient of the loss on one training batch with respect to the first conv's weights."""
    device = next(model.parameters()).device
    xb, yb = next(iter(subset_data.train_dl))
    model.zero_grad()
    F.cross_entropy(model(mnist_view(xb).to(device)), yb.to(device)).backward()
    return model[0][0].weight.grad.abs().max().item()


def report(name: str, runner, learner, pooled: Tensor) -> None:
    """Print the validation loss and accuracy, the spread of the pooled features and the first conv's gradient."""
    history = runner.avg_stats.history[-1]
    print(f"{name}: valid loss {history['valid_loss']:.3f}, valid accuracy {history['valid_accuracy']:.3f}\n"
          f"    pooled features' largest spread across {len(pooled)} images {pooled.std(0).max().item():.2g}, "
          f"gradient reaching the first conv {first_conv_gradient(learner.model):.2g}")


run_in, learn_in, pooled_in = train_one_epoch(partial(lesson_cnn, bn=True), lr=0.8)
run_plain, learn_plain, pooled_plain = train_one_epoch(partial(lesson_cnn, bn=False), lr=0.4)

# %% [experiment]
fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(run_in.recorder.losses, label="InstanceNorm in every block, lr 0.8")
ax.plot(run_plain.recorder.losses, label="no normalization, lr 0.4")
ax.set(xlabel="training batch", ylabel="training loss", title=f"One epoch on {len(train_dl.dataset):,} images")
ax.legend()
plt.show()
report("InstanceNorm", run_in, learn_in, pooled_in)
report("no normalization", run_plain, learn_plain, pooled_plain)
most_common = torch.bincount(y_valid).max().item() / len(y_valid)
print(f"always predicting the most common digit: accuracy {most_common:.3f}")
last_adds = learn_in.model[4][2].adds.detach().cpu().flatten()
print(f"InstanceNorm model: largest difference between the pooled features and the last block's adds, over all "
      f"images: {(pooled_in - last_adds).abs().max().item():.2g}")

# %% [markdown]
# ### What your run shows (2 points)
#
# Answer from **your own** plot and printout, with the numbers you got: (1) how do the two loss curves move,
# and how do the two validation accuracies compare with each other and with always predicting the most common
# digit? (2) What do the spread of the pooled features across images, their difference from the last block's
# `adds`, and the gradient that reaches the first conv tell you about the InstanceNorm model: which of its
# parameters can still learn anything useful?

# %% [answer id=answer_in_experiment points=2]
# **1. The curves.** Without normalization the training loss falls from about 2.35 to about 1.1 within the 16
# batches, not smoothly (it jumps back to about 2.7 at batch 10 before falling again), and the validation accuracy
# reaches about 0.72. With InstanceNorm in every block the loss starts near `ln 10 = 2.30` (a uniform guess over
# 10 digits) and stays there, flat; its validation accuracy, 0.106, is what a model that predicts the same digit
# for every image gets, next to the printed baseline of 0.109 (always the validation set's most common digit).
# (0.106 is exactly the share of 1s among the validation images: the model predicts a 1, the most common digit of
# the training subset, for every image.)
#
# **2. The printout.** The pooled features of the InstanceNorm model have spread 0 across the images and differ
# from the last block's `adds` by 0: the linear layer sees the same vector, `adds`, for every image, so every
# image gets the same logits. The gradient reaching the first conv is 0 (and so for every conv: the output does
# not depend on them). Only the linear layer and the last InstanceNorm's `adds` (its `mults` multiply a 0) get a
# gradient, and together they can only choose one constant output: the class frequencies. The model without
# normalization has pooled features that differ between images and a non-zero gradient at the first conv.
#
# **Mark scheme** (2 points; the seeds are fixed, but accept the student's own printed values, which differ a
# little between machines and in grading mode, where the subset is smaller)
# - 1 point: reads the plot and the accuracies: the InstanceNorm loss stays flat near 2.30 while the other falls
#   (bumpily: a jump along the way is an honest reading, not a mistake), and its accuracy is that of predicting
#   one digit for every image (about 0.09-0.12, close to the printed baseline), far below the other model's.
# - 1 point: reads the printout: the pooled features are identical for every image (spread 0, equal to `adds`),
#   so the output does not depend on the input, and no gradient reaches the convolutions; only the last layer(s)
#   can change, and only the constant output. Stating "the last map is 1x1" alone, without what the printout
#   shows, earns ½.

# %% [markdown]
# ### A closer look: average pooling after InstanceNorm
#
# In the lesson's model the last block's map is 1x1. Would a model whose last map is bigger fare better?
#
# **Before you run the next cell, predict** (not graded): your `InstanceNorm` normalises a batch of random 4x4
# maps, and average pooling then takes each map's mean, as the lesson's model does after its last block. What
# will the pooled features be, and will they differ from image to image? And for 7x7 maps?

# %% [demo]
# Average pooling after your InstanceNorm, on maps bigger than 1x1 (float64, so rounding stays tiny).
inorm = InstanceNorm(3).double()
with torch.no_grad():
    inorm.mults.copy_(torch.tensor([0.5, 1.0, 2.0]).view(3, 1, 1))
    inorm.adds.copy_(torch.tensor([-1.0, 0.0, 1.0]).view(3, 1, 1))
    for size in (4, 7):
        x = torch.randn(8, 3, size, size, dtype=torch.float64) * 3 + 2
        normalised = inorm(x)
        pooled = F.adaptive_avg_pool2d(normalised, 1).flatten(1)  # (8 images, 3 channels)
        print(f"{size}x{size} maps, 8 images: InstanceNorm's output varies across images by up to "
              f"{normalised.std(0).max().item():.2f}; pooled features of image 0: "
              f"{[round(v, 6) + 0.0 for v in pooled[0].tolist()]}; largest difference from adds over all images: "
              f"{(pooled - inorm.adds.flatten()).abs().max().item():.1e}")

# %% [markdown]
# ### A variant: InstanceNorm early, before the activation
#
# Here InstanceNorm goes only into the first three blocks (maps of 14x14, 7x7 and 4x4), **before** the
# activation: conv → InstanceNorm → GeneralRelu. The last two blocks (2x2 and 1x1 maps) have
# no norm. In the InstanceNorm blocks the conv has no bias: InstanceNorm right after the conv subtracts each map's
# mean, so a per-channel bias would be cancelled exactly (as for BatchNorm right after the conv, Q4); the other
# blocks keep theirs. It is trained exactly as before, at learning rate 0.4 like the model without normalization.
#
# **Before you run it, predict** (not graded): will this model learn? Where will its loss curve lie next to
# the other two?

# %% [experiment]
def conv_in_before(ni: int, nf: int, ks: int = 3, stride: int = 2, norm: bool = True) -> nn.Sequential:
    """Conv2d -> InstanceNorm -> GeneralRelu when norm, else Conv2d (with its bias) -> GeneralRelu."""
    layers = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not norm)]
    if norm:
        layers.append(InstanceNorm(nf))
    layers.append(GeneralRelu(**ACTIVATION))
    return nn.Sequential(*layers)


def early_in_cnn(n_normed: int = 3) -> nn.Sequential:
    """The lesson's CNN with InstanceNorm before the activation in the first n_normed blocks only."""
    nfs = [1] + NFS
    blocks = [conv_in_before(nfs[i], nfs[i + 1], 5 if i == 0 else 3, norm=i < n_normed) for i in range(len(NFS))]
    return init_cnn(nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(NFS[-1], 10)))


run_early, learn_early, pooled_early = train_one_epoch(early_in_cnn, lr=0.4)

fig, ax = plt.subplots(figsize=(7, 4))
ax.plot(run_in.recorder.losses, label="InstanceNorm after the activation, every block, lr 0.8")
ax.plot(run_plain.recorder.losses, label="no normalization, lr 0.4")
ax.plot(run_early.recorder.losses, label="InstanceNorm before the activation, first 3 blocks, lr 0.4")
ax.set(xlabel="training batch", ylabel="training loss", title=f"One epoch on {len(train_dl.dataset):,} images")
ax.legend(fontsize=8, loc="lower left")
plt.show()
for name, (runner, learner, pooled) in (("InstanceNorm, all", (run_in, learn_in, pooled_in)),
                                        ("no normalization", (run_plain, learn_plain, pooled_plain)),
                                        ("InstanceNorm, early", (run_early, learn_early, pooled_early))):
    report(name, runner, learner, pooled)

# %% [markdown]
# ## Part C (4 points) — why the lesson's model learned nothing, and where InstanceNorm does classify
#
# Explain in a few sentences, using what you measured in Part B:
#
# 1. What information does InstanceNorm remove from each image, why does style transfer want it removed, and
#    what does that cost a classifier? Do InstanceNorm networks classify at all? Cite the papers.
# 2. Why can the lesson's model (your first run) learn nothing at all? Is the 1x1 final map the cause?
# 3. The lesson's layer computed `v = x.var((2,3), keepdim=True)` and `(x-m) / ((v+self.eps).sqrt())` with
#    `eps=1e-0`, and printed `train: [nan, tensor(0.0986, device='cuda:0')]` and
#    `valid: [nan, tensor(0.0991, device='cuda:0')]` (loss, accuracy) in all three epochs, on 50,000 training and
#    10,000 validation images. Where did the NaN come from, and what does an accuracy of 0.0986 mean here?
# 4. Why does the variant learn?

# %% [answer id=answer_why_not_classify points=4]
# **1. What it removes.** InstanceNorm normalises every channel of every image with that map's own mean and
# variance over `H x W`. After it each feature map of each image has mean 0 and variance 1 (before the shared
# `mults`/`adds`): the image's per-channel *brightness* (how strongly the feature is present on average) and
# *contrast* (how much it varies) are gone; only the spatial pattern within the map is left. Ulyanov, Vedaldi &
# Lempitsky (2016) designed it for style transfer because the stylised image's contrast should not depend on the
# content image's: removing it per image is the point. For a classifier "this feature fires strongly in this
# image" is part of the evidence, so it loses information, and it classifies **worse**, not never: with
# ResNet-50 on ImageNet (32 images per GPU) Wu & He (2018, Table 1) report 28.4 % top-1 validation error with
# InstanceNorm against 23.6 % with BatchNorm (25.3 % LayerNorm, 24.1 % GroupNorm). IBN-Net (Pan et al., 2018) mixes
# InstanceNorm into classifiers on purpose: beside BatchNorm in the shallow layers of a ResNet, BatchNorm alone in
# the deep ones, so that the features depend less on appearance (colour, style) while keeping the content.
#
# **2. Why the lesson's model learns nothing.** Its last block *ends* with InstanceNorm and global average pooling
# follows. The mean over the map of a normalised map is 0, whatever `H` and `W`, so the pooled feature of channel
# `c` is `mults[c] * 0 + adds[c] = adds[c]` for every image: the demonstration gives `adds` to about 1e-16 on 4x4
# and 7x7 maps. The 1x1 map is only one case of this (there the normalised value itself is 0); a bigger final map
# would fail the same way. So the linear layer sees the same vector for every image, the logits are the same, the
# output does not depend on the convolutions and no gradient reaches them: the model can only learn the class
# frequencies, which is the flat loss near `ln 10` and the one-digit accuracy of Part B.
#
# **3. The lesson's NaN.** `x.var` is the *unbiased* variance (it divides by `n - 1`). On the last block's 1x1
# maps `n = 1`: `0 / 0 = NaN`, and `eps = 1` does not help (`NaN + 1` is NaN). (The published outputs may come
# from an earlier version of the code that used `x.std`; that is unbiased by default too, and NaN on one value
# as well.) So the logits were NaN on the first batch, the loss was NaN, the gradients NaN, and after the first
# step every weight. It was not the learning rate, and with the biased variance the model still learns nothing
# (point 2). The accuracy: `argmax` of a row of NaNs is 0 in PyTorch (measured on the CPU; the lesson ran on a
# GPU, and its printed accuracies agree), so every image was
# predicted to be a "0", and 0.0986 and 0.0991 are exactly the shares of zeros in the lesson's training set
# (4,932 of 50,000) and validation set (991 of 10,000).
#
# **4. Why the variant learns.** Its last InstanceNorm is no longer right before the pooling: two blocks without a
# norm follow, so the pooled features are means of activations that differ from image to image, and the gradient
# reaches every conv (the printout shows both non-zero; in my run its loss fell to about 0.84 within the 16 batches
# and its validation accuracy reached about 0.82). The small maps (2x2, 1x1), where a map's own statistics leave
# little or nothing, are not normalised. What the early InstanceNorms remove, the per-image brightness and contrast
# of low-level stroke features, says little about which digit it is, and the spatial pattern they keep is read by
# the next convs: the idea of IBN-Net too (InstanceNorm in the shallow layers, not the deep ones). Putting it
# before the activation is the usual order (conv -> norm -> activation, as BatchNorm in Ioffe & Szegedy, 2015,
# §3.2), but where it sits in the network matters most here: the same three InstanceNorms after the activation also
# learn, and InstanceNorm before the activation in all five blocks learns nothing, because the 1x1 map of the last
# block then gives `GeneralRelu(adds)` for every image (bench/measure_instancenorm_pooling.py).
#
# **Mark scheme** (4 points)
# - 1 point: it removes each image's per-channel mean and scale (brightness/contrast of each feature map), which
#   style transfer wants removed (Ulyanov et al., 2016); a classifier loses evidence and classifies worse, but does
#   classify (Wu & He 2018: 28.4 % against 23.6 % on ImageNet; or IBN-Net). "InstanceNorm cannot classify" as a
#   general claim earns ½.
# - 1 point: InstanceNorm right before global average pooling makes the pooled features equal `adds` for every
#   image whatever the map size (the mean of a normalised map is 0), so the output is constant and no gradient
#   reaches the convolutions. Blaming only the 1x1 map (normalised value 0) earns ½.
# - 1 point: the NaN is the unbiased variance (or std) of a single value, 0/0, which `eps` cannot repair; not the
#   learning rate. The accuracy as the share of zeros (argmax of NaN is 0) is welcome but not required.
# - 1 point: the variant learns because InstanceNorm no longer sits right before the pooling (blocks without it
#   follow, so the pooled features vary between images and gradients reach the convolutions), or because the last,
#   tiny maps are not normalised. "Because it is before the activation" alone earns ½: the same three layers after
#   the activation learn too.
