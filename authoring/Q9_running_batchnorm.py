# %% [markdown]
# # Q9 — RunningBatchNorm for small batches
#
# BatchNorm normalises each training batch with that batch's own mean and variance, and at inference
# with running averages of them (Ioffe & Szegedy 2015, §3.1). What happens when a batch holds only two
# images? The lesson's answer to small batches is **RunningBatchNorm**: keep exponentially weighted
# moving averages of the per-channel *sum*, *sum of squares* and *element count*, and normalise with
# those smoothed statistics in training too.
#
# In this notebook you
# - **Part A** implement `RunningBatchNorm` exactly as its stub says (9 points, autograded);
# - **Part B** train the lesson's CNN with batches of **two** images, with `nn.BatchNorm2d` and with your
#   layer (3 points, autograded), watch what each layer normalises with, and explain your plot
#   (2 points, written); then train at batch size 32 with a learning-rate schedule;
# - **Part C** explain why the layer is built this way (3 points, written);
# - **Part D** recalibrate a BatchNorm network's running statistics (3 points, autograded), measure how much
#   of the batch-of-two collapse they caused, and explain what you measured (2 points, written).

# %% [setup]
%matplotlib inline
import math
from functools import partial

import matplotlib.pyplot as plt
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib import (AvgStatsCallback, BatchTransformXCallback, DataBunch, Dataset, DeviceCallback, GeneralRelu,
                        ParamScheduler, ProgressCallback, Recorder, accuracy, get_cnn_model, get_data, get_dls,
                        get_learn_run, grading_mode, init_cnn, mnist_view, normalize_to, sched_lin, set_seed)

# This small CNN trains fastest on one CPU thread: with batches of 2-32 images, syncing threads costs
# more than it saves (and on a busy machine extra threads slow it down many times over).
torch.set_num_threads(1)
x_train, y_train, x_valid, y_valid = get_data()
x_train, x_valid = normalize_to(x_train, x_valid)
nfs = [8, 16, 32, 64, 64]


