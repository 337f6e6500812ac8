# %% [markdown]
# # Q6 — BatchNorm vs LayerNorm
#
# BatchNorm (Ioffe & Szegedy, 2015) normalises each channel with statistics taken across the whole
# mini-batch. Layer normalization (Ba, Kiros & Hinton, 2016) turns the reduction around: each example
# is normalised with the mean and variance of its *own* activations in the layer, so it never looks at the
# other examples in the batch.
#
# In **Part A** you explain the difference in words. In **Part B** you write the lesson's LayerNorm for
# convolutional activations, and in **Part C** you train the lesson's CNN with it. (The lesson's own
# LayerNorm run printed a NaN loss; the experiment after it lets you find out why, and **Part D** asks what
# your runs show.) Beyond the lesson, **Part E** has you write RMSNorm, the LayerNorm without the mean that
# today's large language models use, and **Part F** asks what it leaves out and why they use it.

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
                        ProgressCallback, Recorder, accuracy, get_cnn_model, get_data, get_dls, get_learn_run,
                        init_cnn, mnist_view, normalize_to, set_seed)

set_seed(42)

# %% [markdown]
# ## What each one averages over
#
# Write the conv activations as $x_{nchw}$, of shape `(N, C, H, W)`.
#
# **BatchNorm** (Ioffe & Szegedy, 2015, Algorithm 1; §3.2 for conv layers, where all positions of a feature map
# share its statistics): one mean and one variance per channel $c$, over the batch and every position,
#
# $$\mu_c = \frac{1}{NHW}\sum_{n=1}^{N}\sum_{h=1}^{H}\sum_{w=1}^{W} x_{nchw}, \qquad
# \sigma_c^2 = \frac{1}{NHW}\sum_{n,h,w}\left(x_{nchw}-\mu_c\right)^2, \qquad
# y_{nchw} = \gamma_c\,\frac{x_{nchw}-\mu_c}{\sqrt{\sigma_c^2+\epsilon}} + \beta_c .$$
#
# **LayerNorm** (Ba, Kiros & Hinton, 2016, §3, eq. 3): for one example, over the summed inputs $a_i$ of the
# $H$ hidden units of a layer (the paper's $H$),
#
# $$\mu = \frac{1}{H}\sum_{i=1}^{H} a_i, \qquad \sigma = \sqrt{\frac{1}{H}\sum_{i=1}^{H}\left(a_i-\mu\right)^2},$$
#
# then (§3.1, eq. 4) $\frac{\mathbf{g}}{\sigma}\odot(\mathbf{a}-\mu)+\mathbf{b}$, with a gain $\mathbf{g}$ and a
# bias $\mathbf{b}$ that have one entry per hidden unit. In a conv layer the hidden units of example $n$ are its
# $C\cdot H\cdot W$ values ($H$ is the height again): one mean and one variance per example $n$,
#
# $$\mu_n = \frac{1}{CHW}\sum_{c=1}^{C}\sum_{h=1}^{H}\sum_{w=1}^{W} x_{nchw}, \qquad
# \sigma_n^2 = \frac{1}{CHW}\sum_{c,h,w}\left(x_{nchw}-\mu_n\right)^2, \qquad
# y_{nchw} = \frac{x_{nchw}-\mu_n}{\sqrt{\sigma_n^2+\epsilon}}\cdot \mathrm{mult} + \mathrm{add} .$$
#
# The last formula is the layer you write in Part B, and its affine is **the lesson's choice**: one scalar
# `mult` and one scalar `add` for the whole layer. The paper's gain and bias, and the `weight` and `bias` of
# `nn.LayerNorm(normalized_shape)`, have one entry per element of the normalised shape (here `(C, H, W)`), and
# `nn.GroupNorm(1, C)` computes the same $\mu_n$ and $\sigma_n$ with one weight and bias per channel (Q8). The
# normalisation is the same in all of them; the learned scale and shift are not. (The paper puts no $\epsilon$
# in $\sigma$; torch, and this course, add it inside the square root.)
#
# The figure draws the activation as a block with the batch (`N`), the channels (`C`) and the `H*W` positions
# of a feature map (flattened) on its three axes, and shades the values that *one* statistic of each norm is
# computed from (the picture of Wu & He, 2018, Figure 2).

