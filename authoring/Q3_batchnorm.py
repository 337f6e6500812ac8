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
bn = BatchNorm(5)
params, buffers = dict(bn.named_parameters()), dict(bn.named_buffers())
assert set(params) == {"mults", "adds"}, f"the learned parameters must be exactly mults and adds, got {sorted(params)}"
assert {"means", "vars"} <= set(buffers), (
    f"means and vars must be registered buffers (self.register_buffer), got buffers {sorted(buffers)}")
for name, shape in (("mults", (5, 1, 1)), ("adds", (5, 1, 1)), ("means", (1, 5, 1, 1)), ("vars", (1, 5, 1, 1))):
    got = tuple(getattr(bn, name).shape)
    assert got == shape, f"BatchNorm(5).{name} should have shape {shape}, got {got}"
### BEGIN HIDDEN TESTS
from course_grading.checks import require_tensor

for nf in (1, 3, 7):
    bn = BatchNorm(nf)
    starts = {"mults": torch.ones(nf, 1, 1), "adds": torch.zeros(nf, 1, 1),
              "means": torch.zeros(1, nf, 1, 1), "vars": torch.ones(1, nf, 1, 1)}
    buffers = dict(bn.named_buffers())
    for name in ("means", "vars"):
        assert name in buffers and buffers[name] is getattr(bn, name), (
            f"BatchNorm.{name} must be a registered buffer (self.register_buffer('{name}', ...)), not a plain "
            f"attribute: only buffers are saved in state_dict and follow .to(device) and .double()")
        assert not getattr(bn, name).requires_grad, f"the buffer {name} must not require gradients"
    for name, start in starts.items():
        value = require_tensor(getattr(bn, name), f"BatchNorm.{name}")
        assert tuple(value.shape) == tuple(start.shape), (
            f"BatchNorm({nf}).{name} should have shape {tuple(start.shape)}, got {tuple(value.shape)}")
        assert value.dtype == torch.float32, f"BatchNorm.{name} should start as float32, got {value.dtype}"
        if not torch.equal(value.detach(), start):
            extra = (" (you initialised the running variance to 0; it must start as ones, so an untrained layer "
                     "in eval mode leaves the scale of x unchanged)" if name == "vars" and not value.any() else "")
            raise AssertionError(f"BatchNorm.{name} must start as {'ones' if start.sum() else 'zeros'}{extra}")
    assert {"mults", "adds", "means", "vars"} <= set(bn.state_dict()), (
        f"state_dict must hold mults, adds, means and vars; it holds {sorted(bn.state_dict())}")
    bn.double()
    for name in starts:
        assert getattr(bn, name).dtype == torch.float64, f"after .double(), BatchNorm.{name} should be float64"
### END HIDDEN TESTS
print("checks passed: parameters and buffers")

# %% [test id=test_train_mode_output points=2]
"""Training mode: each channel normalised with the batch mean and biased variance over (N, H, W), then scaled and shifted."""
x_check = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 2 + 1
out_check = BatchNorm(3).double()(x_check)
assert out_check.shape == x_check.shape and torch.isfinite(out_check).all(), "BatchNorm(3) should return a finite tensor shaped like its input"
### BEGIN HIDDEN TESTS
from course_grading.checks import call_own, expect_close, random_affine, seeded_input
from course_grading.q3_checks import batch_stats, set_affine, train_mistakes

x = seeded_input(4, 3, 2, 2)
out = call_own(BatchNorm(3).double().train(), x)
assert out.shape == x.shape and out.dtype == x.dtype, (
    f"expected shape {tuple(x.shape)} and dtype float64, got {tuple(out.shape)} {out.dtype}")
assert torch.isfinite(out).all(), "the output contains NaN or inf"
mean, biased, _ = batch_stats(x)
ones, zeros = torch.ones(3, dtype=x.dtype), torch.zeros(3, dtype=x.dtype)
expect_close(out, (x - mean) / torch.sqrt(biased + 1e-5), "training-mode output of a fresh layer (mults=1, adds=0)",
             mistakes=train_mistakes(x, ones, zeros, 1e-5, 0.1))