def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 2, bn: bool = True, norm=nn.BatchNorm2d,
               leak: float = 0.1, sub: float = 0.4, maxv: float = 6.0) -> nn.Sequential:
    """The lesson's block: conv -> GeneralRelu -> norm(nf) (the norm after the activation).

    GeneralRelu(0.1, 0.4, 6) is the course's choice; the lesson's 07 runs called GeneralRelu() with no
    arguments, a plain ReLU."""
    # The lesson's choice: a conv bias only without a norm (bias=not bn; Q4 says when a norm cancels it).
    layers = [nn.Conv2d(ni, nf, kernel_size=ks, padding=ks // 2, stride=stride, bias=not bn),
              GeneralRelu(leak=leak, sub=sub, maxv=maxv)]
    if bn:
        layers.append(norm(nf))
    return nn.Sequential(*layers)


def mnist_data(bs: int, n_train: int | None = None) -> DataBunch:
    """MNIST in batches of bs (the first n_train training images if given); validation in batches of 1024."""
    train_ds = Dataset(x_train[:n_train], y_train[:n_train])
    valid_ds = Dataset(x_valid, y_valid)
    train_dl, _ = get_dls(train_ds, valid_ds, bs)
    _, valid_dl = get_dls(train_ds, valid_ds, 512)  # validation needs no tiny batches: 1024 at a time is faster
    return DataBunch(train_dl, valid_dl, c=10)


def callbacks() -> list:
    """The lesson's callbacks: stats with accuracy, progress bars, recorder, device (CUDA if present), reshape."""
    return [partial(AvgStatsCallback, accuracy), ProgressCallback, Recorder, DeviceCallback,
            partial(BatchTransformXCallback, mnist_view)]


data = mnist_data(512)

# %% [markdown]
# ## Part A (9 points) — `RunningBatchNorm`
#
# Write the layer of the lesson, with its two defects fixed (batch size 1 crashed, an untrained layer
# returned NaN in eval) and its no-op "debias" factor left out (Part C asks why it is a no-op). Per
# channel `c`, the layer keeps three smoothed statistics, updated at every **training** forward pass
# with `lerp` (`old + (new - old) * mom1`):
#
# | buffer | what is smoothed | the new batch's value |
# |---|---|---|
# | `sums`  | sum of the activations | `x[:, c].sum()` |
# | `sqrs`  | sum of their squares | `(x[:, c] ** 2).sum()` |
# | `count` | number of elements | `bs * H * W` |
#
# with the new batch's weight `mom1 = 1 - (1 - mom) / sqrt(bs - 1)`: a batch of two gets weight `mom`,
# a batch of 64 gets 0.89. From the **updated** statistics, `mean = sums / count` and
# `var = sqrs / count - mean**2`, and the layer outputs `(x - mean) / sqrt(var + eps) * mults + adds`
# in training and in eval. For a batch of $N$ examples of $H \times W$ maps, with $m_1$ = `mom1`:
#
# $$s_c = \sum_{n,h,w} x_{nchw}, \qquad q_c = \sum_{n,h,w} x_{nchw}^2, \qquad
# \text{sums}_c \leftarrow (1 - m_1)\,\text{sums}_c + m_1 s_c \ \text{(likewise sqrs with } q_c
# \text{, count with } NHW\text{)},$$
#
# $$\mu_c = \frac{\text{sums}_c}{\text{count}}, \qquad \sigma_c^2 = \frac{\text{sqrs}_c}{\text{count}} - \mu_c^2,
# \qquad y_{nchw} = \frac{x_{nchw} - \mu_c}{\sqrt{\sigma_c^2 + \epsilon}}\,\text{mults}_c + \text{adds}_c .$$
#
# The stub below states every detail; the tests check each one in float64.

# %% [solution id=running_batchnorm]
class RunningBatchNorm(nn.Module):
    """BatchNorm for small batches: normalise with smoothed per-channel sums, squares and counts.

    Input (bs, nf, H, W), any float dtype; output: same shape and dtype.
    Parameters: `mults` (ones) and `adds` (zeros), nn.Parameter of shape (nf, 1, 1).
    Buffers (register_buffer, zeros, float so they follow .double()): `sums` and `sqrs` of shape
    (1, nf, 1, 1), `count` (elements per channel) and `batch` (examples seen) of shape ().
    Training (self.training), at every forward pass:
      1. s, ss = per-channel sum of x and of x*x over (batch, H, W); c = bs * H * W;
         mom1 = 1 - (1 - mom) / sqrt(max(bs - 1, 1))   # bs=1 uses the bs=2 weight, mom: sqrt(0) never divides
         sums, sqrs, count = lerp towards s, ss, c with weight mom1; batch += bs.
      2. Normalise with the UPDATED statistics. Gradients flow through this batch's share of them (as in
         BatchNorm); the stored buffers are detached (no autograd history kept from one step to the next).
    Eval: use the stored statistics; never change a buffer.
    Both modes: mean = sums / count, var = max(sqrs / count - mean**2, 0)   (rounding can go below 0);
      var = max(var, 0.01) while batch < 20 (fewer than 20 examples seen, this batch included);
      a layer that has seen no training batch (count == 0) uses mean 0 and var 1;
      output = (x - mean) / sqrt(var + eps) * mults + adds.
    No "debias" factor. Do the math with tensor operations (no torch batch_norm / nn.BatchNorm2d).
    """

    def __init__(self, nf: int, mom: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        ### BEGIN SOLUTION
        self.mom, self.eps = mom, eps
        self.mults = nn.Parameter(torch.ones(nf, 1, 1))
        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))
        self.register_buffer("sums", torch.zeros(1, nf, 1, 1))
        self.register_buffer("sqrs", torch.zeros(1, nf, 1, 1))
        self.register_buffer("count", torch.tensor(0.0))
        self.register_buffer("batch", torch.tensor(0.0))
        ### END SOLUTION

    def forward(self, x: Tensor) -> Tensor:
        ### BEGIN SOLUTION
        sums, sqrs, count = self.sums, self.sqrs, self.count
        if self.training:
            bs, nf = x.shape[0], x.shape[1]
            dims = (0, 2, 3)
            mom1 = 1 - (1 - self.mom) / math.sqrt(max(bs - 1, 1))
            # Keep this step's graph for the output, but store detached copies for the next step.
            sums = torch.lerp(sums, x.sum(dims, keepdim=True), mom1)
            sqrs = torch.lerp(sqrs, (x * x).sum(dims, keepdim=True), mom1)
            count = torch.lerp(count, count.new_tensor(x.numel() / nf), mom1)
            self.sums, self.sqrs, self.count = sums.detach(), sqrs.detach(), count.detach()
            self.batch += bs
        if self.count == 0:  # nothing seen yet: behave as mean 0, variance 1 instead of 0/0
            mean, var = torch.zeros_like(sums), torch.ones_like(sums)
        else:
            mean = sums / count
            var = (sqrs / count - mean * mean).clamp_min(0)
        if self.batch < 20:
            var = var.clamp_min(0.01)
        return (x - mean) / (var + self.eps).sqrt() * self.mults + self.adds
        ### END SOLUTION

# %% [demo]
# Check that it does: a batch of 2 and then eval; the statistics it keeps and a batch of one example.
rbn = RunningBatchNorm(3)
x = torch.randn(2, 3, 4, 4) * 2 + 1
out = rbn(x)
print("train output mean/std per channel:", out.mean((0, 2, 3)), out.std((0, 2, 3)))
print("sums", rbn.sums.flatten(), "count", rbn.count, "examples seen", rbn.batch)
print("a batch of one example:", rbn(torch.randn(1, 3, 1, 1)).flatten())
print("eval, finite:", torch.isfinite(rbn.eval()(x)).all().item(),
      "| untrained eval, finite:", torch.isfinite(RunningBatchNorm(3).eval()(x)).all().item())

# %% [test id=test_rbn_state points=1]
"""RunningBatchNorm keeps mults/adds as parameters and sums/sqrs/count/batch as registered buffers, each layer its own."""
from course_lib.checks import student_checks

