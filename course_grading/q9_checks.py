"""Reference math of Q9's RunningBatchNorm for the hidden tests, and the known mistakes' outputs.

The contract (stated in the notebook's stub): in training, per channel, the sum, the sum of squares and
the element count are smoothed with `lerp(old, new, mom1)`, `mom1 = 1 - (1 - mom) / sqrt(max(bs - 1, 1))`;
the layer normalises (in training too) with mean = sums / count and var = max(sqrs / count - mean**2, 0) of the
already-updated state, var clamped to at least 0.01 while fewer than 20 examples have been seen; a layer
that has seen no training batch uses mean 0 and var 1; eval reads the state and never changes it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

CLAMP_UNTIL = 20  # examples
MIN_VAR = 0.01

# One sentence per known mistake, as a failure message ends ("This is what you get if ...").
MISTAKES = {
    "plain_mom": "you used mom itself as the new batch's weight; the contract says mom1 = 1 - (1 - mom) / sqrt(bs - 1).",
    "one_minus_missing": "you used (1 - mom) / sqrt(bs - 1) as the new batch's weight; the contract says mom1 = 1 - (1 - mom) / sqrt(bs - 1).",
    "no_clamp": "you never clamp the variance; the contract clamps it to at least 0.01 until 20 examples have been seen.",
    "clamp_forever": "you clamp the variance to at least 0.01 forever; the contract stops clamping once 20 examples have been seen.",
    "clamp_steps": "you stop clamping after 20 steps (batches); the contract counts examples: clamp while fewer than 20 examples have been seen.",
    "clamp_le": "you clamp while at most 20 examples have been seen; the contract clamps only while fewer than 20 (batch < 20).",
    "clamp_before_update": "you decide on the clamp with the examples seen before this batch; the contract counts this batch too (update first, then compare).",
    "batch_stats": "you normalised with the current batch's mean and variance; the contract normalises with the smoothed (already updated) sums, squares and count.",
    "raw_count": "you stored the current batch's element count instead of smoothing it; count must be lerped with mom1 like sums and sqrs.",
    "unbiased": "you used the unbiased variance (divide by count - 1); the contract says var = sqrs/count - mean**2 (biased).",
    "eps_outside": "you added eps to the standard deviation; the contract says divide by sqrt(var + eps).",
    "stats_detached": "you detached the current batch's statistics before normalising; gradients must flow through the batch's share of the smoothed statistics (as in BatchNorm); only the stored state is detached.",
}


def mom1_of(bs: int, mom: float) -> float:
    """The new batch's weight in the lerp; a batch of 1 uses the bs=2 value (sqrt(bs-1) would be 0)."""
    return 1 - (1 - mom) / math.sqrt(max(bs - 1, 1))


