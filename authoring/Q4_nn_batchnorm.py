# %% [markdown]
# # Q4 — Use PyTorch's `nn.BatchNorm2d`
#
# In Q3 you wrote BatchNorm yourself. PyTorch's `nn.BatchNorm2d` does the same computation in one native
# operation (`torch.batch_norm`): per channel, it normalises with the batch's mean and **biased** variance in
# training (Ioffe & Szegedy 2015, Algorithm 1), keeps running averages of the mean and of the **unbiased**
# variance (the new batch's weight is `momentum=0.1`), and uses those running averages in eval mode. The paper
# uses the population mean and the unbiased variance at inference, averaged over training mini-batches
# (Algorithm 2, §3.1); PyTorch's exponential moving average is its cheaper stand-in.
#
# Here you write the lesson's convolutional block with it (Part A), train the lesson's CNN for 3 epochs and
# read its loss curve (Part B), compare the lesson's placement of the norm with the paper's (Part C), and fold
# a BatchNorm into the convolution before it for inference (Part D).

# %% [setup]
%matplotlib inline
from functools import partial

import matplotlib.pyplot as plt
import torch
from torch import nn

from course_lib import (AvgStatsCallback, BatchTransformXCallback, DeviceCallback, GeneralRelu, ProgressCallback,
                        Recorder, accuracy, get_learn_run, get_mnist_databunch, mnist_view, set_seed)

data = get_mnist_databunch(bs=512)
nfs = [8, 16, 32, 64, 64]
# Statistics with accuracy, CUDA when present (CPU otherwise), and flat vectors reshaped to (1, 28, 28) images.
cbfs = [partial(AvgStatsCallback, accuracy), DeviceCallback, partial(BatchTransformXCallback, mnist_view)]

# %% [markdown]
# ## Part A (4 points) — the block
#
# Write `conv_layer(ni, nf, ks=3, stride=2, bn=True, **kwargs)`. It returns an `nn.Sequential` of
#
# 1. `nn.Conv2d(ni, nf, ks, padding=ks//2, stride=stride, bias=not bn)` — the lesson drops the conv's
#    bias when a norm follows (its comment: "No bias needed if using bn"). Whether that leaves what the block
#    computes unchanged depends on where the norm sits: Part C measures it;
# 2. `GeneralRelu(**kwargs)` — every extra keyword (`leak`, `sub`, `maxv`) goes to the activation;
# 3. `nn.BatchNorm2d(nf, eps=1e-5, momentum=0.1)` **after** the activation, as in the lesson — only when `bn`
#    is true. This order is the lesson's choice: the paper puts BatchNorm right before the nonlinearity
#    (Ioffe & Szegedy 2015, §3.2), and so do ResNets (He et al. 2016, §3.4) and fastai's 2022 course (its
#    `conv` builds conv -> norm -> activation). Part C compares the two orders.
#
# The CNN builder calls `conv_layer(ni, nf, ks, **kwargs)`, so every block has stride 2
# (28 -> 14 -> 7 -> 4 -> 2 -> 1).

# %% [solution id=conv_layer]
def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 2, bn: bool = True, **kwargs) -> nn.Sequential:
    """Conv2d (bias only without a norm) -> GeneralRelu(**kwargs) -> BatchNorm2d(nf) when bn."""
    ### BEGIN SOLUTION
    layers = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn), GeneralRelu(**kwargs)]
    if bn:
        layers.append(nn.BatchNorm2d(nf, eps=1e-5, momentum=0.1))
    return nn.Sequential(*layers)
    ### END SOLUTION

# %% [demo]
# Check that it does: the block, and the map sizes through the lesson's five blocks.
print(conv_layer(1, 8, 5, leak=0.1, sub=0.4, maxv=6.))
x = torch.randn(2, 1, 28, 28)
for ni, nf, ks in [(1, 8, 5), (8, 16, 3), (16, 32, 3), (32, 64, 3), (64, 64, 3)]:
    x = conv_layer(ni, nf, ks)(x)
    print(tuple(x.shape))

# %% [test id=test_conv_layer_structure points=2]
"""conv_layer(bn=True): Conv2d without bias -> GeneralRelu(**kwargs) -> BatchNorm2d(nf), with the right settings."""
torch.manual_seed(0)  # the same visible inputs on every run
from course_lib.checks import student_checks