with student_checks():
    layer = RunningBatchNorm(4)
    assert isinstance(layer.mults, nn.Parameter) and layer.mults.shape == (4, 1, 1), "mults: nn.Parameter of shape (nf, 1, 1)"
    assert isinstance(layer.adds, nn.Parameter) and layer.adds.shape == (4, 1, 1), "adds: nn.Parameter of shape (nf, 1, 1)"
    for name in ("sums", "sqrs", "count", "batch"):
        assert name in dict(layer.named_buffers()), f"{name} must be a registered buffer (self.register_buffer)"
    assert layer.sums.shape == (1, 4, 1, 1) and layer.count.shape == (), "sums: (1, nf, 1, 1); count: a 0-dim tensor"
    for name in ("sums", "sqrs", "count", "batch"):
        assert getattr(layer, name).dtype == torch.float32, (
            f"a new layer's {name} should be float32, like its parameters (torch.zeros(...) or torch.tensor(0.0)); it is "
            f"{getattr(layer, name).dtype}")
    for name in ("sums", "sqrs", "count", "batch"):
        assert getattr(layer.double(), name).dtype == torch.float64, (
            f"{name} should be a float buffer (torch.zeros(...) or torch.tensor(0.0)), so that .double() converts it")
    x = torch.randn(2, 4, 1, 1) * 0.01  # a tiny variance: the 0.01 floor decides the output
    first = RunningBatchNorm(4)(x)
    other = RunningBatchNorm(4)
    for _ in range(5):
        other(torch.randn(8, 4, 1, 1))
    again = RunningBatchNorm(4)(x)
    assert torch.allclose(first, again), (
        "two new layers gave different outputs for the same first batch, one before and one after another layer "
        "trained: keep each layer's state in its own buffers, not in a class or global variable")
### BEGIN HIDDEN TESTS
from course_recorder import q9

q9.state(RunningBatchNorm)
### END HIDDEN TESTS

# %% [test id=test_rbn_training_math points=3]
"""In training RunningBatchNorm normalises with the smoothed statistics: outputs and buffers, step by step."""
from course_lib.checks import student_checks

with student_checks():
    layer = RunningBatchNorm(2)
    x = torch.tensor([[[[1.0]], [[2.0]]], [[[3.0]], [[6.0]]]])  # bs=2, 2 channels, 1x1 maps
    out = layer(x)
    assert out.shape == x.shape and torch.isfinite(out).all(), "output: same shape as the input, finite"
    # float(...) and .double(): these compare values; the dtypes are test_rbn_state's business
    assert abs(float(layer.count) - 0.2) < 1e-6, (
        f"count after one batch of 2 elements: lerp(0, 2, mom1) = 0.2 with mom1 = 1 - (1 - mom) / sqrt(bs - 1) = 0.1; "
        f"got {float(layer.count):.4g}")
    assert torch.allclose(layer.sums.flatten().double(), torch.tensor([0.4, 0.8], dtype=torch.float64)), (
        f"sums after one batch: [0.4, 0.8]; got {layer.sums.flatten()}")
    assert torch.allclose(out.flatten().double(), torch.tensor([-1.0, -1.0, 1.0, 1.0], dtype=torch.float64), atol=1e-4), (
        "one batch: (x - mean) / sqrt(var + eps) = -1, +1, with the biased variance var = sqrs/count - mean**2")
    assert float(layer.batch) == 2, "batch counts the examples seen"
    wide = RunningBatchNorm(2, eps=0.5)
    out = wide(x)  # channel 0 holds 1, 3 (mean 2, variance 1); channel 1 holds 2, 6 (mean 4, variance 4)
    assert torch.allclose(out.flatten().double(), torch.tensor([-1 / 1.5 ** 0.5, -2 / 4.5 ** 0.5, 1 / 1.5 ** 0.5,
                                                                 2 / 4.5 ** 0.5], dtype=torch.float64), atol=1e-4), (
        f"with eps=0.5 the output is (x - mean) / sqrt(var + eps): -0.816, -0.943, 0.816, 0.943; got {out.flatten()} "
        f"(eps outside the square root, (x - mean) / (sqrt(var) + eps), gives -0.667 for the first)")
    five = RunningBatchNorm(1)
    five(torch.randn(5, 1, 1, 1))
    assert abs(float(five.count) - 2.75) < 1e-6, (
        f"count after one batch of 5 examples: lerp(0, 5, mom1) = 2.75 with mom1 = 1 - (1 - mom) / sqrt(bs - 1) = 0.55 "
        f"(not mom itself); got {float(five.count):.4g}")
    # Five identical batches of 4 examples with a tiny variance (1.25e-4): the smoothed mean and variance are the
    # batch's own, so the variance is floored at 0.01 while fewer than 20 examples have been seen, this batch included
    # (steps 1-4: 4, 8, 12, 16 examples), and not at step 5 (20 examples).
    tiny = torch.tensor([1.0, 1.01, 1.02, 1.03], dtype=torch.float64).view(4, 1, 1, 1)
    floored = RunningBatchNorm(1).double()
    for step in range(1, 6):
        first = floored(tiny)[0].item()
        want = -0.015 / (0.01 + 1e-5) ** 0.5 if step < 5 else -0.015 / (1.25e-4 + 1e-5) ** 0.5
        assert abs(first - want) < 1e-3, (
            f"step {step} ({4 * step} examples seen): the first output should be {want:.4f} (variance "
            f"{'floored at 0.01' if step < 5 else 'no longer floored: 20 examples seen'}); got {first:.4f}. The floor "
            f"var = max(var, 0.01) applies while batch < 20, counting examples (not steps), this batch included.")
### BEGIN HIDDEN TESTS
from course_recorder import q9

q9.training_math(RunningBatchNorm)
### END HIDDEN TESTS