def fresh_state(nf: int, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """The state of a layer that has seen nothing."""
    return {"sums": torch.zeros(1, nf, 1, 1, dtype=dtype), "sqrs": torch.zeros(1, nf, 1, 1, dtype=dtype),
            "count": torch.zeros((), dtype=dtype), "batch": torch.zeros((), dtype=dtype),
            "step": torch.zeros((), dtype=dtype)}


def rbn_forward(x: Tensor, mults: Tensor, adds: Tensor, state: dict[str, Tensor], *, mom: float, eps: float,
                training: bool, mistake: str | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """One forward pass of the contract (or of a named mistake): the output and the new, detached state."""
    sums, sqrs, count = state["sums"], state["sqrs"], state["count"]
    batch, step = state["batch"], state["step"]
    bs, nf = x.shape[0], x.shape[1]
    batch_before = batch
    if training:
        s = x.sum((0, 2, 3), keepdim=True)
        ss = (x * x).sum((0, 2, 3), keepdim=True)
        c = torch.tensor(x.numel() / nf, dtype=x.dtype)
        if mistake == "plain_mom":
            w = mom
        elif mistake == "one_minus_missing":
            w = (1 - mom) / math.sqrt(max(bs - 1, 1))
        else:
            w = mom1_of(bs, mom)
        if mistake == "stats_detached":
            s, ss = s.detach(), ss.detach()
        sums = sums + (s - sums) * w
        sqrs = sqrs + (ss - sqrs) * w
        count = c if mistake == "raw_count" else count + (c - count) * w
        batch, step = batch + bs, step + 1
    if float(count) == 0:
        mean, var = torch.zeros_like(sums), torch.ones_like(sums)
    elif mistake == "batch_stats" and training:
        mean = x.mean((0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)
    else:
        mean = sums / count
        # Rounding can make E[x^2] - E[x]^2 slightly negative for a constant channel: never below 0.
        var = (sqrs / count - mean * mean).clamp_min(0)
        if mistake == "unbiased":
            var = var * count / (count - 1)
    seen = {"clamp_steps": step, "clamp_before_update": batch_before}.get(mistake, batch)
    clamp = {"no_clamp": False, "clamp_forever": True, "clamp_le": float(batch) <= CLAMP_UNTIL}.get(
        mistake, float(seen) < CLAMP_UNTIL)
    if clamp:
        var = var.clamp_min(MIN_VAR)
    if mistake == "eps_outside":
        out = (x - mean) / (var.sqrt() + eps)
    else:
        out = (x - mean) / (var + eps).sqrt()
    out = out * mults + adds
    new = {"sums": sums.detach(), "sqrs": sqrs.detach(), "count": count.detach(), "batch": batch.detach(),
           "step": step.detach()}
    return out, new


class ReferenceRunningBatchNorm(nn.Module):
    """The contract as a module, for paired training runs (same parameter and buffer layout as the stub)."""

    def __init__(self, nf: int, mom: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.mom, self.eps = mom, eps
        self.mults = nn.Parameter(torch.ones(nf, 1, 1))
        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))
        for name, value in fresh_state(nf, torch.float32).items():
            self.register_buffer(name, value)

    def forward(self, x: Tensor) -> Tensor:
        state = {name: getattr(self, name) for name in ("sums", "sqrs", "count", "batch", "step")}
        out, new = rbn_forward(x, self.mults, self.adds, state, mom=self.mom, eps=self.eps, training=self.training)
        for name, value in new.items():
            setattr(self, name, value)
        return out


# ---------------------------------------------------------------------------------------------
# The checks each hidden test cell runs on the student's class.
# ---------------------------------------------------------------------------------------------
import contextlib  # noqa: E402
import copy  # noqa: E402
import os  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402

import torch.nn.functional as F  # noqa: E402

from course_grading.checks import (call_own, expect_close, expect_curve_like, own_implementation,  # noqa: E402
                                   paired_losses, random_affine, seeded_input)

BUFFERS = ("sums", "sqrs", "count", "batch")
UNTRAINED = ("a layer that has seen no training batch must behave as mean 0 and variance 1 in eval, "
             "i.e. x / sqrt(1 + eps) * mults + adds (no NaN from 0/0).")


def batch_input(bs: int, nf: int, hw: tuple[int, int], seed: int) -> Tensor:
    """A float64 batch with its own offset and scale per example and channel; channel 0 has a tiny variance
    (about 1e-3), so the 0.01 clamp matters there while it is active."""
    x = seeded_input(bs, nf, *hw, seed=seed).clone()
    x[:, 0] *= 0.01
    return x


def make_layer(cls: type, nf: int, mom: float, eps: float, seed: int = 1) -> tuple[nn.Module, Tensor, Tensor]:
    """The student's layer in float64 with random, non-uniform mults and adds (and those values, (nf,1,1))."""
    layer = cls(nf, mom=mom, eps=eps).double()
    gamma, beta = random_affine(nf, seed)
    gamma, beta = gamma.view(nf, 1, 1), beta.view(nf, 1, 1)
    for name, value in (("mults", gamma), ("adds", beta)):
        param = getattr(layer, name, None)
        if not isinstance(param, nn.Parameter) or param.numel() != nf:
            raise AssertionError(f"{cls.__name__}.{name} must be an nn.Parameter with {nf} values (shape ({nf}, 1, 1))")
        with torch.no_grad():
            param.copy_(value.reshape(param.shape))
    return layer, gamma, beta


def _buffer(layer: nn.Module, name: str) -> Tensor:
    buffers = dict(layer.named_buffers(recurse=False))
    if name not in buffers:
        raise AssertionError(f"{type(layer).__name__} has no registered buffer {name!r} (use self.register_buffer); "
                             f"its buffers are {sorted(buffers)}")
    return buffers[name]


def _forward(layer: nn.Module, x: Tensor, where: str) -> Tensor:
    try:
        return call_own(layer, x)
    except AssertionError:
        raise
    except Exception as err:  # noqa: BLE001 - any crash is reported with where it happened
        raise AssertionError(f"{where}: the layer raised {type(err).__name__}: {err}") from None


def _student_trace(cls: type, sizes: list[int], nf: int, hw: tuple[int, int], mom: float, eps: float,
                   seed: int) -> tuple[nn.Module, list[tuple[str, Tensor, dict[str, Tensor]]]]:
    """Train the student's layer on the batches; (where, output, buffers) after each step."""
    layer, _, _ = make_layer(cls, nf, mom, eps)
    layer.train()
    trace = []
    for i, bs in enumerate(sizes):
        x = batch_input(bs, nf, hw, seed + i)
        where = (f"training step {i + 1} of batch sizes {sizes} (this batch: {bs} examples of shape "
                 f"{tuple(x.shape[1:])}; mom={mom}, eps={eps})")
        out = _forward(layer, x, where)
        buffers = {name: _buffer(layer, name).detach().clone() for name in BUFFERS}
        trace.append((where, out.detach(), buffers))
    return layer, trace


def _reference_trace(sizes: list[int], nf: int, hw: tuple[int, int], mom: float, eps: float, seed: int,
                     mistake: str | None = None) -> list[tuple[Tensor, dict[str, Tensor]]]:
    gamma, beta = (t.view(nf, 1, 1) for t in random_affine(nf, 1))
    state, trace = fresh_state(nf), []
    for i, bs in enumerate(sizes):
        out, state = rbn_forward(batch_input(bs, nf, hw, seed + i), gamma, beta, state, mom=mom, eps=eps,
                                 training=True, mistake=mistake)
        trace.append((out, state))
    return trace


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=1e-6, rtol=1e-5))