# %% [experiment]
from course_lib import draw_norm_axes

draw_norm_axes("batch", "layer")
plt.show()

# %% [markdown]
# ## Part A (3 points) — what each one normalises over
#
# Answer in a few sentences each:
#
# 1. For conv activations of shape `(N, C, H, W)`, over which values does BatchNorm compute one mean
#    and variance, and over which does LayerNorm?
# 2. Why does LayerNorm need no running statistics, and why does it work with a batch of one example?
# 3. Why do RNNs and transformers normalise with LayerNorm (or, in most recent large language models, its
#    variant RMSNorm) rather than with BatchNorm?
#
# Cite the papers you rely on.

# %% [answer id=answer_bn_vs_ln points=3]
# **1. The axes.** BatchNorm (Ioffe & Szegedy, 2015) computes one mean and one variance *per channel*,
# over the batch and every position: over `(N, H, W)`, so `C` pairs of statistics shared by all
# examples of the batch. LayerNorm (Ba, Kiros & Hinton, 2016) computes one mean and variance *per
# example*, over all of that example's activations in the layer: over `(C, H, W)`, so `N` pairs, each
# belonging to one example. (In an RNN or a transformer: over the hidden features of one example at one
# time step / one token.) Both then apply a learned scale and shift: BatchNorm one per channel; LayerNorm,
# in the paper (§3.1) and in `nn.LayerNorm`, one per element it normalises over, while the lesson's LayerNorm
# (Part B) has a single scalar of each.
#
# **2. No running statistics, batch size 1.** An example's LayerNorm statistics depend only on that
# example, so the computation is identical in training and at inference: there is nothing to estimate
# from the training set and no train/test discrepancy, hence no running averages. BatchNorm needs them
# because at inference a prediction must not depend on which other examples share the batch (and a
# batch may hold a single example). For the same reason LayerNorm works with a batch of one: the
# `C*H*W` values of that one example still give a meaningful mean and variance (Ba et al., §3: it "can be used
# in the pure online regime with batch size 1"), while BatchNorm's batch statistics from one example are very
# noisy, and degenerate when a channel holds a single value (one example with a 1x1 map: its variance is 0 and
# every output equals the shift; `nn.BatchNorm2d` refuses such an input in training).
#
# **3. RNNs and transformers.** With BatchNorm in an RNN the statistics differ from time step to time
# step, so each step would need its own running statistics, and sequences have different lengths: at
# test time a sequence longer than any training sequence has steps with no statistics at all. LayerNorm
# normalises each example at each step over its hidden units, the same computation at every step and
# for every length and batch size (Ba et al., 2016, §3.1, applied it to RNNs for exactly this reason).
# Transformers normalise each token's feature vector the same way; the batch holds padded sequences of
# varying length, and the result must not depend on batch composition. The original Transformer (Vaswani
# et al., 2017, §3.1) applies LayerNorm after each residual addition, `LayerNorm(x + Sublayer(x))`
# ("post-norm"), as BERT (Devlin et al., 2019) does; GPT-2 (Radford et al., 2019, §2.3) moved it to the input
# of each sub-block ("pre-norm"), which keeps the gradients well-behaved at initialisation (Xiong et al.,
# 2020). Most recent large language models (LLaMA, Touvron et al., 2023, §2.2, and its successors) use
# **RMSNorm** (Zhang & Sennrich, 2019) in the pre-norm position: it divides each token's vector $\mathbf{a}$ by
# its root mean square $\sqrt{\frac{1}{d}\sum_i a_i^2}$ and multiplies by a learned gain, with no mean
# subtracted and no shift, which is cheaper and trains about as well. The argument against BatchNorm is the
# same for all of them. The price for convnets: all channels of an example share one mean and variance,
# which is a stronger constraint than BatchNorm's per-channel statistics, and Ba et al. (§6.7) found that
# BatchNorm outperforms LayerNorm there (units near the image boundary have very different statistics).
#
# **Mark scheme** (3 points)
# - 1 point: BN over `(N, H, W)` per channel (across the batch); LN over `(C, H, W)` per example.
# - 1 point: LN's statistics come from the example itself, so training and inference compute the
#   same thing (no running statistics), and a single example has `C*H*W` values to normalise with.
# - 1 point: RNNs: statistics per time step / varying sequence lengths break BN, LN is the same at every
#   step (or transformers: per-token normalization independent of batch and padding; the same reason holds
#   for RMSNorm); papers cited. No point for "BN cannot handle shared weights". RMSNorm, pre- and post-norm
#   are not required; a claim that transformers use BatchNorm loses the point.