with student_checks():
    block = conv_layer(3, 8, 5, leak=0.1, sub=0.4, maxv=6.)
    assert isinstance(block, nn.Module), "conv_layer must return an nn.Module (an nn.Sequential)"
    assert any(isinstance(m, nn.BatchNorm2d) for m in block.modules()), "with bn=True the block needs an nn.BatchNorm2d"
    layers = [m for m in block.modules() if not list(m.children())]  # in order, however the block nests them
    kinds = [type(m).__name__ for m in layers]
    assert kinds == ["Conv2d", "GeneralRelu", "BatchNorm2d"], (
        f"the block should be Conv2d -> GeneralRelu -> BatchNorm2d, in that order (the norm after the activation); got {kinds}")
    conv, relu, norm = layers
    assert conv.bias is None, "with bn=True the lesson's conv has no bias: nn.Conv2d(..., bias=not bn)"
    assert (relu.leak, relu.sub, relu.maxv) == (0.1, 0.4, 6.0), (
        f"GeneralRelu should get conv_layer's keyword arguments (leak=0.1, sub=0.4, maxv=6.); got leak={relu.leak}, "
        f"sub={relu.sub}, maxv={relu.maxv}")
    assert norm.momentum == 0.1 and norm.eps == 1e-5, (
        f"BatchNorm2d(nf) with PyTorch's momentum=0.1 (the weight of the NEW batch) and eps=1e-5; got momentum="
        f"{norm.momentum}, eps={norm.eps}")
    flat = tuple(conv_layer(3, 8, 3, stride=1)(torch.randn(2, 3, 12, 12)).shape)
    assert flat == (2, 8, 12, 12), f"conv_layer(3, 8, 3, stride=1) should keep a 12x12 map (pass stride to the conv); got {flat}"
    shape = tuple(block(torch.randn(2, 3, 12, 12)).shape)
    assert shape == (2, 8, 6, 6), (
        f"a (2, 3, 12, 12) input should give (2, 8, 6, 6) (padding ks//2 keeps the size, stride 2 halves it), got {shape}")
    kernel = next(m for m in conv_layer(3, 8).modules() if isinstance(m, nn.Conv2d)).kernel_size
    assert kernel == (3, 3), f"conv_layer(3, 8) should use the default ks=3, got a {kernel} kernel"
    again = conv_layer(3, 8, 5, leak=0.1, sub=0.4, maxv=6.)
    assert not {id(p) for p in block.parameters()} & {id(p) for p in again.parameters()}, (
        "two calls of conv_layer with the same arguments returned blocks that share weights: build new layers every call")
### BEGIN HIDDEN TESTS
from course_recorder import q4

q4.structure(conv_layer)
### END HIDDEN TESTS

# %% [test id=test_conv_layer_without_bn points=1]
"""conv_layer(bn=False): Conv2d with bias -> GeneralRelu(**kwargs), no norm."""
torch.manual_seed(0)  # the same visible inputs on every run
from course_lib.checks import student_checks

with student_checks():
    block = conv_layer(3, 8, 3, bn=False)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in block.modules()), (
        "with bn=False the block must not contain a BatchNorm")
    conv = next(m for m in block.modules() if isinstance(m, nn.Conv2d))
    assert conv.bias is not None, "without a norm after it the conv keeps its bias (bias=True when bn=False)"
    shape = tuple(block(torch.randn(2, 3, 12, 12)).shape)
    assert shape == (2, 8, 6, 6), (
        f"a (2, 3, 12, 12) input should give (2, 8, 6, 6) (padding ks//2 keeps the size, stride 2 halves it), got {shape}")
### BEGIN HIDDEN TESTS
from course_recorder import q4

q4.without_bn(conv_layer)
### END HIDDEN TESTS

# %% [test id=test_conv_layer_trains points=1]
"""The lesson's CNN built from conv_layer trains like the reference block (same weights, same batches)."""
torch.manual_seed(0)  # the same visible inputs on every run
from types import SimpleNamespace

from course_lib import get_cnn_model
from course_lib.checks import student_checks