def check_sequences(cls: type, configs: list[dict], mistakes: tuple[str, ...] = tuple(MISTAKES)) -> nn.Module:
    """Train the student's layer on each sequence of batch sizes; after every step compare the output and the
    buffers with the contract. A mistake is named only when the student's numbers match that mistake's on
    every step of every sequence (several mistakes agree on a single step). Returns the last layer."""
    runs = []
    for cfg in configs:
        cfg = {"nf": 3, "hw": (2, 2), "mom": 0.1, "eps": 1e-5, "seed": 0, **cfg}
        layer, trace = _student_trace(cls, **cfg)
        args = {k: cfg[k] for k in ("sizes", "nf", "hw", "mom", "eps", "seed")}
        wrong = {k: _reference_trace(**args, mistake=k) for k in mistakes if k != "stats_detached"}
        runs.append((layer, trace, _reference_trace(**args), wrong))

    def matches(key: str) -> bool:
        for _, trace, _, wrong in runs:
            for (_, out, buffers), (w_out, w_state) in zip(trace, wrong[key]):
                if not _same(out, w_out) or not all(_same(buffers[n], w_state[n]) for n in ("sums", "sqrs", "count")):
                    return False
        return True

    named = [k for k in mistakes if k != "stats_detached" and matches(k)][:1]
    for layer, trace, reference, wrong in runs:
        for step, ((where, out, buffers), (expected, state)) in enumerate(zip(trace, reference)):
            expect_close(out, expected, f"the output at {where}",
                         mistakes={MISTAKES[k]: wrong[k][step][0] for k in named})
            for name in ("sums", "sqrs", "count"):
                expect_close(buffers[name], state[name], f"the buffer {name} after {where}",
                             mistakes={MISTAKES[k]: wrong[k][step][1][name] for k in named})
            seen = float(buffers["batch"])
            if seen != float(state["batch"]):
                raise AssertionError(f"the buffer batch after {where}: expected {float(state['batch']):g} examples "
                                     f"seen, got {seen:g} (add the batch size, x.shape[0], at every training step)")
    return runs[-1][0]