for shape, mom, eps, seed in (((2, 3, 2, 1), 0.3, 0.5, 0), ((5, 4, 3, 3), 0.1, 1e-5, 1), ((3, 2, 1, 2), 0.1, 0.5, 2),
                              ((2, 5, 4, 3), 0.2, 1e-3, 3)):
    x = seeded_input(*shape, seed=seed)
    gamma, beta = random_affine(shape[1], seed=seed + 10)
    bn = BatchNorm(shape[1], mom=mom, eps=eps).double().train()
    set_affine(bn, gamma, beta)
    expected = F.batch_norm(x, torch.zeros(shape[1], dtype=x.dtype), torch.ones(shape[1], dtype=x.dtype),
                            gamma, beta, training=True, momentum=mom, eps=eps)
    expect_close(call_own(bn, x), expected, f"training-mode output for an input of shape {shape} with eps={eps}",
                 mistakes=train_mistakes(x, gamma, beta, eps, mom))
### END HIDDEN TESTS

# %% [test id=test_eval_mode_output points=2]
"""Eval mode: normalised with the running statistics means and vars; an untrained layer gives x / sqrt(1 + eps) * mults + adds."""
x_check = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 2 + 1
out_check = BatchNorm(3).double()(x_check)
assert out_check.shape == x_check.shape and torch.isfinite(out_check).all(), "BatchNorm(3) should return a finite tensor shaped like its input"
### BEGIN HIDDEN TESTS
from course_grading.checks import call_own, expect_close, random_affine, seeded_input
from course_grading.q3_checks import eval_mistakes, fresh_eval_mistakes, set_affine, set_running

x = seeded_input(4, 3, 2, 2)
out = call_own(BatchNorm(3).double().eval(), x)
assert out.shape == x.shape and out.dtype == x.dtype, (
    f"expected shape {tuple(x.shape)} and dtype float64, got {tuple(out.shape)} {out.dtype}")
expect_close(out, x / (1 + 1e-5) ** 0.5, "eval-mode output of an untrained layer (x / sqrt(1 + eps))",
             mistakes=fresh_eval_mistakes(x, torch.ones(3, dtype=x.dtype), torch.zeros(3, dtype=x.dtype), 1e-5))
for shape, eps, seed in (((2, 3, 2, 1), 0.5, 0), ((5, 4, 3, 3), 1e-5, 1), ((1, 3, 1, 1), 0.5, 2)):
    x = seeded_input(*shape, seed=seed)
    gamma, beta = random_affine(shape[1], seed=seed + 20)
    g = torch.Generator().manual_seed(seed + 30)
    means = torch.randn(shape[1], generator=g, dtype=torch.float64) * 2
    variances = torch.rand(shape[1], generator=g, dtype=torch.float64) * 3 + 0.2
    bn = BatchNorm(shape[1], eps=eps).double().eval()
    set_affine(bn, gamma, beta)
    expected = F.batch_norm(x, torch.zeros_like(means), torch.ones_like(variances), gamma, beta, training=False, eps=eps)
    expect_close(call_own(bn, x), expected, f"eval-mode output of an untrained layer, input shape {shape}, eps={eps}",
                 mistakes=fresh_eval_mistakes(x, gamma, beta, eps))
    set_running(bn, means, variances)
    expected = F.batch_norm(x, means, variances, gamma, beta, training=False, eps=eps)
    expect_close(call_own(bn, x), expected, f"eval-mode output with given running statistics, input shape {shape}, eps={eps}",
                 mistakes=eval_mistakes(x, means, variances, gamma, beta, eps))
### END HIDDEN TESTS

# %% [test id=test_running_statistics points=2]
"""Training updates means and vars with mom as the new batch's weight, storing the unbiased batch variance."""
x_check = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 2 + 1
out_check = BatchNorm(3).double()(x_check)
assert out_check.shape == x_check.shape and torch.isfinite(out_check).all(), "BatchNorm(3) should return a finite tensor shaped like its input"
### BEGIN HIDDEN TESTS
from course_grading.checks import call_own, expect_close, seeded_input
from course_grading.q3_checks import batch_stats, running_mistakes