# %% [test id=test_rbn_eval points=2]
"""In eval RunningBatchNorm uses the stored statistics, changes no buffer, and an untrained layer gives x/sqrt(1+eps)."""
from course_lib.checks import student_checks

with student_checks():
    x = torch.randn(4, 3, 2, 2)
    layer = RunningBatchNorm(3)
    layer(x)
    sums = layer.eval().sums.clone()
    layer(x)
    assert torch.equal(layer.sums, sums), "eval must not update the buffers (they changed during an eval forward pass)"
    out = RunningBatchNorm(3).eval()(x)
    assert torch.isfinite(out).all(), "an untrained layer in eval must not return NaN"
    assert torch.allclose(out.double(), x.double() / math.sqrt(1 + 1e-5)), "an untrained layer behaves as mean 0, variance 1"
### BEGIN HIDDEN TESTS
from course_recorder import q9

q9.eval_probe(RunningBatchNorm)
### END HIDDEN TESTS

# %% [test id=test_rbn_batch_of_one points=1]
"""A batch of one example neither crashes nor gives NaN, and follows the stub's rule for mom1."""
from course_lib.checks import student_checks

with student_checks():
    layer = RunningBatchNorm(3)
    for _ in range(3):
        out = layer(torch.randn(1, 3, 1, 1))
        assert torch.isfinite(out).all(), "a batch of one example must give a finite output"
    assert abs(float(layer.count) - (1 - 0.9 ** 3)) < 1e-6, "bs=1 uses mom1 = mom (as bs=2): count = 1 - 0.9**3"
### BEGIN HIDDEN TESTS
from course_recorder import q9

q9.batch_of_one(RunningBatchNorm)
### END HIDDEN TESTS

# %% [test id=test_rbn_gradients points=2]
"""The stored state is detached every step, and gradients in training match the contract (float64)."""
from course_lib.checks import check_running_batchnorm, student_checks

with student_checks():
    layer = RunningBatchNorm(3)
    for _ in range(3):
        x = torch.randn(4, 3, 2, 2, requires_grad=True)
        out = layer(x)
        assert not layer.sums.requires_grad and layer.sums.grad_fn is None, "the stored sums must be detached every step"
        out.pow(2).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all(), "gradients reach the input"

check_running_batchnorm(RunningBatchNorm, "gradients")  # stands aside when graded, as student_checks does
### BEGIN HIDDEN TESTS
from course_recorder import q9

q9.gradients_probe(RunningBatchNorm)
### END HIDDEN TESTS

# %% [markdown]
# ## Part B (3 points autograded, 2 written) — training with batches of two
#
# The lesson trained with **two** images per batch for one epoch: 25,000 steps, too long for this
# notebook. Here one epoch runs over the **first 2,000 training images** (1,000 steps; 200 images when the
# notebook is graded), validated on the 10,000 validation images (1,024 when graded), with `nn.BatchNorm2d`
# and with your `RunningBatchNorm`, lr 0.4, from the same initial weights and on the same batches.
#
# **Predict before you run** (not graded): write down the validation loss and accuracy you expect for each
# layer after this epoch. For scale: a network that guesses uniformly has loss ln 10 = 2.30 and accuracy
# about 0.10.

# %% [experiment]
small_n = 200 if grading_mode() else 2000
results, trained = {}, {}
for name, norm in (("nn.BatchNorm2d", nn.BatchNorm2d), ("RunningBatchNorm", RunningBatchNorm)):
    set_seed(0)
    learn, run = get_learn_run(nfs, mnist_data(2, small_n), 0.4, conv_layer, cbs=callbacks(), norm=norm)
    run.fit(1, learn)
    results[name], trained[name] = run, learn.model  # Part D recalibrates the nn.BatchNorm2d model
for name, run in results.items():
    row = run.avg_stats.history[-1]
    print(f"bs=2, {name:17s} valid loss {row['valid_loss']:10.3f}  valid accuracy {row['valid_accuracy']:.3f}")
fig, ax = plt.subplots(figsize=(6, 3))
for name, run in results.items():
    run.recorder.plot_loss(ax=ax)
ax.legend(list(results))
ax.set_title("training loss at batch size 2");

# %% [markdown]
# ### What each layer normalises with
#
# Now watch one channel of one norm layer while the CNN with your `RunningBatchNorm` trains on 40 batches of
# two images (lr 0.4). After every step the cell records, for channel 0 of the last block's norm (its input
# is a 1x1 map, so a batch of two holds **two values** of each channel):
# - **this batch's** mean and variance (the biased one): what `nn.BatchNorm2d` normalises with in training;
# - your layer's **smoothed** mean and variance, read from its buffers: `sums / count` and
#   `sqrs / count - mean**2` as Part A defines them (before the stub's floors), what your layer normalises
#   with, in training and in eval;
# - `running_mean` and `running_var` of an `nn.BatchNorm2d` that is fed the same inputs in training mode (its
#   output is not used): what `nn.BatchNorm2d` normalises with in **eval**. It smooths with weight
#   `momentum = 0.1`, the same as your layer's `mom1` at batch size 2, and stores the unbiased variance,
#   n/(n - 1) times the biased one (PyTorch's `nn.BatchNorm2d` documentation).
#
# Change `block` (0 to 4) or `channel` to look at another layer or channel.
#
# **Predict before you run** (not graded): in each panel, how far do you expect a batch of two to stray from
# the smoothed curves: a factor of 2, of 10, of 1,000? Will the smoothed variances sit above or below most
# of the batch variances?