def check_sequence(cls: type, sizes: list[int], *, nf: int = 3, hw: tuple[int, int] = (2, 2), mom: float = 0.1,
                   eps: float = 1e-5, seed: int = 0, mistakes: tuple[str, ...] = tuple(MISTAKES)) -> nn.Module:
    """check_sequences for one sequence of batch sizes."""
    return check_sequences(cls, [{"sizes": sizes, "nf": nf, "hw": hw, "mom": mom, "eps": eps, "seed": seed}], mistakes)


def check_eval(cls: type) -> None:
    """Eval: the untrained rule, the stored state used (clamped while < 20 examples), never updated, mode
    read from self.training."""
    nf, mom, eps = 3, 0.3, 0.5
    x = batch_input(4, nf, (3, 2), seed=50)
    layer, gamma, beta = make_layer(cls, nf, mom, eps)
    layer.eval()
    out = _forward(layer, x, "an untrained layer in eval")
    expect_close(out, x / math.sqrt(1 + eps) * gamma + beta, "the eval output of a layer that has seen no training batch",
                 hint=UNTRAINED)
    for sizes in ([2, 2], [2, 3, 32, 2]):  # 4 examples seen (clamp active), then 39 (clamp over)
        layer = check_sequence(cls, sizes, nf=nf, hw=(3, 2), mom=mom, eps=eps, seed=10, mistakes=())
        state = fresh_state(nf)
        for i, bs in enumerate(sizes):
            state = rbn_forward(batch_input(bs, nf, (3, 2), 10 + i), gamma, beta, state, mom=mom, eps=eps,
                                training=True)[1]
        before = {k: v.clone() for k, v in layer.state_dict().items()}
        layer.eval()
        where = f"eval after training on batch sizes {sizes} (mom={mom}, eps={eps})"
        with torch.enable_grad():
            out = _forward(layer, x, where)
        expected = rbn_forward(x, gamma, beta, state, mom=mom, eps=eps, training=False)[0]
        wrong = {MISTAKES[k]: rbn_forward(x, gamma, beta, state, mom=mom, eps=eps, training=False, mistake=k)[0]
                 for k in ("no_clamp", "clamp_forever", "unbiased", "eps_outside")}
        wrong["you normalised with the batch's own statistics in eval; eval must use the stored averages."] = \
            rbn_forward(x, gamma, beta, fresh_state(nf), mom=mom, eps=eps, training=True)[0]
        expect_close(out, expected, f"the output in {where}", mistakes=wrong)
        for name, value in layer.state_dict().items():
            if not torch.equal(value, before[name]):
                raise AssertionError(f"{where}: the buffer {name} changed during an eval forward pass; eval must use "
                                     f"the stored averages without updating them (check self.training)")
        alone = _forward(layer, x[1:2], where)
        expect_close(alone, expected[1:2], f"one example alone in {where} (eval must not depend on batch mates)")
    # The mode comes from self.training, not from whether gradients are on.
    layer, gamma, beta = make_layer(cls, nf, mom, eps)
    layer.train()
    with torch.no_grad():
        out = _forward(layer, x, "a training step under torch.no_grad()")
    expected, state = rbn_forward(x, gamma, beta, fresh_state(nf), mom=mom, eps=eps, training=True)
    expect_close(_buffer(layer, "sums").detach(), state["sums"],
                 "the buffer sums after a training step run under torch.no_grad()",
                 hint="decide train or eval with self.training, not torch.is_grad_enabled().")


def check_batch_of_one(cls: type) -> None:
    """bs=1 (mom1 uses sqrt(max(bs-1, 1))) on 1x1 and 2x2 maps: the contract's numbers, no crash, no NaN."""
    for hw, sizes in (((1, 1), [1] * 25), ((2, 2), [1, 2, 1, 1, 3] + [1] * 16)):
        try:
            check_sequence(cls, sizes, nf=3, hw=hw, mom=0.2, eps=1e-5, seed=30,
                           mistakes=("no_clamp", "clamp_forever", "clamp_before_update", "raw_count"))
        except AssertionError as err:
            raise AssertionError(f"{err}\nThe stub's rule for a batch of one example: mom1 = 1 - (1 - mom) / "
                                 f"sqrt(max(bs - 1, 1)), i.e. the same weight as bs=2 (sqrt(0) must not divide).") from None