x = seeded_input(4, 3, 2, 2)
bn = BatchNorm(3).double().train()  # the default mom is 0.1
call_own(bn, x)
mean, _, unbiased = batch_stats(x)
expect_close(bn.means, 0.1 * mean, "means after one step from zeros (0.1 * the batch mean)",
             mistakes=running_mistakes(x, 0.1, 1, 0))
expect_close(bn.vars, 0.9 + 0.1 * unbiased, "vars after one step from ones (0.9 + 0.1 * the unbiased batch variance)",
             mistakes=running_mistakes(x, 0.1, 1, 1))
for shape, mom, steps, seed in (((2, 3, 2, 1), 0.3, 1, 0), ((3, 4, 1, 2), 0.1, 1, 1), ((2, 3, 2, 1), 0.3, 20, 2),
                                ((4, 2, 2, 2), 0.1, 20, 3)):
    x = seeded_input(*shape, seed=seed)
    bn = BatchNorm(shape[1], mom=mom, eps=0.5).double().train()
    running_mean, running_var = torch.zeros(shape[1], dtype=x.dtype), torch.ones(shape[1], dtype=x.dtype)
    for _ in range(steps):
        call_own(bn, x)
        F.batch_norm(x, running_mean, running_var, training=True, momentum=mom, eps=0.5)
    after = f"after {steps} training step(s) with mom={mom} on an input of shape {shape}"
    expect_close(bn.means, running_mean.reshape(1, -1, 1, 1), f"running means {after}",
                 mistakes=running_mistakes(x, mom, steps, 0))
    expect_close(bn.vars, running_var.reshape(1, -1, 1, 1), f"running vars {after}",
                 mistakes=running_mistakes(x, mom, steps, 1))
# A sequence of different batches and batch sizes, against nn.BatchNorm2d's own running statistics.
bn = BatchNorm(3, mom=0.2, eps=0.5).double().train()
running_mean, running_var = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
for step, n in enumerate((2, 5, 3, 2, 4)):
    x = seeded_input(n, 3, 2, 1, seed=100 + step)
    call_own(bn, x)
    F.batch_norm(x, running_mean, running_var, training=True, momentum=0.2, eps=0.5)
expect_close(bn.means, running_mean.reshape(1, -1, 1, 1), "running means after 5 batches of different sizes, mom=0.2")
expect_close(bn.vars, running_var.reshape(1, -1, 1, 1), "running vars after 5 batches of different sizes, mom=0.2")
### END HIDDEN TESTS

# %% [test id=test_eval_leaves_buffers_alone points=1]
"""Eval mode never changes the running statistics; the mode comes from self.training, not from gradient mode."""
x_check = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 2 + 1
out_check = BatchNorm(3).double()(x_check)
assert out_check.shape == x_check.shape and torch.isfinite(out_check).all(), "BatchNorm(3) should return a finite tensor shaped like its input"
### BEGIN HIDDEN TESTS
from course_grading.checks import call_own, seeded_input

bn = BatchNorm(3).double().train()
call_own(bn, seeded_input(4, 3, 2, 2))
before = (bn.means.clone(), bn.vars.clone())
bn.eval()
call_own(bn, seeded_input(4, 3, 2, 2, seed=5))
assert torch.equal(bn.means, before[0]) and torch.equal(bn.vars, before[1]), (
    "an eval-mode forward changed the running statistics: eval mode must only read means and vars "
    "(and the mode is self.training, set by .train()/.eval(), not torch.is_grad_enabled())")
import copy

from course_grading.checks import expect_close

read_mode = " Read the mode from self.training (set by .train()/.eval()), not from torch.is_grad_enabled()."
bn = BatchNorm(4, mom=0.3, eps=0.5).double().train()
for seed in range(3):
    call_own(bn, seeded_input(3, 4, 2, 2, seed=seed))