# %% [markdown]
# ## Part B (7 points) — the layer
#
# Write the lesson's `LayerNorm(eps=1e-5)` for conv activations of shape `(N, C, H, W)`. Its
# **contract** is in the docstring below. In numbers it is
# `F.layer_norm(x, x.shape[1:], eps=eps) * mult + add`: torch's layer norm over everything but the
# batch dimension, followed by the lesson's *single* learned scale and shift (one number each, not one
# per channel or per position as in `nn.LayerNorm` and the paper). Two details:
#
# - Use the **biased** variance (divide by `n = C*H*W`, as the paper's eq. 3 does), and put `eps` **inside**
#   the square root. (The lesson used the unbiased variance; we follow torch's `layer_norm`.)
# - `mult` and `add` are learned, so they are `nn.Parameter`s. There are no buffers: every example
#   brings its own statistics, in training and in eval mode alike.
#
# Write the math yourself with tensor operations: calling torch's own layer norm gets no points.

# %% [solution id=layernorm]
class LayerNorm(nn.Module):
    """Layer normalization of conv activations (N, C, H, W), per example, as in the lesson.

    LayerNorm(eps=1e-5). Store eps as self.eps.

    Learned parameters (nn.Parameter), ONE number each, shared by every channel and position:
        self.mult  a 0-dim tensor (shape ()), starts as 1.0   (the scale, gamma)
        self.add   a 0-dim tensor (shape ()), starts as 0.0   (the shift, beta)
    No buffers: the layer keeps nothing between batches.

    forward(x), x of shape (N, C, H, W): returns a tensor of the same shape and dtype as x.
    For every example n on its own, over all of its C*H*W values:
        mean_n = the mean of x[n]
        var_n  = the BIASED variance of x[n]   (divide by C*H*W, not C*H*W - 1)
        out[n] = (x[n] - mean_n) / sqrt(var_n + eps) * mult + add
    That is F.layer_norm(x, x.shape[1:], eps=eps) * mult + add. The output of one example does not
    depend on the rest of the batch, and training and eval mode compute exactly the same thing.
    """

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.eps = eps
        self.mult = nn.Parameter(torch.tensor(1.0))
        self.add = nn.Parameter(torch.tensor(0.0))
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        """Normalise each example of x over (C, H, W), then scale by mult and shift by add."""
        ### BEGIN SOLUTION
        # keepdim=True gives shape (N, 1, 1, 1), which broadcasts against the examples, not against W.
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        var = x.var(dim=(1, 2, 3), keepdim=True, correction=0)
        return (x - mean) / torch.sqrt(var + self.eps) * self.mult + self.add
        ### END SOLUTION

# %% [demo]
# Check that it does: your layer against torch's layer_norm in float64, for a batch and for one example.
x = torch.randn(6, 4, 5, 5, dtype=torch.float64) * 3 + 2
ln = LayerNorm().double()
with torch.no_grad():
    ln.mult.fill_(1.5)
    ln.add.fill_(-0.5)
    gap = (ln(x) - (F.layer_norm(x, x.shape[1:], eps=1e-5) * 1.5 - 0.5)).abs().max().item()
    alone = (ln(x[:1]) - ln(x)[:1]).abs().max().item()
print(f"largest difference from F.layer_norm * 1.5 - 0.5: {gap:.1e}")
print(f"example 0 alone vs inside the batch: {alone:.1e}")
print("parameters:", {name: tuple(p.shape) for name, p in ln.named_parameters()}, " buffers:", list(ln.buffers()))