with student_checks():
    model = get_cnn_model(SimpleNamespace(c=10), nfs, conv_layer, leak=0.1, sub=0.4, maxv=6.)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10), "the CNN should map (3, 1, 28, 28) to (3, 10)"
### BEGIN HIDDEN TESTS
from course_recorder import q4

q4.trains(conv_layer)
### END HIDDEN TESTS

# %% [markdown]
# ## The custom BatchNorm math and `nn.BatchNorm2d` agree
#
# The formula from Q3, written out in a few lines, against PyTorch's layer in training mode. Note the
# two variances: the output uses the biased one (divide by n), the running variance stores the
# unbiased one (divide by n - 1).

# %% [demo]
torch.manual_seed(0)
x = torch.randn(16, 4, 5, 5, dtype=torch.float64) * 3 + 1
bn = nn.BatchNorm2d(4).double()
with torch.no_grad():
    bn.weight.uniform_(0.5, 2.0)
    bn.bias.normal_()
mean = x.mean(dim=(0, 2, 3), keepdim=True)
var = x.var(dim=(0, 2, 3), keepdim=True, correction=0)
ours = (x - mean) / (var + bn.eps).sqrt() * bn.weight[:, None, None] + bn.bias[:, None, None]
theirs = bn(x)  # training mode: uses (and updates) the batch statistics
print("largest difference of the outputs:", (ours - theirs).abs().max().item())
n = x.numel() / x.shape[1]
expected_running_var = 0.9 * 1 + 0.1 * var.flatten() * n / (n - 1)
print("running_var matches the unbiased update:", torch.allclose(bn.running_var, expected_running_var))

# %% [markdown]
# ## Part B (1 point) — train the lesson's CNN for 3 epochs and read its loss curve
#
# The lesson trained this CNN with `nn.BatchNorm2d` at learning rate 1.0 for 3 epochs and reached 98.1 %
# validation accuracy, on a GPU and with a plain ReLU (its `get_learn_run` call passed no GeneralRelu
# arguments). Here every block gets `GeneralRelu(leak=0.1, sub=0.4, maxv=6.)`, the activation of lesson 06.
# Full MNIST takes a few seconds per epoch on a 2-core CPU.
#
# **Predict first** (write it down; no points): at learning rate 1.0, what will the training loss do over the
# first few dozen batches — fall steadily, jump around, or blow up — and will you get near the lesson's 98 %?

# %% [experiment]
set_seed(42)
learn, run = get_learn_run(nfs, data, 1.0, conv_layer, cbs=cbfs + [Recorder, ProgressCallback],
                           leak=0.1, sub=0.4, maxv=6.)
run.fit(3, learn)
print(f"validation accuracy after 3 epochs: {run.avg_stats.history[-1]['valid_accuracy']:.3f}")
run.recorder.plot_loss()
plt.show()

# %% [markdown]
# **Question (1 point).** Read your plot: (1) after about how many batches is the training loss below 0.5, and
# does it ever jump back up? What validation accuracy did you print? (2) In one sentence: why can this network
# train at learning rate 1.0 at all? (Ioffe & Szegedy 2015, §3.3.)

# %% [answer id=q4_loss_curve points=1]
# **(1)** In my run (full MNIST, 98 batches of 512 per epoch) the loss falls from 2.4 to about 0.65 in the
# first 5 batches, bumps up a little (to 0.67) at the sixth and is below 0.5 from about batch 8 on; then it
# keeps falling slowly, with batch-to-batch noise, to about 0.05, and never jumps back up (nothing above 0.28
# after batch 20). The validation accuracy after 3 epochs is 0.979, close to the lesson's 0.981.
#
# **(2)** BatchNorm makes a layer's output independent of the scale of the weights before it:
# $\mathrm{BN}((aW)u) = \mathrm{BN}(Wu)$, and the gradient with respect to larger weights is smaller,
# $\partial \mathrm{BN}((aW)u)/\partial (aW) = \frac{1}{a}\, \partial \mathrm{BN}(Wu)/\partial W$, so a large step
# that grows the weights neither blows up the activations nor the next gradients (Ioffe & Szegedy 2015, §3.3).
# In the lesson's order the norm sits after the activation, but a leaky ReLU is positively homogeneous
# (and `sub` is a constant the norm subtracts), so the same holds up to GeneralRelu's cap.
#
# **Mark scheme** (1 point)
# - 0.5: a reading of the student's own plot and printout: roughly where the loss goes below 0.5, whether it
#   jumps back up (a small early bump is normal; no blow-up) and the accuracy they printed. Accept any reading
#   consistent with a full-data run (below 0.5 within the first 10 or so batches, about 0.98): the autograded
#   copy re-runs on the grading subset (8 batches per epoch), so do not hold its numbers against the answer.
# - 0.5: the reason: the normalisation makes the layers insensitive to the scale of their weights, so a large
#   learning rate does not make activations or gradients explode (§3.3). "Because of BatchNorm" with no
#   mechanism: 0.25.