def check_state(cls: type) -> None:
    """Parameters and buffers as the stub says; registered (state_dict, .double()); round trip."""
    nf = 5
    layer = cls(nf)
    for name, fill in (("mults", 1.0), ("adds", 0.0)):
        param = getattr(layer, name, None)
        if not isinstance(param, nn.Parameter):
            raise AssertionError(f"{name} must be an nn.Parameter (it is learned by gradient descent); got {type(param).__name__}")
        if tuple(param.shape) != (nf, 1, 1) or not torch.all(param == fill):
            raise AssertionError(f"{name} must start as {'ones' if fill else 'zeros'} of shape ({nf}, 1, 1); "
                                 f"got shape {tuple(param.shape)}")
    shapes = {"sums": (1, nf, 1, 1), "sqrs": (1, nf, 1, 1), "count": (), "batch": ()}
    for name, shape in shapes.items():
        value = _buffer(layer, name)
        if tuple(value.shape) != shape or not torch.all(value == 0):
            raise AssertionError(f"the buffer {name} must start as zeros of shape {shape}; got shape {tuple(value.shape)}")
        if isinstance(value, nn.Parameter) or value.requires_grad:
            raise AssertionError(f"{name} is a statistic, measured from data: a buffer, not a learned parameter")
    keys = set(layer.state_dict())
    missing = {"mults", "adds", *BUFFERS} - keys
    if missing:
        raise AssertionError(f"state_dict lacks {sorted(missing)}: the state must be saved with the model")
    double = cls(nf).double()
    for name in ("sums", "sqrs", "count"):
        if _buffer(double, name).dtype != torch.float64:
            raise AssertionError(f"after .double() the buffer {name} is {_buffer(double, name).dtype}; "
                                 f"create it as a float tensor so it follows the module's dtype")
    trained = check_sequence(cls, [3, 4, 32], nf=nf, hw=(2, 3), mom=0.1, eps=1e-5, seed=40, mistakes=())
    copy_layer = make_layer(cls, nf, 0.1, 1e-5, seed=7)[0]
    copy_layer.load_state_dict(trained.state_dict())
    x = batch_input(6, nf, (2, 3), seed=41)
    trained.eval()
    copy_layer.eval()
    expect_close(_forward(copy_layer, x, "a layer loaded from a state_dict"), _forward(trained, x, "eval"),
                 "the eval output of a fresh layer loaded with a trained layer's state_dict")