# %% [test id=test_parameters points=1]
"""mult and add are 0-dim nn.Parameters starting at 1 and 0, each layer's own, and are its only state (no buffers)."""
from course_lib.checks import check_layernorm, student_checks

with student_checks():
    ln = LayerNorm()
    params = dict(ln.named_parameters())
    assert set(params) == {"mult", "add"}, f"the learned parameters must be exactly mult and add, got {sorted(params)}"
    for name in ("mult", "add"):
        assert tuple(getattr(ln, name).shape) == (), (
            f"LayerNorm().{name} should be ONE number (a 0-dim tensor of shape ()), got shape {tuple(getattr(ln, name).shape)}")
check_layernorm(LayerNorm, "arguments")
### BEGIN HIDDEN TESTS
from course_recorder import q6

q6.parameters(LayerNorm)
### END HIDDEN TESTS

# %% [test id=test_output points=3]
"""Each example normalised over (C, H, W) with its mean and biased variance, eps inside the sqrt, then * mult + add."""
from course_lib.checks import check_layernorm

check_layernorm(LayerNorm, "output")
### BEGIN HIDDEN TESTS
from course_recorder import q6

q6.output(LayerNorm)
### END HIDDEN TESTS

# %% [test id=test_batch_independence points=1]
"""One example's output ignores the rest of the batch: alone (a batch of 1) or among others, it is the same."""
from course_lib.checks import check_layernorm

check_layernorm(LayerNorm, "independence")
### BEGIN HIDDEN TESTS
from course_recorder import q6

q6.batch_independence(LayerNorm)
### END HIDDEN TESTS

# %% [test id=test_train_equals_eval points=1]
"""Training and eval mode give the same output, with no running statistics kept."""
from course_lib.checks import check_layernorm

check_layernorm(LayerNorm, "modes")
### BEGIN HIDDEN TESTS
from course_recorder import q6

q6.train_equals_eval(LayerNorm)
### END HIDDEN TESTS

# %% [test id=test_gradients points=1]
"""Gradients with respect to the input, mult and add are right (against autograd on the contract, float64), in both modes."""
from course_lib.checks import check_layernorm

check_layernorm(LayerNorm, "gradients")
### BEGIN HIDDEN TESTS
from course_recorder import q6

q6.gradients_probe(LayerNorm)
### END HIDDEN TESTS

# %% [markdown]
# ## Part C (1 point) — LayerNorm in the lesson's CNN
#
# The block below is the lesson's `conv_layer` with your `LayerNorm` as its norm: a convolution, the
# activation, then the norm, **after** the activation (the lesson's order; Q4 discusses it). Two of its
# details are the course's choices, not the lesson's:
#
# - The conv has no bias when a norm follows (`bias=not bn`, as in the lesson's `conv_layer` for BatchNorm);
#   the lesson's own LayerNorm block, `conv_ln`, kept it (`bias=True`). LayerNorm subtracts one mean over all
#   channels, so it would not cancel a per-channel bias even right after the conv (Q4).
# - The activation is `GeneralRelu(leak=0.1, sub=0.4, maxv=6.)`, which the course takes from lesson 06. The
#   lesson's 07 runs called `get_learn_run` without these arguments, so their `GeneralRelu()` was a plain ReLU.
#
# `norm` lets a test swap in another layer. Every block has stride 2, so the maps shrink
# 28 → 14 → 7 → 4 → 2 → 1. Nothing to write: the test checks that your layer trains the CNN like a
# reference LayerNorm (same weights, same batches, 30 steps at learning rate 0.2) and that the loss stays finite.

# %% [setup]
NFS = [8, 16, 32, 64, 64]
ACTIVATION = dict(leak=0.1, sub=0.4, maxv=6.)


def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 2, bn: bool = True,
               norm: Callable[[int], nn.Module] | None = None, **kwargs) -> nn.Sequential:
    """Conv2d -> GeneralRelu(**kwargs) -> norm(nf) when bn; norm defaults to this notebook's LayerNorm."""
    layers = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn), GeneralRelu(**kwargs)]
    if bn:
        # LayerNorm's single scale and shift do not depend on the number of channels.
        layers.append(norm(nf) if norm is not None else LayerNorm())
    return nn.Sequential(*layers)