# %% [experiment]
block, channel, steps = 4, 0, 40
set_seed(0)
model = init_cnn(get_cnn_model(data, nfs, conv_layer, norm=RunningBatchNorm))
layer = model[block][2]  # the block is conv, GeneralRelu, norm
watcher = nn.BatchNorm2d(nfs[block])  # sees the same inputs as your layer; keeps running_mean / running_var
inputs = []
hook = layer.register_forward_hook(lambda module, args, output: inputs.append(args[0].detach()))
opt = torch.optim.SGD(model.parameters(), lr=0.4)
series = {what: {"this batch": [], "RunningBatchNorm": [], "nn.BatchNorm2d running": []}
          for what in ("mean", "variance")}
for i in range(steps):
    xb, yb = x_train[2 * i:2 * i + 2].view(-1, 1, 28, 28), y_train[2 * i:2 * i + 2]
    F.cross_entropy(model(xb), yb).backward()
    opt.step()
    opt.zero_grad()
    seen = inputs.pop()
    with torch.no_grad():
        watcher(seen)  # training mode: updates running_mean and running_var
    values = seen[:, channel]
    mean = float(layer.sums.flatten()[channel] / layer.count)
    for what, batch, smoothed, running in (
            ("mean", values.mean(), mean, watcher.running_mean[channel]),
            ("variance", values.var(correction=0), float(layer.sqrs.flatten()[channel] / layer.count) - mean ** 2,
             watcher.running_var[channel])):
        for name, value in zip(series[what], (batch, smoothed, running)):
            series[what][name].append(float(value))
hook.remove()

labels = {"this batch": "this batch (nn.BatchNorm2d, training)",
          "RunningBatchNorm": "your RunningBatchNorm (training and eval)",
          "nn.BatchNorm2d running": "nn.BatchNorm2d running_mean / running_var (eval)"}
fig, axes = plt.subplots(1, 2, figsize=(12, 3.8))
for ax, (what, curves) in zip(axes, series.items()):
    for name, values in curves.items():
        ax.plot(values, ".-" if name == "this batch" else "-", lw=0.8 if name == "this batch" else 2,
                label=labels[name])
    ax.set(title=f"block {block}, channel {channel}: {what}", xlabel="training step (batches of 2 images)")
axes[1].set_yscale("log", nonpositive="mask")
axes[1].set_title(f"block {block}, channel {channel}: variance (log scale)")
axes[0].legend(fontsize=8)
plt.show()
for what, curves in series.items():
    for name, values in curves.items():
        v = torch.tensor(values)
        print(f"{what:8s} {name:23s} min {v.min():9.3g}  median {v.median():9.3g}  max {v.max():9.3g}")

# %% [markdown]
# **Written (2 points).** Answer from **your own** plot and printouts:
# 1. How far apart are this batch's variance (what `nn.BatchNorm2d` divides by in training) and its
#    `running_var` (what it divides by in eval)? Quote numbers. How do the batch means compare with
#    `running_mean`?
# 2. What does that mean for a network trained with `nn.BatchNorm2d` at batch size 2 when it is evaluated,
#    and for the validation losses the first experiment printed? Why does your layer not have this gap?

# %% [answer id=rbn_batch_stats points=2]
# **1. What the plot shows** (block 4, channel 0, the full data; two values per channel in each batch).
# This batch's variance jumps from step to step over six orders of magnitude, from 7.3e-6 to 10.3 (median
# 0.023), while `running_var` stays between 0.62 and 2.9 (median 1.2): the median batch variance is about 50
# times smaller. The batch means jump between -1.4 and 5.7 (median -0.63) while `running_mean` stays between
# -0.46 and 0.67. My layer's smoothed mean is smooth too, and close to `running_mean` after about 20
# steps (before that `running_mean` still remembers its starting 0, while `sums / count` is not pulled
# towards 0: the count is smoothed alike). Its variance (median 3.4) is even above `running_var`, because
# `sqrs / count - mean**2` also counts how much the batch means vary, which an average of within-batch
# variances leaves out (Part C, question 1).
#
# **2. What it means.** In training `nn.BatchNorm2d` divides by the square root of the batch's variance:
# with two values per channel its output is about ±1 whatever they are (unless they nearly coincide), i.e.
# it only tells the next layer which of the two images is larger, and the next layers learn from that. In
# eval it subtracts `running_mean` and divides by `sqrt(running_var)`, typically about 7 times more
# (sqrt(50)), around another mean: the layers after it get inputs unlike anything they were trained on.
# Hence its validation loss of 81677 (accuracy 0.165, little better than guessing) against 1.33 (0.624) with
# RunningBatchNorm in the first experiment. My layer normalises with the smoothed curves in training and in
# eval alike (in training they include the current batch, with weight mom1 = 0.1 at batch size 2), so
# evaluation sees the normalisation the network was trained with, and no batch of two can move it far.
#
# **Mark scheme** (2 points)
# - 1 point: a correct reading of the student's own plot or printout with at least one number: the batch
#   variance is mostly far below `running_var` (orders of magnitude) and jumps from step to step; the batch
#   means jump around a much smoother `running_mean`. Seeds and data are fixed, so the full-data numbers
#   should match the model answer's (the grading subset gives others); accept any correct reading,
#   including of another block or channel if the student changed them and says so.
# - 1 point: `nn.BatchNorm2d` trains with the batch statistics and evaluates with the running ones, which
#   differ a lot at batch size 2, so the network meets a normalisation in eval it never trained with: this
#   explains its huge validation loss against RunningBatchNorm's; RunningBatchNorm uses (nearly) the same
#   smoothed statistics in both modes. Half a point for the train/eval difference without the link to the
#   validation loss, or for "the batch statistics are noisy" without the train/eval difference.