def check_gradients(cls: type) -> None:
    """Stored state detached every step (20 steps with backward); gradients as the contract; gradcheck."""
    nf, mom, eps = 3, 0.3, 0.5
    layer, gamma, beta = make_layer(cls, nf, mom, eps)
    layer.train()
    for i in range(20):
        x = batch_input(2 + i % 3, nf, (2, 2), seed=60 + i).requires_grad_()
        where = f"training step {i + 1} of 20, each followed by backward()"
        try:
            out = _forward(layer, x, where)
            (out * out).sum().backward()
        except AssertionError:
            raise
        except RuntimeError as err:
            raise AssertionError(f"{where}: backward raised {err}\nThe stored state is still attached to an earlier "
                                 f"step's graph: detach it every step (store .detach()ed values).") from None
        for name in ("sums", "sqrs", "count"):
            value = _buffer(layer, name)
            if value.requires_grad or value.grad_fn is not None:
                raise AssertionError(f"after {where} the buffer {name} is attached to the autograd graph "
                                     f"(requires_grad={value.requires_grad}); the stored state must be detached every step")
    # Gradients of the third step against the contract's, computed by autograd on the reference math.
    sizes = [3, 2, 4]
    layer, gamma, beta = make_layer(cls, nf, mom, eps)
    layer.train()
    state = fresh_state(nf)
    for i, bs in enumerate(sizes[:-1]):
        x = batch_input(bs, nf, (2, 2), seed=80 + i)
        _forward(layer, x, "training")
        state = rbn_forward(x, gamma, beta, state, mom=mom, eps=eps, training=True)[1]
    template = copy.deepcopy(layer)
    x = batch_input(sizes[-1], nf, (2, 2), seed=90)
    weights = seeded_input(*x.shape, seed=91)

    def grads(out: Tensor, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        return torch.autograd.grad((out * weights).sum(), inputs, allow_unused=True)

    xs = x.clone().requires_grad_()
    out = _forward(layer, xs, "training step 3")
    mine = grads(out, (xs, layer.mults, layer.adds))
    expected, wrong = [], []
    for mistake, into in ((None, expected), ("stats_detached", wrong)):
        xr, g, b = x.clone().requires_grad_(), gamma.clone().requires_grad_(), beta.clone().requires_grad_()
        into.extend(grads(rbn_forward(xr, g, b, state, mom=mom, eps=eps, training=True, mistake=mistake)[0], (xr, g, b)))
    for name, m, e, w in zip(("the input", "mults", "adds"), mine, expected, wrong):
        if m is None:
            raise AssertionError(f"the output does not depend on {name} through autograd (was it detached?)")
        expect_close(m.reshape(e.shape) if m.numel() == e.numel() else m, e,
                     f"the gradient with respect to {name} at training step 3 (mom={mom}, eps={eps})",
                     mistakes={MISTAKES["stats_detached"]: w})

    def fresh_forward(x_in: Tensor, mults: Tensor, adds: Tensor) -> Tensor:
        fresh = copy.deepcopy(template)
        del fresh.mults, fresh.adds
        fresh.mults, fresh.adds = mults, adds
        return call_own(fresh, x_in)

    inputs = (x.clone().requires_grad_(), template.mults.detach().clone().requires_grad_(),
              template.adds.detach().clone().requires_grad_())
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.autograd.gradcheck(fresh_forward, inputs, eps=1e-6, atol=1e-6, rtol=1e-4)
    except torch.autograd.gradcheck.GradcheckError as err:
        first = str(err).splitlines()[0]
        raise AssertionError(f"gradcheck in training mode: autograd's gradient differs from the numerical one "
                             f"({first}). Use differentiable tensor operations only.") from None


@contextlib.contextmanager
def _grading_data() -> Iterator[None]:
    """The fixed grading subset, whatever mode the notebook runs in, so the check is the same everywhere."""
    saved = os.environ.get("COURSE_GRADING_MODE")
    os.environ["COURSE_GRADING_MODE"] = "1"
    try:
        with contextlib.redirect_stdout(None):
            yield
    finally:
        if saved is None:
            del os.environ["COURSE_GRADING_MODE"]
        else:
            os.environ["COURSE_GRADING_MODE"] = saved


def check_training_curve(make_model: Callable[[], nn.Module], make_reference: Callable[[], nn.Module]) -> None:
    """The lesson's CNN with the student's layer trains like the reference at bs=2 (30 paired steps)."""
    with _grading_data(), own_implementation("RunningBatchNorm"):
        try:
            losses, reference = paired_losses(make_model, make_reference, steps=30, bs=2, lr=0.1, seed=0)
        except AssertionError:
            raise
        except Exception as err:  # noqa: BLE001
            raise AssertionError(f"training the CNN with RunningBatchNorm at bs=2 raised {type(err).__name__}: {err}") from None
    expect_curve_like(losses, reference, "the CNN with your RunningBatchNorm at batch size 2 (lr 0.1, 30 steps)",
                      rtol=0.03)


def small_batch_valid_losses(make_bn: Callable[[], nn.Module], make_rbn: Callable[[], nn.Module], *,
                             steps: int = 300, seed: int = 0, lr: float = 0.2) -> tuple[float, float]:
    """Validation loss (512 fixed images, eval mode) after `steps` SGD steps at bs=2: (nn.BatchNorm2d, RBN)."""
    from course_grading.checks import _grading_batches, train_losses
    from course_lib import get_data, normalize_to

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with _grading_data():
            batches = _grading_batches(steps, 2, seed)
            x_train, _, x_valid, y_valid = get_data()
        x_valid = normalize_to(x_train, x_valid)[1][:512].view(-1, 1, 28, 28)
        results = []
        for make in (make_bn, make_rbn):
            torch.manual_seed(seed)
            model = make()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                train_losses(model, batches, lr)
            model.eval()
            with torch.no_grad():
                results.append(F.cross_entropy(model(x_valid), y_valid[:512]).item())
    finally:
        torch.set_num_threads(threads)
    return results[0], results[1]