bn.eval()
before = (bn.means.clone(), bn.vars.clone())
for shape, seed in (((3, 4, 2, 2), 7), ((1, 4, 1, 1), 8), ((6, 4, 3, 1), 9)):
    x = seeded_input(*shape, seed=seed).requires_grad_(True)
    with torch.enable_grad():
        call_own(bn, x).sum().backward()
    assert torch.equal(bn.means, before[0]) and torch.equal(bn.vars, before[1]), (
        f"an eval-mode forward (with gradients enabled) of an input of shape {shape} changed the running "
        f"statistics: eval mode must only read means and vars, bit for bit unchanged.{read_mode}")
# Training mode under torch.no_grad() is still training mode: same output and same update as with gradients.
bn.train()
twin = copy.deepcopy(bn)
x = seeded_input(3, 4, 2, 2, seed=11)
with torch.enable_grad():
    expected = call_own(twin, x).detach()
with torch.no_grad():
    out = call_own(bn, x)
if torch.equal(bn.means, before[0]):
    raise AssertionError("a training-mode forward under torch.no_grad() did not update the running statistics." + read_mode)
expect_close(out, expected, "training-mode output under torch.no_grad(), against the same layer's output with gradients",
             hint=read_mode.strip())
expect_close(bn.vars, twin.vars, "running vars after a training-mode forward under torch.no_grad()", hint=read_mode.strip())
### END HIDDEN TESTS

# %% [test id=test_gradients points=1]
"""Training-mode gradients with respect to the input, mults and adds match finite differences (gradcheck, float64)."""
x_check = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 2 + 1
out_check = BatchNorm(3).double()(x_check)
assert out_check.shape == x_check.shape and torch.isfinite(out_check).all(), "BatchNorm(3) should return a finite tensor shaped like its input"
### BEGIN HIDDEN TESTS
from course_grading.checks import call_own, random_affine, seeded_input
from course_grading.q3_checks import gradcheck_own

x = seeded_input(3, 2, 2, 2).requires_grad_(True)
bn = BatchNorm(2).double().train()
call_own(bn, x).pow(2).sum().backward()
assert x.grad is not None and bn.mults.grad is not None and bn.adds.grad is not None, (
    "after backward, x, mults and adds should all have gradients")
for shape, eps, seed in (((2, 3, 2, 1), 0.5, 0), ((3, 2, 2, 2), 1e-5, 1)):
    gamma, beta = random_affine(shape[1], seed=seed + 40)
    gradcheck_own(BatchNorm(shape[1], mom=0.3, eps=eps).double().train(), seeded_input(*shape, seed=seed), gamma, beta)
### END HIDDEN TESTS

# %% [test id=test_buffers_without_history points=1]
"""The running statistics carry no autograd history, stay registered buffers, survive a state_dict round trip and follow .double()."""
x_check = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 2 + 1
out_check = BatchNorm(3).double()(x_check)
assert out_check.shape == x_check.shape and torch.isfinite(out_check).all(), "BatchNorm(3) should return a finite tensor shaped like its input"
### BEGIN HIDDEN TESTS
from course_grading.checks import call_own, seeded_input

bn = BatchNorm(3).double().train()
assert {"means", "vars"} <= set(dict(bn.named_buffers())), "means and vars must be registered buffers (self.register_buffer)"
call_own(bn, seeded_input(4, 3, 2, 2).requires_grad_(True)).sum().backward()
for name in ("means", "vars"):
    assert not getattr(bn, name).requires_grad and getattr(bn, name).grad_fn is None, (
        f"after a training step, {name} carries autograd history: update the running statistics under "
        f"torch.no_grad() (or from detached values), or every step's graph stays in memory")
torch.manual_seed(0)
bn = BatchNorm(3, mom=0.3, eps=0.5).double().train()
weights = torch.randn(2, 3, 2, 2, dtype=torch.float64)
for step in range(20):
    x = seeded_input(2, 3, 2, 2, seed=step).requires_grad_(True)
    (call_own(bn, x) * weights).sum().backward()
for name in ("means", "vars"):
    value = getattr(bn, name)
    assert not value.requires_grad and value.grad_fn is None, (
        f"after 20 training steps, {name} carries autograd history (requires_grad/grad_fn): update the running "
        f"statistics under torch.no_grad() or from detached values")
    assert dict(bn.named_buffers()).get(name) is value, (
        f"after training, {name} is no longer the registered buffer: assign tensors to it (or update it in place), "
        f"do not replace it by something that is not a buffer")