# %% [markdown]
# **What to check** (after answering): the lesson's full epoch (25,000 steps of two images, a plain ReLU, on
# a GPU) printed a validation loss of 2867.7 and accuracy 0.2604 with `nn.BatchNorm2d`, and 0.0986 and
# 0.9730 with its RunningBatchNorm.

# %% [markdown]
# ### Bigger batches
#
# The lesson's last run: batch size 32, one epoch, the learning rate falling linearly from 1.0 to 0.2
# (`ParamScheduler` with `sched_lin(1., 0.2)` overrides the 0.9 it passed to `get_learn_run`), a plain ReLU,
# the full data on a GPU: validation loss 0.0924, accuracy 0.9818. The cell below runs it with this
# notebook's block (the full data on your CPU; the 4,096-image subset when the notebook is graded, which
# scores lower). The lesson never trained `nn.BatchNorm2d` in this setting; measured for this course
# (`bench/measure_rbn_bs32.py`: this notebook's block and data, the contract's RunningBatchNorm, seeds 0, 1
# and 2, one CPU thread, one run each) `nn.BatchNorm2d` reached validation accuracy 0.9790, 0.9807 and 0.9829,
# RunningBatchNorm 0.9781, 0.9808 and 0.9764: at this batch size the two are close, and RunningBatchNorm is no
# better.

# %% [experiment]
set_seed(0)
learn, run = get_learn_run(nfs, mnist_data(32), 1.0, conv_layer, norm=RunningBatchNorm,
                           cbs=callbacks() + [partial(ParamScheduler, "lr", sched_lin(1.0, 0.2))])
run.fit(1, learn)
row = run.avg_stats.history[-1]
print(f"bs=32 RunningBatchNorm: valid loss {row['valid_loss']:.4f}  valid accuracy {row['valid_accuracy']:.4f}")
run.recorder.plot_lr();

# %% [test id=test_rbn_trains_at_bs2 points=2]
"""The lesson's CNN with RunningBatchNorm trains at batch size 2 like the reference layer (30 paired steps)."""
from course_lib.checks import student_checks

with student_checks():
    model = init_cnn(get_cnn_model(data, nfs, conv_layer, norm=RunningBatchNorm))
    xb = x_train[:2].view(-1, 1, 28, 28)
    loss = F.cross_entropy(model(xb), y_train[:2])
    loss.backward()
    assert torch.isfinite(loss), "the loss of one step at batch size 2 must be finite"
### BEGIN HIDDEN TESTS
from course_recorder import q9

q9.trains_at_bs2(lambda: init_cnn(get_cnn_model(data, nfs, conv_layer, norm=RunningBatchNorm)))
### END HIDDEN TESTS

# %% [test id=test_bs2_batchnorm_collapses points=1]
"""At batch size 2, nn.BatchNorm2d's validation loss is far worse than RunningBatchNorm's."""
from course_lib.checks import student_checks

with student_checks():
    model = init_cnn(get_cnn_model(data, nfs, conv_layer, norm=RunningBatchNorm))
    model(x_train[:2].view(-1, 1, 28, 28))  # one training step's statistics (test_rbn_eval checks an untrained layer)
    with torch.no_grad():
        out = model.eval()(x_valid[:8].view(-1, 1, 28, 28))
    assert torch.isfinite(out).all(), "a model with RunningBatchNorm gives finite outputs in eval after a training step"
### BEGIN HIDDEN TESTS
from course_recorder import q9

q9.bs2_collapses(lambda: init_cnn(get_cnn_model(data, nfs, conv_layer, norm=RunningBatchNorm)))
### END HIDDEN TESTS

# %% [markdown]
# ## Part C (3 points) — why it works
#
# Answer in a few sentences each:
# 1. Why does the layer smooth the **sums, sums of squares and counts** rather than keep running
#    averages of each batch's mean and variance?
# 2. The lesson also divided `sums`, `sqrs` and `count` by a "debias" factor
#    `dbias = 1 - (1 - mom1_1)(1 - mom1_2)...` during its first 100 steps (`if self.step < 100`). Why does that
#    change nothing?
# 3. Why does this help small batches, where BatchNorm fails?