def lesson_cnn(norm: Callable[[int], nn.Module] | None = None) -> nn.Sequential:
    """The lesson's CNN (10 classes) built from conv_layer blocks, Kaiming-initialised."""
    return init_cnn(get_cnn_model(SimpleNamespace(c=10), NFS, partial(conv_layer, norm=norm), **ACTIVATION))

# %% [test id=test_training_curve points=1]
"""The lesson's CNN with your LayerNorm trains, finite, like the same CNN with a reference LayerNorm (same weights and batches)."""
with student_checks():
    model = lesson_cnn()
    out = model(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10) and torch.isfinite(out).all(), f"the CNN should give finite (4, 10) logits, got {tuple(out.shape)}"
### BEGIN HIDDEN TESTS
from course_recorder import q6

q6.training_curve(lesson_cnn)
### END HIDDEN TESTS

# %% [markdown]
# ## The experiment: where the lesson's NaN came from
#
# The lesson trained its LayerNorm CNN at learning rate **0.8** and printed `nan` for the loss (its block:
# a plain ReLU, a conv bias, and the unbiased variance in the layer). Two suspects: the unbiased variance,
# and the learning rate. Note for the first that every block here has `C*H*W >= 64` values per example
# (the last one: 64 channels of 1x1), so dividing by `n - 1` instead of `n` changes a variance by a factor
# of at most 64/63.
#
# Two runs of this notebook's CNN with your `LayerNorm` (biased variance), each with progress bars:
#
# 1. lr 0.8 on a capped subset of 20 batches of 512 images (a few seconds);
# 2. lr 0.4 for one full epoch (98 batches of 512 images; a few seconds on a 2-core laptop CPU).
#
# When the notebook is graded both runs use the small grading subset and take a second or two.
#
# **Predict before you run** (not graded): write down what you expect each loss curve to do, and which of the
# two suspects you think caused the lesson's `nan`.

# %% [experiment]
x_train, y_train, x_valid, y_valid = get_data()
x_train, x_valid = normalize_to(x_train, x_valid)
train_dl, valid_dl = get_dls(Dataset(x_train, y_train), Dataset(x_valid, y_valid), bs=512)
data = DataBunch(train_dl, valid_dl, c=10)
capped_dl, _ = get_dls(Dataset(x_train[:20 * 512], y_train[:20 * 512]), Dataset(x_valid, y_valid), bs=512)
capped_data = DataBunch(capped_dl, valid_dl, c=10)
cbfs = [partial(AvgStatsCallback, accuracy), DeviceCallback, partial(BatchTransformXCallback, mnist_view),
        Recorder, ProgressCallback]


def train_layernorm(data: DataBunch, lr: float):
    """One epoch of the lesson's CNN with your LayerNorm; returns the runner (losses in run.recorder)."""
    set_seed(0)
    learn, run = get_learn_run(NFS, data, lr, conv_layer, cbs=cbfs, **ACTIVATION)
    run.fit(1, learn)
    return run


run_fast = train_layernorm(capped_data, 0.8)
run_ok = train_layernorm(data, 0.4)

# %% [experiment]
fig, axes = plt.subplots(1, 2, figsize=(12, 4))
axes[0].semilogy(run_fast.recorder.losses)
axes[0].set(title="lr 0.8 (capped subset): training loss, log scale", xlabel="training batch")
axes[1].plot(run_ok.recorder.losses)
axes[1].set(title="lr 0.4, one epoch: training loss", xlabel="training batch")
fig.tight_layout()
plt.show()
for name, run in (("lr 0.8", run_fast), ("lr 0.4", run_ok)):
    history = run.avg_stats.history[-1]
    print(f"LayerNorm {name}: last training loss {run.recorder.losses[-1]:.4g}  "
          f"valid loss {history['valid_loss']:.4g}  valid accuracy {history['valid_accuracy']:.3f}")