# %% [markdown]
# ## Part C (2 points) — where the norm goes, and the conv bias
#
# The lesson's block is conv -> GeneralRelu -> BatchNorm. The paper normalises the conv's output *before* the
# nonlinearity, $z = g(\mathrm{BN}(Wu))$ (Ioffe & Szegedy 2015, §3.2); ResNets (He et al. 2016, §3.4) and
# fastai's 2022 course do the same. On a conv's output $x_{nchw}$, BatchNorm normalises each channel $c$ with
# the statistics of the set $\{(n, h, w)\}$ of that channel:
#
# $$\mu_c = \frac{1}{NHW}\sum_{n,h,w} x_{nchw}, \qquad \sigma_c^2 = \frac{1}{NHW}\sum_{n,h,w} (x_{nchw} - \mu_c)^2,
# \qquad y_{nchw} = \gamma_c \, \frac{x_{nchw} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c .$$
#
# LayerNorm (`nn.GroupNorm(1, C)` on a conv's output) uses one $\mu_n$ and one $\sigma_n^2$ per example,
# over the set $\{(c, h, w)\}$ of all its channels.
#
# The two cells below train the same CNN, built from your `conv_layer`'s layers, for one epoch in each order
# (same seed, same learning rate 1.0, batches of 64) on a fixed subset of 4,096 training and 1,024 validation
# images (the grading subset, in every mode, so it costs about a second); then they drop the conv's bias in each
# order on one batch and print how much the block's output changes.
#
# **Predict first** (write it down; no points): (1) which order will reach the lower loss after one epoch, or
# will the two be about the same? (2) In each order, can the conv's bias be dropped without changing what the
# block computes? With LayerNorm instead of BatchNorm?

# %% [experiment]
from course_lib import (GRADING_N_TRAIN, GRADING_N_VALID, GRADING_SEED, DataBunch, Dataset, get_data, get_dls,
                        grading_mode, normalize_to)

x_train, y_train, x_valid, y_valid = get_data()
if not grading_mode():  # the same 4,096 / 1,024 images that get_data picks in grading mode
    g = torch.Generator().manual_seed(GRADING_SEED)
    it = torch.randperm(len(x_train), generator=g)[:GRADING_N_TRAIN].sort().values
    iv = torch.randperm(len(x_valid), generator=g)[:GRADING_N_VALID].sort().values
    x_train, y_train, x_valid, y_valid = x_train[it], y_train[it], x_valid[iv], y_valid[iv]
x_train, x_valid = normalize_to(x_train, x_valid)
small = DataBunch(*get_dls(Dataset(x_train, y_train), Dataset(x_valid, y_valid), 64), c=10)


def ordered(ni, nf, ks=3, stride=2, bn_first=False, **kwargs):
    """Your conv_layer's three layers, put in the order asked for."""
    layer = {type(m).__name__: m for m in conv_layer(ni, nf, ks, stride=stride, **kwargs).modules()}
    conv, act, norm = layer["Conv2d"], layer["GeneralRelu"], layer["BatchNorm2d"]
    return nn.Sequential(conv, norm, act) if bn_first else nn.Sequential(conv, act, norm)


fig, ax = plt.subplots(figsize=(7, 4))
for label, bn_first in (("conv -> BN -> act (paper)", True), ("conv -> act -> BN (lesson)", False)):
    print(label)
    set_seed(42)  # the same initial weights and the same batches for both orders
    learn, run = get_learn_run(nfs, small, 1.0, partial(ordered, bn_first=bn_first), cbs=cbfs + [Recorder],
                               leak=0.1, sub=0.4, maxv=6.)
    run.fit(1, learn)
    ax.plot(run.recorder.losses, label=label, alpha=0.8)