# %% [answer id=rbn_written points=3]
# **1. Sums and counts, not means and variances.** BatchNorm (Ioffe & Szegedy, 2015) estimates the
# statistics of all the activations a channel produces. Averaging per-batch means and variances does
# not give those: every batch would weigh the same however many elements it has (the last, smaller
# batch; a 1x1 map with bs=2 has 2 elements per channel, a 14x14 map 392), and an average of
# within-batch (biased) variances leaves out how much the batch means themselves vary, which is exactly
# what a tiny batch gets wrong (the biased variance of 2 independent values is on average half the true
# one). Smoothing the sums, squares and counts and dividing at the end gives the mean and variance of the *pooled*
# (exponentially weighted) data: each element counts once, and `var = E[x²] - E[x]²` includes the
# spread between batches.
#
# **2. The debias factor cancels.** All three statistics start at 0 and are lerped with the same
# weights, so after k steps `sums = Σ w_i s_i`, `sqrs = Σ w_i ss_i`, `count = Σ w_i c_i` with the
# same w_i, whose total is `dbias = 1 - Π(1 - mom1_i)`. Dividing all three by dbias rescales numerator
# and denominator of `mean = sums/count` and of `sqrs/count` by the same number: the ratios, and hence
# the normalisation, are unchanged. The count already *is* the debias correction (the same trick Adam's
# bias correction does explicitly, here built in because we divide by a smoothed count).
#
# **3. Why it helps small batches.** With bs=2 BatchNorm normalises each batch with two images'
# statistics: noisy, and on small maps degenerate (on the 1x1 map two values per channel become about ±1
# unless they nearly coincide), so the network learns to depend on that noise and on its batch mate. At
# inference it sees the running averages instead, a different normalisation: the validation loss explodes
# (the lesson's 2868; Part B's plot shows the gap). RunningBatchNorm normalises in training with nearly the
# smoothed statistics it uses in eval (in training they include the current batch, with weight mom1), so
# there is no train/inference mismatch; each tiny batch only nudges them (mom1 is small when bs is small,
# large when the batch's own estimate is reliable); and the 0.01 floor on the variance keeps the first steps,
# when only a handful of examples have been seen, from dividing by a near-zero variance. Other answers
# to small batches: Batch Renormalization (Ioffe 2017), and statistics that do not use the batch at
# all — LayerNorm (Ba, Kiros & Hinton, 2016), InstanceNorm (Ulyanov, Vedaldi & Lempitsky, 2016),
# GroupNorm (Wu & He, 2018).
#
# **Mark scheme** (3 points, one per question)
# - 1 point: pooled statistics — batches weighted by their number of elements and/or the between-batch
#   variation of the mean is kept (an average of batch variances misses it / small batches bias it).
# - 1 point: sums, squares and count share the same weights, so the debias factor divides numerator and
#   denominator alike and cancels in sums/count and sqrs/count.
# - 1 point: the same (smoothed) statistics in training and eval remove the train/inference mismatch
#   and the noise of tiny batches (small mom1 for small bs; variance floor early on). Half a point for
#   "less noise" without the train/eval consistency.

# %% [markdown]
# ## Part D (5 points) — recalibrating running statistics
#
# `nn.BatchNorm2d`'s running statistics are exponential averages collected **while the weights changed**: the
# early batches saw other weights, and at batch size 2 every batch's statistics are noisy. Once training is
# over the weights are fixed, so the statistics can simply be computed again: run some training batches through
# the trained network in training mode, with no parameter update, and average each layer's batch statistics.
# Wu & Johnson (2021, *Rethinking "Batch" in BatchNorm*, arXiv:2105.07576, §3) call this **Precise BatchNorm**;
# `torch.optim.swa_utils.update_bn` does the same for weight-averaged models. PyTorch's BatchNorm averages
# cumulatively when `momentum=None`: after $k$ batches `running_mean` is the mean of the $k$ batch means and
# `running_var` the mean of the $k$ **unbiased** batch variances (the `nn.BatchNorm2d` documentation: the
# running variance uses the unbiased estimator).
#
# Write `recalibrate_bn` as its stub says (do not call `update_bn`: it restores only the model's own mode,
# and the test checks every submodule's).