# %% [markdown]
# ## Part D (2 points) — what your runs show
#
# Answer from **your own** plots and printout:
#
# 1. What does the training loss do at lr 0.8, and from about which batch? What does it do at lr 0.4?
# 2. Your layer uses the biased variance. What does that tell you about the cause of the lesson's `nan`?
#    Would you expect the lesson's unbiased variance to change the outcome at lr 0.8? Give a reason.

# %% [answer id=answer_lr_experiment points=2]
# **1. The curves.** At lr 0.8 (left, log scale) the loss stays around 2 for about ten batches (2.4 at batch 0,
# 3.0 at batch 10), passes 10 at batch 12 (21.7) and then grows more than tenfold per batch, to 3.1e9 at batch
# 19, the last of the capped subset; the validation loss is 7e10 and the accuracy 0.098, chance. Trained longer,
# such a run overflows float32 to `inf` and then `nan`: the lesson's printout. At lr 0.4 (right) the loss falls
# from 2.4 to below 0.5 within about 20 batches and ends the epoch at 0.096, finite throughout; validation
# accuracy 0.961 after one epoch.
#
# **2. The cause.** The run at lr 0.8 uses the *biased* variance and still blows up, so the unbiased variance is
# not needed for it. Nor can it change much: with at least 64 values per example it rescales each variance by
# at most 64/63 (less than 2 %), so the normalised activations change by less than 1 %. The learning rate is
# the cause: normalization fixes the scale of each block's *output*, not the size of the steps SGD takes on the
# weights, and 0.8 is too large a step for this model. It is at the edge, not far past it, so a small change
# can tip one run either way, but not the odds. Measured over three seeds and one epoch of the full data
# (`bench/measure_layernorm_lr.py`, one CPU thread): 9 of 12 runs at lr 0.8 reached `inf` within 12 to 26
# batches (the course's block: 2 of 3 with either variance; the lesson's block, plain ReLU and conv bias: 3 of 3
# with the biased variance, 2 of 3 with the unbiased one), while all 12 runs at lr 0.4 trained (last losses
# 0.06 to 0.36). Switching the lesson's layer to the biased variance would not have saved its run; a smaller
# learning rate would have. What LayerNorm buys is independence from the batch (any batch size, including one);
# what it costs in a convnet is one shared mean and variance for all channels, a stronger constraint than
# BatchNorm's per-channel statistics (Ba, Kiros & Hinton, 2016, §6.7, found BatchNorm better for convnets).
# The lesson's anchors for comparison: no normalization about 97 % after 2 epochs, BatchNorm about 97 % after 3.
#
# **Mark scheme** (2 points)
# - 1 point: an honest reading of the student's own plots with numbers from them: at lr 0.8 the loss rises by
#   orders of magnitude (the log scale) after some batch, ending `inf`/`nan` or huge; at lr 0.4 it falls and
#   stays finite, with the printed validation accuracy. The runs are seeded, so the curves should look like
#   the model answer's; accept whatever the student's plot actually shows, described correctly.
# - 1 point: the cause is the learning rate, not the variance: the biased-variance run diverges too, and
#   `n/(n-1) <= 64/63` is too small a change to decide it; normalization does not bound the weight updates.
#   Half a point for "the learning rate" without a reason; no point for blaming the unbiased variance.