ax.set(xlabel="batch", ylabel="training loss", title="one epoch on 4,096 images: lr 1.0, seed 42")
ax.legend()
plt.show()

# %% [experiment]
# Drop the conv's bias in each order: the lesson's first block (PyTorch's default conv init, whose bias is
# uniform within +-1/sqrt(25)) on 256 of the images above, with training-mode statistics.
torch.manual_seed(0)
xb = x_train[:256].view(-1, 1, 28, 28)
conv = nn.Conv2d(1, 8, 5, stride=2, padding=2)
act = GeneralRelu(leak=0.1, sub=0.4, maxv=6.)
norms = {"BatchNorm2d(8)": nn.BatchNorm2d(8), "LayerNorm (GroupNorm(1, 8))": nn.GroupNorm(1, 8)}
print(f"largest |bias| of the conv: {conv.bias.abs().max().item():.3f}")
print(f"{'largest change of the output':<30}{'conv -> norm -> act':>22}{'conv -> act -> norm':>22}")
with torch.no_grad():
    with_bias = conv(xb)
    without_bias = with_bias - conv.bias.view(1, -1, 1, 1)
    for name, norm in norms.items():
        changes = [(norm(act(with_bias)) - norm(act(without_bias))).abs().max().item(),
                   (act(norm(with_bias)) - act(norm(without_bias))).abs().max().item()]
        print(f"{name:<30}{changes[1]:>22.2g}{changes[0]:>22.2g}")

# %% [markdown]
# **Question (2 points).** (1) Which order trained better in your run, going by your plot and the printed
# validation accuracies? (2) Can the conv's bias be dropped in conv -> BN -> act, and in the lesson's
# conv -> act -> BN? Say why, with the formula above, and what your printout shows. (3) Would your answer change
# with LayerNorm in place of BatchNorm?

# %% [answer id=q4_placement_and_bias points=2]
# **(1) The plot.** The two curves lie on top of each other: same initial weights, same batches, and
# the gap between them is smaller than the batch-to-batch noise. After one epoch the validation accuracy is
# 0.904 for conv -> BN -> act and 0.908 for the lesson's order. Neither order trains clearly better here; one
# epoch on 4,096 images does not separate them.
#
# **(2) conv -> BN -> act: yes.** The bias adds the same $b_c$ to every $x_{nchw}$ of channel $c$, so $\mu_c$
# grows by exactly $b_c$ while $x_{nchw} - \mu_c$ and $\sigma_c^2$ stay the same: the mean subtraction cancels
# the bias and BatchNorm's shift $\beta_c$ takes its role (Ioffe & Szegedy 2015, §3.2: "the bias b can be
# ignored since its effect will be canceled by the subsequent mean subtraction"). My printout: 4.8e-07, float
# rounding. Keeping it there costs a parameter per channel that does nothing: its gradient is zero (in
# `bench/measure_conv_bias.py` it stays below 1e-6 through a whole epoch).
#
# **The lesson's conv -> act -> BN: no.** The bias moves each channel's input to the nonlinearity: it decides
# where the channel crosses GeneralRelu's kink at 0 (and its cap), so it changes the shape of the activation's
# output, not only its mean, and the BatchNorm after the activation can only remove a per-channel mean and
# scale. My printout: the block's output changes by 1.5. Dropping the bias is the lesson's choice, and it costs
# each channel its learned threshold (in the bench, setting the biases the lesson-order CNN learned in one
# epoch to 0 raises its validation loss from 0.2300 to 0.2338).
#
# **(3) LayerNorm: no, in either order.** It subtracts one mean per example over all channels, which a
# per-channel bias raises by the average $\bar b$ only; $b_c - \bar b$ stays, and the variance changes. My
# printout: 0.81 right after the conv, 0.99 in the lesson's order. Only a norm with one mean per channel
# (BatchNorm, InstanceNorm) right after the conv cancels a per-channel bias; GroupNorm with several channels
# per group does not.
#
# **Mark scheme** (2 points, 0.5 each)
# - 0.5: an honest reading of the student's own plot and accuracies: about the same (accept "one order slightly
#   ahead" when their plot or printout shows it); no credit for a clear winner the plot does not show, or for
#   the paper's choice stated as the result.
# - 0.5: conv -> BN -> act: the bias can be dropped, because the per-channel mean subtraction removes any
#   constant added to a channel ($\beta$ takes its role, §3.2); the printout's ~1e-7 is float rounding.
# - 0.5: the lesson's order: dropping it changes the output, because the bias shifts the input of the
#   nonlinearity, which no norm after it can undo; the printout shows a change of order 1.
# - 0.5: LayerNorm cancels it in neither order (one mean over all channels of an example: only the biases'
#   average cancels).