# A state_dict round trip gives a layer with bit-identical eval outputs.
copy = BatchNorm(3, mom=0.3, eps=0.5).double()
copy.load_state_dict(bn.state_dict())
bn.eval()
copy.eval()
x = seeded_input(2, 3, 2, 2, seed=50)
assert torch.equal(call_own(bn, x), call_own(copy, x)), (
    "a layer loaded from this layer's state_dict gives different eval outputs: keep means and vars in registered buffers")
# The buffers follow .double() after training too.
bn32 = BatchNorm(3, mom=0.3).train()
call_own(bn32, seeded_input(2, 3, 2, 2, dtype=torch.float32))
bn32.double()
assert bn32.means.dtype == torch.float64 and bn32.vars.dtype == torch.float64, (
    "after training and .double(), means and vars should be float64: keep them in registered buffers")
assert call_own(bn32.eval(), x).dtype == torch.float64, "a float64 input to a .double() layer should give a float64 output"
### END HIDDEN TESTS

# %% [test id=test_clear_errors points=1]
"""ValueError for a non-4-D input, the wrong number of channels, or one value per channel in training."""
x_check = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 2 + 1
out_check = BatchNorm(3).double()(x_check)
assert out_check.shape == x_check.shape and torch.isfinite(out_check).all(), "BatchNorm(3) should return a finite tensor shaped like its input"
### BEGIN HIDDEN TESTS
from course_grading.checks import call_own
from course_grading.checks import expect_raises

expect_raises(lambda: call_own(BatchNorm(3).train(), torch.randn(1, 3, 1, 1)),
              "a training-mode input with one value per channel, shape (1, 3, 1, 1)")
expect_raises(lambda: call_own(BatchNorm(3).train(), torch.randn(4, 3)), "a 2-D input of shape (4, 3)")
expect_raises(lambda: call_own(BatchNorm(3).eval(), torch.randn(2, 3, 4)), "a 3-D input of shape (2, 3, 4) in eval mode")
expect_raises(lambda: call_own(BatchNorm(3).train(), torch.randn(2, 4, 3, 3)), "an input with 4 channels for BatchNorm(3)")
expect_raises(lambda: call_own(BatchNorm(1).train(), torch.randn(2, 3, 3, 3)), "an input with 3 channels for BatchNorm(1)")
# One example of 1x1 maps is fine in eval mode: that is what the running statistics are for.
out = call_own(BatchNorm(3).double().eval(), torch.ones(1, 3, 1, 1, dtype=torch.float64))
assert torch.isfinite(out).all(), "an eval-mode input of shape (1, 3, 1, 1) must give a finite output, not raise"
### END HIDDEN TESTS

# %% [markdown]
# ## Part B (1 point) — BatchNorm in the lesson's CNN
#
# The block below is the lesson's `conv_layer`: a convolution (no bias when a norm follows: the norm
# subtracts the channel mean, which would cancel a bias, and adds its own shift), the lesson's
# `GeneralRelu(leak=0.1, sub=0.4, maxv=6.)` and then the norm, **after** the activation. `norm` picks
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
x_check = torch.randn(8, 3, 4, 4, dtype=torch.float64) * 2 + 1
out_check = BatchNorm(3).double()(x_check)
assert out_check.shape == x_check.shape and torch.isfinite(out_check).all(), "BatchNorm(3) should return a finite tensor shaped like its input"
### BEGIN HIDDEN TESTS
from course_grading.checks import expect_curve_like, paired_losses
from course_grading.q3_checks import in_float64

# float64, so that two correct ways of writing BatchNorm give the same curve to ~1e-12.
losses, reference = paired_losses(in_float64(lesson_cnn), in_float64(partial(lesson_cnn, nn.BatchNorm2d)),
                                  steps=30, bs=64, lr=1.0)
assert all(l == l for l in losses), "the training loss became NaN"
expect_curve_like(losses, reference, "training the lesson's CNN with your BatchNorm (float64, lr 1.0, bs 64, 30 steps)",
                  rtol=0.02)
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