# %% [markdown]
# ## Part E (4 points) — RMSNorm, the norm of today's transformers
#
# Most recent large language models (LLaMA, Touvron et al., 2023, §2.2, and its successors) normalise each token
# with **RMSNorm** (Zhang & Sennrich, 2019), a LayerNorm with two things taken out: no mean is subtracted and
# there is no shift. For the $d$ values $a_1, \dots, a_d$ it normalises over (a token's features: the trailing
# dimensions `normalized_shape`, as in `nn.LayerNorm`), with a learned gain $g_i$ per feature,
#
# $$\mathrm{RMS}(\mathbf{a}) = \sqrt{\frac{1}{d}\sum_{i=1}^{d} a_i^2 + \epsilon}, \qquad
# y_i = \frac{a_i}{\mathrm{RMS}(\mathbf{a})}\, g_i .$$
#
# Compare LayerNorm: $y_i = \frac{a_i - \mu}{\sqrt{\sigma^2 + \epsilon}}\, g_i + b_i$. The root mean square is the
# standard deviation only when the mean is 0. (The paper writes $\sqrt{\frac{1}{n}\sum_i a_i^2}$ without
# $\epsilon$; torch's `F.rms_norm` and this course put $\epsilon$ inside the root, as for the other norms.)
#
# Write `RMSNorm(normalized_shape, eps=1e-6)`. Its **contract** is in the docstring. In numbers it is
# `F.rms_norm(x, normalized_shape, weight, eps)` (pass eps: with `eps=None`, `F.rms_norm` uses the dtype's
# machine epsilon). Write the math yourself with tensor operations: calling torch's own `rms_norm` or
# `layer_norm` (or `nn.RMSNorm`) gets no points.

# %% [solution id=rmsnorm]
class RMSNorm(nn.Module):
    """Root-mean-square normalization (Zhang & Sennrich, 2019) over the trailing dimensions of x.

    RMSNorm(normalized_shape, eps=1e-6):
        normalized_shape  an int d (the last dimension) or a tuple of ints (the last len(normalized_shape)
                          dimensions). Store it as self.normalized_shape, ALWAYS a tuple: RMSNorm(8) has (8,).
        eps               store it as self.eps.

    Learned parameter (nn.Parameter), one value per feature:
        self.weight  shape normalized_shape (e.g. (8,) or (3, 4)), starts as ones.  (the gain g)
    Nothing else: no bias, no buffers.

    forward(x): x of any shape whose LAST dimensions equal normalized_shape; else raise ValueError (say which
    shapes). Returns a tensor of the same shape and dtype as x. Over those trailing dimensions (d values):
        ms  = the mean of x**2                         (NOT the sum; the mean is NOT subtracted)
        out = x / sqrt(ms + eps) * weight               (eps INSIDE the root)
    That is F.rms_norm(x, normalized_shape, weight, eps). Training and eval mode compute the same thing.
    """

    def __init__(self, normalized_shape: int | tuple[int, ...], eps: float = 1e-6) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        if isinstance(normalized_shape, int):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(self.normalized_shape))
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        """Divide x by the root mean square of its trailing normalized_shape values, then multiply by weight."""
        ### BEGIN SOLUTION
        k = len(self.normalized_shape)
        if tuple(x.shape[x.dim() - k:]) != self.normalized_shape or x.dim() < k:
            raise ValueError(f"RMSNorm({self.normalized_shape}): the input's last dimensions must be "
                             f"{self.normalized_shape}, got an input of shape {tuple(x.shape)}")
        dims = tuple(range(-k, 0))
        ms = (x * x).mean(dim=dims, keepdim=True)
        return x / torch.sqrt(ms + self.eps) * self.weight
        ### END SOLUTION

# %% [demo]
# Your RMSNorm against torch's rms_norm in float64, on a batch of 2 sequences of 5 tokens with 8 features.
x = torch.randn(2, 5, 8, dtype=torch.float64) * 3 + 1
rms = RMSNorm(8).double()
with torch.no_grad():
    rms.weight.copy_(torch.linspace(0.5, 2.0, 8))
    gap = (rms(x) - F.rms_norm(x, (8,), rms.weight, 1e-6)).abs().max().item()
    mean_after = rms(x).mean(-1).abs().max().item()
print(f"largest difference from F.rms_norm: {gap:.1e}")
print(f"a token's mean after RMSNorm is not 0 (it keeps the input's mean direction): up to {mean_after:.2f}")
print("parameters:", {name: tuple(p.shape) for name, p in rms.named_parameters()})

# %% [test id=test_rms_parameters points=1]
"""self.normalized_shape a tuple, self.eps, and one weight of shape normalized_shape starting at ones (no bias, no buffers)."""
from course_lib.checks import check_rmsnorm

check_rmsnorm(RMSNorm, "arguments")
### BEGIN HIDDEN TESTS
from course_recorder import q6