# %% [markdown]
# **A detail of GeneralRelu.** `sub` lowers every activation by the same constant, which a BatchNorm right
# after it subtracts again with the batch mean — but not always exactly: GeneralRelu subtracts *before* it
# clamps (`course_lib/model.py`: `x - sub`, then `clamp_max(maxv)`), so with `sub=0.4, maxv=6.` the leaky
# ReLU's output is capped at 6.4, not 6. Where nothing reaches the cap, BatchNorm in training mode cancels
# `sub` up to float rounding; where activations sit at the cap, `sub` changes the block's output. In eval
# mode the running mean takes up the shift only gradually (it starts at 0 and moves 10 % per batch).
# (`bench/measure_conv_bias.py`: on the lesson's first block at initialisation nothing reaches the cap and
# dropping `sub` changes BatchNorm's output by 9.5e-7; in the lesson-order CNN after one epoch on the grading
# subset, 0.16 % to 2.3 % of each block's activations sit at the cap.)

# %% [markdown]
# ## Part D (4 points) — folding BatchNorm into the convolution
#
# In eval mode a BatchNorm right after a conv is a fixed per-channel affine map: with the running statistics
# $\mu_c$, $\sigma_c^2$ (`running_mean`, `running_var`), its `weight` $\gamma_c$, `bias` $\beta_c$ and `eps`,
#
# $$\mathrm{BN}(z)_c = \gamma_c \frac{z_c - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}} + \beta_c = s_c z_c + (\beta_c - s_c \mu_c),
# \qquad s_c = \frac{\gamma_c}{\sqrt{\sigma_c^2 + \epsilon}} .$$
#
# The conv's output channel $c$ is $z_c = W_c * x + b_c$, so BN after it is one conv with weight $s_c W_c$ and
# bias $s_c (b_c - \mu_c) + \beta_c$: at inference the norm costs nothing (deployment tools do this, e.g.
# `torch.nn.utils.fusion.fuse_conv_bn_eval`). It needs the norm **right after** the conv, as in the paper's
# conv -> BN -> act of Part C: in the lesson's conv -> act -> BN the activation sits between them.
#
# Write `fold_bn(conv, bn)`. The contract:
#
# * it returns a NEW plain `nn.Conv2d` **with a bias** (same shape, stride, padding, groups, dtype and device as
#   `conv`) whose output equals `bn.eval()(conv(x))` — the running statistics, `bn.weight`, `bn.bias` and
#   `bn.eps`, whatever mode `bn` is in; with or without a conv bias (`bn` is affine);
# * it leaves `conv` and `bn` as they were: no in-place edits, `bn`'s mode unchanged, no tensors shared with them;
# * it raises `ValueError` when `bn.num_features != conv.out_channels` (name both numbers), or when `bn` has no
#   running statistics (`track_running_stats=False`).
#
# Do the arithmetic yourself: `fuse_conv_bn_eval` (and the rest of `torch.nn.utils.fusion`) is the checks'
# reference, not allowed in the solution.

# %% [solution id=fold_bn]
import copy