# %% [solution id=recalibrate_bn]
def recalibrate_bn(model: nn.Module, batches) -> nn.Module:
    """Recompute every BatchNorm layer's running statistics as a cumulative average over `batches`.

    model: any nn.Module; the layers concerned are its modules that are torch's BatchNorm layers
      (nn.modules.batchnorm._BatchNorm: BatchNorm1d/2d/3d) with track_running_stats.
    batches: an iterable of input tensors (a list or a generator: iterate it once), each passed as model(x).
    1. No batch at all: raise ValueError, before changing anything.
    2. For each such layer: reset_running_stats() (mean 0, var 1, num_batches_tracked 0) and momentum = None
       (PyTorch's cumulative average: running_mean = the average of the batch means, running_var = the average
       of the unbiased batch variances, num_batches_tracked = the number of batches).
    3. Run every batch through the model in training mode (model.train(): every submodule) under torch.no_grad().
    4. Restore each layer's own momentum and every module's own training flag (a submodule may have been in eval
       while the model was not). No parameter changes: no optimizer, no backward, no .grad.
    A model without BatchNorm is left as it was (its parameters and modes). Returns the model itself.
    Do not call torch.optim.swa_utils.update_bn.
    """
    ### BEGIN SOLUTION
    it = iter(batches)
    first = next(it, None)
    if first is None:
        raise ValueError("recalibrate_bn needs at least one batch")
    norms = [m for m in model.modules()
             if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    momenta = [m.momentum for m in norms]
    modes = [(m, m.training) for m in model.modules()]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    with torch.no_grad():
        model(first)
        for x in it:
            model(x)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    for m, mode in modes:
        m.training = mode
    return model
    ### END SOLUTION

# %% [test id=test_recalibrate_bn points=3]
"""recalibrate_bn: cumulative statistics over the batches, momentum and every module's mode restored, no parameter
changed, no gradients, ValueError without batches."""
from course_lib.checks import check_recalibrate_bn

check_recalibrate_bn(recalibrate_bn)  # every aspect; stands aside when graded
### BEGIN HIDDEN TESTS
from course_recorder import q9

q9.recalibrate(recalibrate_bn)
### END HIDDEN TESTS

# %% [markdown]
# ### How much of the collapse was stale statistics?
#
# The cell below takes Part B's network trained at batch size 2 with `nn.BatchNorm2d`, evaluates it on the
# validation images, recalibrates it with your `recalibrate_bn` on training images in batches of 64 (512 images;
# 256 when graded) and evaluates it again, next to the RunningBatchNorm network of Part B.
#
# **Predict before you run** (not graded): after recalibration, will the BatchNorm network's validation loss
# fall to about RunningBatchNorm's, land in between, stay where it is, or rise?

# %% [experiment]
def evaluate(model: nn.Module) -> tuple[float, float]:
    """Validation loss and accuracy of `model` in eval mode on the first 2,000 validation images."""
    n = min(2000, len(x_valid))
    device = next(model.parameters()).device
    model.eval()
    with torch.no_grad():
        out = torch.cat([model(x_valid[i:min(i + 500, n)].view(-1, 1, 28, 28).to(device))
                         for i in range(0, n, 500)]).cpu()
    return F.cross_entropy(out, y_valid[:n]).item(), accuracy(out, y_valid[:n]).item()


bn_model = trained["nn.BatchNorm2d"]
n_recal = 256 if grading_mode() else 512
device = next(bn_model.parameters()).device
scores = {"nn.BatchNorm2d, bs=2": evaluate(bn_model)}
recalibrate_bn(bn_model, (x_train[i:i + 64].view(-1, 1, 28, 28).to(device) for i in range(0, n_recal, 64)))
scores["the same, recalibrated"] = evaluate(bn_model)
scores["RunningBatchNorm, bs=2"] = evaluate(trained["RunningBatchNorm"])
for name, (loss, acc) in scores.items():
    print(f"{name:24s} valid loss {loss:10.3f}  valid accuracy {acc:.3f}")
fig, axes = plt.subplots(1, 2, figsize=(10, 3))
for ax, k, what in ((axes[0], 0, "validation loss (log scale)"), (axes[1], 1, "validation accuracy")):
    ax.bar(range(len(scores)), [v[k] for v in scores.values()], color=["C0", "C2", "C1"])
    ax.set_xticks(range(len(scores)), list(scores), fontsize=8)
    ax.set_title(what)
axes[0].set_yscale("log")
plt.show()

# %% [markdown]
# **Written (2 points).** Answer from **your own** printout and plot, and compare with your prediction:
# 1. What did recalibration do to the `nn.BatchNorm2d` network's validation loss and accuracy? Quote numbers, and
#    compare them with RunningBatchNorm's.
# 2. What does that tell you about the cause of the batch-of-two collapse: were the running statistics the
#    problem? Why does RunningBatchNorm not have it?

# %% [answer id=q9_recalibration_reading points=2]
# **1. What it did** (the full data; the graded copy runs on fewer images and gives other numbers). Before,
# the batch-of-two `nn.BatchNorm2d` network had a validation loss of 69,252 and an accuracy of 0.163; after
# recalibrating on 512 training images, 852,961 and 0.194: the accuracy moved a little, the loss did not come
# down (it rose), and both stay far from RunningBatchNorm's 1.378 and 0.609.
#
# **2. What it means.** Recalibration gives each layer the population statistics of the training images for the
# final weights: if stale running averages (collected while the weights changed) had caused the collapse, it would
# be gone. It is not, so the statistics were not the problem. In training each layer divided by **two images'**
# statistics (on the 1x1 map about ±1 whatever the values: it only says which image is larger), and the layers
# after it learned from that output; no fixed statistics, however precise, reproduce it at inference. Wu & Johnson
# (2021, *Rethinking "Batch" in BatchNorm*) separate the two issues: estimating the population statistics (§3,
# where PreciseBN fixes the exponential average's errors) and the inconsistency between normalising with a
# mini-batch in training and with population statistics at inference (§4), which grows as the batch shrinks.
# RunningBatchNorm removes the second: it normalises with (nearly) the same smoothed statistics in training and in
# eval, so there is no gap to repair.
#
# **Mark scheme** (2 points)
# - 1 point: an honest reading of the student's own printout or plot with at least one number: the loss does not
#   come down to RunningBatchNorm's (in the full run it rises, 69,252 -> 852,961; the grading subset gives other
#   numbers, e.g. 21.1 -> 2.9e8), the accuracy stays far below RunningBatchNorm's. Accept any correct reading of
#   the student's own run, and a prediction that turned out wrong if the student says so.
# - 1 point: the collapse is not (mainly) stale running statistics but the train/inference inconsistency: the
#   network trained on outputs normalised with two images' statistics, which no population statistics reproduce
#   at inference (Wu & Johnson 2021, §4); RunningBatchNorm uses the same smoothed statistics in both modes. Half a
#   point for "the statistics were not the problem" without the train/inference difference; none for
#   "recalibration fixed it" when the student's own numbers say otherwise.