q6.rms_parameters(RMSNorm)
### END HIDDEN TESTS

# %% [test id=test_rms_output points=2]
"""x / sqrt(mean(x**2 over the trailing dims) + eps) * weight, on other shapes, float32 and float64, other memory layouts."""
from course_lib.checks import check_rmsnorm

check_rmsnorm(RMSNorm, "output")
### BEGIN HIDDEN TESTS
from course_recorder import q6

q6.rms_output(RMSNorm)
### END HIDDEN TESTS

# %% [test id=test_rms_errors points=1]
"""An input whose trailing dimensions are not normalized_shape raises ValueError; a right one does not."""
from course_lib.checks import check_rmsnorm

check_rmsnorm(RMSNorm, "errors")
### BEGIN HIDDEN TESTS
from course_recorder import q6

q6.rms_errors(RMSNorm)
### END HIDDEN TESTS

# %% [markdown]
# ## Part F (2 points) — what RMSNorm leaves out, and why transformers use it
#
# Answer in a few sentences each:
#
# 1. What does RMSNorm drop compared with LayerNorm, and what property of LayerNorm goes with it? What do
#    Zhang & Sennrich (2019) argue that the model keeps, and what do they gain?
# 2. Where in a transformer block do recent models put the norm ("pre-norm"), and why (Xiong et al., 2020)?
#
# Cite the papers you rely on.

# %% [answer id=answer_rmsnorm points=2]
# **1. What it drops.** RMSNorm drops the *re-centering*: LayerNorm subtracts the mean of the token's features
# and adds a learned bias $b$; RMSNorm subtracts nothing and has only the gain $g$. With the mean goes LayerNorm's
# invariance to shifting all inputs by the same amount (re-centering invariance); what stays is the invariance to
# *re-scaling* the inputs (and the weights that produce them): multiplying $\mathbf{a}$ by $\delta$ leaves
# $\mathbf{a}/\mathrm{RMS}(\mathbf{a})$ unchanged (Zhang & Sennrich, 2019, their invariance analysis). Their
# hypothesis (abstract) is that LayerNorm's re-centering invariance is dispensable and its re-scaling invariance is
# what helps; in their experiments (machine translation among other tasks and architectures) RMSNorm reaches
# LayerNorm's quality while it needs one statistic instead of two and no mean subtraction, which cut the running
# time by 7 %–64 % depending on the model (abstract). In the code it is one reduction (`mean(x**2)`) instead of two and no shift.
#
# **2. Pre-norm.** The original Transformer (Vaswani et al., 2017) normalises after each residual addition,
# `Norm(x + Sublayer(x))` (post-norm); GPT-2 and most models since normalise the input of each sub-block,
# `x + Sublayer(Norm(x))` (pre-norm). Xiong et al. (2020) show that at initialisation the post-norm Transformer's
# expected gradients of the parameters near the output are large, which is why it needs a learning-rate warm-up,
# while in the pre-norm Transformer the gradients are well-behaved and the warm-up can be removed (faster
# training). In pre-norm the residual stream itself is never normalised, so the norm only has to give each
# sub-block an input of a fixed scale: exactly what RMSNorm's re-scaling does, and cheaper. LLaMA (Touvron et al.,
# 2023, §2.2) combines the two: pre-normalisation with RMSNorm.
#
# **Mark scheme** (2 points)
# - 1 point: RMSNorm does not subtract the mean (and has no bias/shift), so it loses re-centering (shift)
#   invariance and keeps re-scaling invariance; Zhang & Sennrich (2019) argue re-centering is not needed for the
#   benefit and report similar quality with less computation (a speed-up; 7–64 % if a number is given). Half a
#   point for "no mean subtraction, cheaper" with no invariance or source; no point for "it has no gain" or "it
#   normalises over the batch".
# - 1 point: pre-norm = the norm at the input of each sub-block inside the residual branch, x + F(Norm(x)), as
#   opposed to post-norm Norm(x + F(x)); Xiong et al. (2020): well-behaved gradients at initialisation, no
#   warm-up needed (post-norm has large gradients near the output). Half a point for the placement without the
#   reason.