def fold_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new nn.Conv2d, with a bias, computing bn.eval()(conv(x)); conv and bn are left unchanged."""
    ### BEGIN SOLUTION
    if bn.num_features != conv.out_channels:
        raise ValueError(f"bn has {bn.num_features} features, conv has {conv.out_channels} output channels")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn has no running statistics (track_running_stats=False): nothing to fold")
    with torch.no_grad():
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        fused = copy.deepcopy(conv)
        fused.weight = nn.Parameter(conv.weight * scale.reshape(-1, 1, 1, 1).to(conv.weight.dtype))
        fused.bias = nn.Parameter(bias.to(conv.weight.dtype))
    return fused
    ### END SOLUTION

# %% [demo]
# Check that it does: a conv and a BatchNorm with some running statistics, folded, against the two in eval mode.
torch.manual_seed(0)
conv, bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
bn(conv(torch.randn(16, 3, 10, 10) * 2 + 1))  # one training step: running statistics away from 0 and 1
x = torch.randn(4, 3, 10, 10)
with torch.no_grad():
    print("largest difference:", (fold_bn(conv, bn)(x) - bn.eval()(conv(x))).abs().max().item())

# %% [test id=test_fold_bn_output points=2]
"""fold_bn(conv, bn) is a plain Conv2d with a bias whose output equals bn.eval()(conv(x)) (fuse_conv_bn_eval's)."""
from course_lib.checks import check_fold_bn

check_fold_bn(fold_bn, "output")
### BEGIN HIDDEN TESTS
from course_recorder import q4

q4.fold_output(fold_bn)
### END HIDDEN TESTS

# %% [test id=test_fold_bn_leaves_inputs points=1]
"""fold_bn changes neither conv nor bn (their tensors, bn's mode) and shares no tensors with them."""
from course_lib.checks import check_fold_bn

check_fold_bn(fold_bn, "inputs")
### BEGIN HIDDEN TESTS
from course_recorder import q4

q4.fold_inputs(fold_bn)
### END HIDDEN TESTS

# %% [test id=test_fold_bn_errors points=1]
"""ValueError when bn.num_features != conv.out_channels or bn has no running statistics."""
from course_lib.checks import check_fold_bn

check_fold_bn(fold_bn, "errors")
### BEGIN HIDDEN TESTS
from course_recorder import q4

q4.fold_errors(fold_bn)
### END HIDDEN TESTS

# %% [markdown]
# **What folding buys at inference.** The cell below builds a small conv -> BN -> ReLU network (three blocks,
# the paper's order), gives its norms running statistics with a few training-mode batches, then times it in
# eval mode under `no_grad` on a batch of 256 images against the same network with every BN folded into its conv.
#
# **Predict first** (write it down; no points): how much faster will the folded network be, and how far apart
# will the two networks' outputs be?

# %% [experiment]
import time


def timed(model, xb, repeats=5):
    """The best of a few timings of model(xb), in milliseconds."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        model(xb)
        best = min(best, time.perf_counter() - start)
    return best * 1e3


torch.manual_seed(0)
chans = [1, 16, 32, 32]
blocks = [nn.Sequential(nn.Conv2d(a, b, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU())
          for a, b in zip(chans, chans[1:])]
net = nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(chans[-1], 10))
with torch.no_grad():
    for _ in range(5):  # training-mode batches: running statistics of their own
        net(torch.randn(64, 1, 28, 28) * 1.5 + 0.3)
net.eval()
folded = nn.Sequential(*[nn.Sequential(fold_bn(b[0], b[1]), b[2]) for b in blocks], *list(net)[len(blocks):]).eval()
xb = torch.randn(256, 1, 28, 28)
with torch.no_grad():
    timed(net, xb, 1), timed(folded, xb, 1)  # warm-up
    t_net, t_folded = timed(net, xb), timed(folded, xb)
    out, out_folded = net(xb), folded(xb)
print(f"conv -> BN -> ReLU: {t_net:.1f} ms; folded: {t_folded:.1f} ms ({t_net / t_folded:.2f}x)")
print(f"largest difference of the outputs: {(out - out_folded).abs().max().item():.2g}; "
      f"same predictions: {bool((out.argmax(1) == out_folded.argmax(1)).all())}")

# %% [markdown]
# The folded network gives the same predictions (the outputs differ by float rounding) and skips one pass over
# every activation map per block; how much time that saves depends on the machine — and it is possible only
# because each norm sits right after its conv: in the lesson's conv -> act -> BN the activation between them
# (Part C) leaves a BN that no conv before it can absorb.
