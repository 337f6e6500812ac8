"""Visible checks for the normalization exercises: your layer against PyTorch's own, on small seeded inputs.

The visible part of each test cell in Q3, Q6, Q7 and Q8 (and Q9's gradient test) calls one of these, e.g.
`check_groupnorm(GroupNorm, "output")`. A check raises `CheckFailed` (an AssertionError, so Validate reports
it) with a paragraph you can act on: what was compared, how far off your layer is and, when its output
matches a common mistake (the unbiased variance, eps in the wrong place, the wrong axes, the wrong mode or
momentum...), which one, in the words the grader uses for it (course_lib.mistakes).

The reference is PyTorch itself (F.batch_norm, F.layer_norm, F.instance_norm, F.group_norm). Mistakes are
recognised from those functions' outputs (called with other arguments, or on rearranged inputs) and from
shape arithmetic; nothing here implements a layer. Passing these checks is necessary, not sufficient: the
graded tests check other shapes, settings and properties.
"""

from __future__ import annotations

import contextlib
import copy
import math
import os
import textwrap
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from course_lib.mistakes import NAMED, sentence

__all__ = ["CheckFailed", "check_batchnorm", "check_layernorm", "check_instancenorm", "check_groupnorm",
           "check_running_batchnorm", "check_fold_bn", "student_checks"]

# Every function below sets __tracebackhide__: IPython then leaves these frames out of a traceback, so that a
# failed check shows the test cell's line and the message, and an error of the student's own code shows their line.
RTOL, ATOL = 1e-5, 1e-6  # float64 throughout: a correct layer is within ~1e-12
BIG_EPS = 0.5  # large enough that where eps goes changes the output visibly
NO_EPS = 1e-300  # "no eps" for F.batch_norm, which refuses eps=0 in training mode


class CheckFailed(AssertionError):
    """A visible check found your layer's output (or state) different from what the contract says."""


def _graded() -> bool:
    """True while nbgrader autogrades the notebook: the hidden tests decide every test there."""
    return os.environ.get("NBGRADER_EXECUTION") == "autograde"


@contextlib.contextmanager
def student_checks() -> Iterator[None]:
    """Checks inside run for you (Run All, Validate) and stand aside when the notebook is graded, where the
    hidden tests decide: whatever stops them there (a failed assert, an error your code raised inside) neither
    costs nor earns points, and the hidden tests run as they would without them."""
    try:
        yield
    except Exception:  # noqa: BLE001 - under autograde nothing raised here may decide a test
        if not _graded():
            raise


def _input(n: int, c: int, h: int, w: int, *, seed: int) -> Tensor:
    """A float64 input in which every example and channel has its own offset and spread (seeded, repeatable)."""
    __tracebackhide__ = True
    gen = torch.Generator().manual_seed(seed)
    channel = torch.arange(c, dtype=torch.float64).view(1, c, 1, 1)
    example = torch.arange(n, dtype=torch.float64).view(n, 1, 1, 1)
    return torch.randn(n, c, h, w, generator=gen, dtype=torch.float64) * (1.0 + 0.4 * channel) + (channel - 1.0) \
        + 0.5 * example


def _close(a: Tensor, b: Tensor) -> bool:
    __tracebackhide__ = True
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=RTOL, atol=ATOL))


def _gap(got: Tensor, want: Tensor) -> float:
    __tracebackhide__ = True
    return (got.detach() - want.detach()).abs().max().item()


def _tensor_out(what: str, got: object, like: Tensor) -> Tensor:
    """got, after checking it is a finite tensor with like's shape and dtype."""
    __tracebackhide__ = True
    if not isinstance(got, Tensor):
        raise CheckFailed(f"{what}: expected a tensor, got {type(got).__name__} (does forward return its result?)")
    if tuple(got.shape) != tuple(like.shape):
        raise CheckFailed(f"{what}: expected an output of shape {tuple(like.shape)} (the input's), got {tuple(got.shape)}")
    if got.dtype != like.dtype:
        raise CheckFailed(f"{what}: expected the input's dtype {like.dtype}, got {got.dtype} (keep the input's dtype)")
    if not torch.isfinite(got).all():
        raise CheckFailed(f"{what}: the output holds NaN or inf values")
    return got


def _expect(what: str, got: object, want: Tensor, mistakes: dict[str, Callable[[], Tensor]] | None = None,
            reference: str = "PyTorch's") -> None:
    """Fail unless got is close to want; name the first mistake (a course_lib.mistakes id -> its output) whose
    output got matches."""
    __tracebackhide__ = True
    got = _tensor_out(what, got, want)
    if _close(got, want):
        return
    message = f"{what}: your output differs from {reference} by up to {_gap(got, want):.3g}."
    for mistake, candidate in (mistakes or {}).items():
        try:
            match = _close(got, candidate())
        except Exception:  # noqa: BLE001 - a candidate that does not apply to this input
            match = False
        if match:
            raise CheckFailed(f"{message} {NAMED}{sentence(mistake)}")
    raise CheckFailed(message + " It matches none of the common mistakes this check knows; compare your code "
                                "with the contract in the docstring line by line.")


def _set(layer: nn.Module, name: str, value: Tensor) -> None:
    """Copy value into the layer's parameter or buffer `name` (the contract's shape)."""
    __tracebackhide__ = True
    current = getattr(layer, name, None)
    if not isinstance(current, Tensor):
        raise CheckFailed(f"the layer has no tensor {name!r}: the stub's docstring names it (check the spelling)")
    if tuple(current.shape) != tuple(value.shape):
        raise CheckFailed(f"{name} should have shape {tuple(value.shape)}, it has {tuple(current.shape)}")
    if current.dtype != value.dtype:
        raise CheckFailed(f"after .double() self.{name} is still {current.dtype}: make it an nn.Parameter or a registered "
                          f"buffer (self.register_buffer), so that .double() and .to() convert it")
    with torch.no_grad():
        current.copy_(value)


def _build(cls: type, *args: object, **kwargs: object) -> nn.Module:
    __tracebackhide__ = True
    layer = cls(*args, **kwargs)
    if not isinstance(layer, nn.Module):
        raise CheckFailed(f"{cls.__name__}(...) should be an nn.Module")
    return layer.double()


# The scale and shift (one per channel, shape (3, 1, 1)) the three-channel checks give a layer.
GAMMA = torch.tensor([1.5, 0.5, 2.0], dtype=torch.float64).view(3, 1, 1)
BETA = torch.tensor([0.3, -1.0, 2.0], dtype=torch.float64).view(3, 1, 1)


def _three_channel_affine(t: Tensor) -> Tensor:
    __tracebackhide__ = True
    return t * GAMMA + BETA


def _scaled(cls: type, args: tuple, kwargs: dict[str, object], values: dict[str, Tensor]) -> nn.Module:
    """cls(*args, **kwargs) (the kwargs that are not None) in float64, with its scale and shift set to values."""
    __tracebackhide__ = True
    layer = _build(cls, *args, **{k: v for k, v in kwargs.items() if v is not None})
    for name, value in values.items():
        _set(layer, name, value)
    return layer


# ---- mistakes recognised from a reference normalisation z(x, eps) (scale 1, shift 0) -------------------------

def _unbiased(z: Callable[[Tensor, float], Tensor], x: Tensor, eps: float, n: int) -> Tensor:
    """The output with the unbiased variance (divide by n - 1): sqrt((n-1)/n) * z(x, eps (n-1)/n)."""
    __tracebackhide__ = True
    return math.sqrt((n - 1) / n) * z(x, eps * (n - 1) / n)


def _variance(z: Callable[[Tensor, float], Tensor], x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """(z(x, 0), each element's group variance), read off z(x, eps) / z(x, 0) = sqrt(var / (var + eps)); where
    z(x, 0) is (nearly) 0 the ratio says nothing and the variance is NaN."""
    __tracebackhide__ = True
    with_eps, without = z(x, eps), z(x, NO_EPS)
    known = without.abs() > 1e-9
    ratio = torch.where(known, with_eps / without, torch.ones_like(without))
    var = eps * ratio**2 / (1 - ratio**2).clamp_min(1e-300)
    return without, torch.where(known, var, torch.full_like(var, float("nan")))


def _eps_outside(z: Callable[[Tensor, float], Tensor], x: Tensor, eps: float) -> Tensor:
    """The output of (x - mean) / (sqrt(var) + eps), element by element."""
    __tracebackhide__ = True
    without, var = _variance(z, x, eps)
    return torch.nan_to_num(without * var.sqrt() / (var.sqrt() + eps))  # 0 where the mean is (nearly) the value


def _mean_kept(z: Callable[[Tensor, float], Tensor], x: Tensor, eps: float) -> Tensor:
    """The output of x / sqrt(var + eps) (the mean never subtracted), element by element (NaN where unknown)."""
    __tracebackhide__ = True
    return x / (_variance(z, x, eps)[1] + eps).sqrt()


def _eps_mistakes(z: Callable[[Tensor, float], Tensor], x: Tensor, eps: float, n: int, default: float,
                  affine: Callable[[Tensor], Tensor], layer: dict[str, str]) -> dict[str, Callable[[], Tensor]]:
    """The variance and eps mistakes every one of these layers invites, for an input normalised in groups of n;
    `layer` gives the ids of the layer's own "unbiased" and "unscaled" (no scale and shift) mistakes."""
    __tracebackhide__ = True
    return {
        layer["unbiased"]: lambda: affine(_unbiased(z, x, eps, n)),
        "norm.eps_outside_sqrt": lambda: affine(_eps_outside(z, x, eps)),
        "norm.no_eps": lambda: affine(z(x, NO_EPS)),
        "norm.default_eps": lambda: affine(z(x, default)),
        "in.lesson_eps": lambda: affine(z(x, 1.0)),
        "in.lesson_instancenorm": lambda: affine(_unbiased(z, x, 1.0, n)),
        "norm.mean_not_subtracted": lambda: affine(_mean_kept(z, x, eps)),
        layer["unscaled"]: lambda: z(x, eps),
    }


def _gradients(what: str, layer: nn.Module, x: Tensor, params: list[str], seed: int) -> None:
    """Autograd's gradient of a weighted sum of the output, with respect to x and the named parameters, against
    central differences of the same layer: a right gradient of whatever the forward computes (a wrong forward
    is the output check's business, not this one's). Every evaluation runs on a fresh copy of the layer, so
    running statistics updated by one call do not change the next."""
    __tracebackhide__ = True
    gen = torch.Generator().manual_seed(seed)
    weights = torch.randn(x.shape, generator=gen, dtype=torch.float64)
    pristine = copy.deepcopy(layer)
    x = x.clone().requires_grad_(True)
    used = copy.deepcopy(pristine)
    out = _tensor_out(what, used(x), x)
    if not out.requires_grad:
        raise CheckFailed(f"{what}: the output has no gradient (was it computed under torch.no_grad() or detached?)")
    autograd = torch.autograd.grad((out * weights).sum(), [x] + [getattr(used, name) for name in params],
                                   allow_unused=True)
    wrong = []
    for name, tensor, analytic in zip(["the input"] + params, [x] + [getattr(pristine, n) for n in params], autograd):
        numeric = torch.zeros_like(tensor)
        flat = tensor.detach().view(-1)  # the same storage: perturbing it perturbs the tensor itself
        for i in range(flat.numel()):
            saved = flat[i].item()
            values = []
            for step in (1e-6, -1e-6):
                with torch.no_grad():
                    flat[i] = saved + step
                # with gradients on: a layer that (wrongly) takes its mode from torch.is_grad_enabled() is the modes
                # check's business
                values.append((copy.deepcopy(pristine)(x.detach()) * weights).sum().item())
            with torch.no_grad():
                flat[i] = saved
            numeric.view(-1)[i] = (values[0] - values[1]) / 2e-6
        if analytic is None or not torch.allclose(analytic, numeric, rtol=1e-4, atol=1e-5):
            wrong.append(name)
    if wrong:
        raise CheckFailed(
            f"{what}: autograd's gradient with respect to {' and '.join(wrong)} does not match the change of your own "
            f"output (central differences). The usual cause is a statistic without autograd history: compute the "
            f"mean and the variance from x itself, without .detach(), .data, .item(), .numpy() or torch.no_grad().")


def _alone(what: str, layer: nn.Module, x: Tensor) -> None:
    """Example 0's output alone (a batch of one) is its output in the batch."""
    __tracebackhide__ = True
    together = _tensor_out(what, layer(x), x)
    alone = _tensor_out(f"{what}, example 0 alone", layer(x[:1]), x[:1])
    if not _close(alone, together[:1]):
        raise CheckFailed(f"{what}: example 0 alone gives another output than in its batch (by up to "
                          f"{_gap(alone, together[:1]):.3g}): each example must be normalised with its own statistics")


def _no_buffers(what: str, layer: nn.Module) -> None:
    __tracebackhide__ = True
    buffers = [name for name, _ in layer.named_buffers()]
    if buffers:
        raise CheckFailed(f"{what}: this layer keeps no running statistics, but it has buffers {buffers}")


def _same_in_both_modes(what: str, layer: nn.Module, x: Tensor) -> None:
    __tracebackhide__ = True
    train = _tensor_out(f"{what} (training mode)", layer.train()(x), x)
    evaluated = _tensor_out(f"{what} (eval mode)", layer.eval()(x), x)
    layer.train()
    if not _close(train, evaluated):
        raise CheckFailed(f"{what}: training and eval mode give different outputs (by up to {_gap(train, evaluated):.3g});"
                          f" this layer never looks at other batches, so both modes compute the same thing")
    _no_buffers(what, layer)


def _raises(what: str, fn: Callable[[], object], words: tuple[str, ...] = ()) -> None:
    """fn() must raise ValueError whose message holds every word."""
    __tracebackhide__ = True
    try:
        fn()
    except ValueError as err:
        missing = [w for w in words if w not in str(err)]
        if missing:
            raise CheckFailed(f"{what}: the ValueError's message should name {' and '.join(missing)}; it says {str(err)!r}")
        return
    except Exception as err:  # noqa: BLE001 - any other exception is the mistake being named
        raise CheckFailed(f"{what}: expected a ValueError, got {type(err).__name__}: {err}") from None
    raise CheckFailed(f"{what}: expected a ValueError, but nothing was raised")


def _stored(layer: nn.Module, built: str, expected: dict[str, object]) -> None:
    """The constructor's arguments are kept under the names the stub gives."""
    __tracebackhide__ = True
    for name, value in expected.items():
        if getattr(layer, name, None) != value:
            raise CheckFailed(f"{built}: self.{name} should be {value!r} (the stub names it self.{name}); it is "
                              f"{getattr(layer, name, 'missing')!r}")


def _own_parameters(built: str, make: Callable[[], nn.Module]) -> None:
    """Two layers made one after the other do not share parameters: changing one's leaves the other's alone."""
    __tracebackhide__ = True
    first, second = make(), make()
    before = {name: p.detach().clone() for name, p in second.named_parameters()}
    with torch.no_grad():
        for p in first.parameters():
            p.add_(0.75)
    changed = [name for name, p in second.named_parameters() if not torch.equal(p.detach(), before[name])]
    if changed:
        raise CheckFailed(f"{built}: changing one layer's parameters changed another layer's {', '.join(changed)}: every "
                          f"layer needs its own. nn.Parameter(t) shares t's memory, so make a new tensor in __init__ "
                          f"(nn.Parameter(torch.ones(...))), never one tensor made once for all layers.")


def _layouts(what: str, layer: nn.Module, x: Tensor, want: Tensor) -> None:
    """The layer gives the same output for x stored channels_last and for x seen through a transpose: the contract
    takes any tensor of the right shape, whatever its memory layout."""
    __tracebackhide__ = True
    for name, laid in (("channels_last", x.contiguous(memory_format=torch.channels_last)),
                       ("transposed", x.transpose(2, 3).contiguous().transpose(2, 3))):
        try:
            got = layer(laid)
        except RuntimeError as err:
            hint = " .view() refuses such a tensor: use .reshape() or .flatten()." if "view" in str(err) else ""
            raise CheckFailed(f"{what}, the input stored {name} (same values, another memory layout): it raised "
                              f"{type(err).__name__}: {str(err).splitlines()[0]}{hint}") from None
        if not _close(_tensor_out(f"{what}, the input stored {name}", got, want), want):
            raise CheckFailed(f"{what}, the input stored {name} (same values, another memory layout): the output differs "
                              f"by up to {_gap(got, want):.3g} from the right one")


def _aspects(given: tuple[str, ...], known: dict[str, Callable[[], None]], layer: str) -> None:
    __tracebackhide__ = True
    unknown = [a for a in given if a not in known]
    if unknown:
        raise ValueError(f"check_{layer}: unknown aspect(s) {unknown}; choose from {sorted(known)}")
    if _graded():
        return  # when graded, the hidden tests decide every test: these checks neither cost nor earn points there
    for aspect in given or tuple(known):
        try:
            known[aspect]()
        except CheckFailed as failure:
            message = str(failure)
        else:
            continue
        # Raised afresh, so that Validate shows this line and the message, not the checks' own frames; wrapped,
        # so that it reads without scrolling sideways.
        lines = message.replace(" It matches ", "\nIt matches ").replace(f" {NAMED}", f"\n{NAMED}").splitlines()
        raise CheckFailed("\n".join(textwrap.fill(line, width=100, subsequent_indent="  ") for line in lines)) from None


# ---- Q3: BatchNorm ------------------------------------------------------------------------------------------

def _bn_train(t: Tensor, eps: float) -> Tensor:
    """BatchNorm's normalisation in training mode (scale 1, shift 0)."""
    __tracebackhide__ = True
    return F.batch_norm(t, None, None, training=True, eps=eps)


def _bn_eval(t: Tensor, eps: float, means: Tensor, variances: Tensor) -> Tensor:
    """BatchNorm's normalisation in eval mode with the given running statistics (scale 1, shift 0)."""
    __tracebackhide__ = True
    return F.batch_norm(t, means.flatten(), variances.flatten(), training=False, eps=eps)


def _bn_running(x: Tensor, mom: float) -> tuple[Tensor, Tensor]:
    """The running (means, vars), shape (1, 3, 1, 1), after one training step on x from new."""
    __tracebackhide__ = True
    means, variances = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    F.batch_norm(x, means, variances, training=True, momentum=mom)
    return means.view(1, 3, 1, 1), variances.view(1, 3, 1, 1)


class _BatchNormCheck:
    """check_batchnorm's aspects, each a method, on one seeded input of shape SHAPE."""

    SHAPE = (6, 3, 4, 4)
    LAYER = {"unbiased": "bn.unbiased_variance", "unscaled": "norm.no_scale_shift"}  # for _eps_mistakes

    def __init__(self, BatchNorm: type) -> None:
        __tracebackhide__ = True
        self.BatchNorm = BatchNorm
        self.n = self.SHAPE[0] * self.SHAPE[2] * self.SHAPE[3]
        self.x = _input(*self.SHAPE, seed=30)

    def layer(self, eps: float | None = None, mom: float | None = None) -> nn.Module:
        __tracebackhide__ = True
        return _scaled(self.BatchNorm, (3,), {"eps": eps, "mom": mom}, {"mults": GAMMA, "adds": BETA}).train()

    def axes(self) -> dict[str, Callable[[float], Tensor]]:
        """The statistics over the wrong axes, each a normalisation of x given eps."""
        __tracebackhide__ = True
        x, shape = self.x, self.SHAPE
        return {
            "bn.axes_instancenorm": lambda eps: F.instance_norm(x, eps=eps),
            "bn.axes_layernorm": lambda eps: F.layer_norm(x, x.shape[1:], eps=eps),
            "bn.axes_batch_only": lambda eps: F.batch_norm(x.permute(0, 2, 3, 1).reshape(shape[0], -1), None, None,
                                                           training=True, eps=eps)
            .reshape(shape[0], 4, 4, 3).permute(0, 3, 1, 2),
        }

    def train_mistakes(self, eps: float) -> dict[str, Callable[[], Tensor]]:
        __tracebackhide__ = True
        x, affine = self.x, _three_channel_affine
        found = _eps_mistakes(_bn_train, x, eps, self.n, 1e-5, affine, self.LAYER)
        found.update({mistake: (lambda f=f: affine(f(eps))) for mistake, f in self.axes().items()})
        found["norm.scale_shift_swapped"] = lambda: _bn_train(x, eps) * BETA + GAMMA
        found["bn.train_running_after_update"] = \
            lambda: affine(_bn_eval(x, eps, 0.1 * x.mean((0, 2, 3)), 0.9 + 0.1 * x.var((0, 2, 3))))
        return found

    def train(self) -> None:
        __tracebackhide__ = True
        for eps in (1e-5, BIG_EPS):
            bn = self.layer() if eps == 1e-5 else self.layer(eps=eps)
            what = f"BatchNorm(3{'' if eps == 1e-5 else f', eps={eps}'}) in training mode on an input of shape {self.SHAPE}"
            _expect(what, bn(self.x), _three_channel_affine(_bn_train(self.x, eps)), self.train_mistakes(eps),
                    "F.batch_norm(training=True)")

    def eval_mistakes(self, eps: float, means: Tensor, variances: Tensor) -> dict[str, Callable[[], Tensor]]:
        __tracebackhide__ = True
        x, affine = self.x, _three_channel_affine
        updated_means, updated_vars = means.flatten().clone(), variances.flatten().clone()
        F.batch_norm(x, updated_means, updated_vars, training=True, momentum=0.1)
        found = {"bn.eval_batch_statistics": lambda: affine(_bn_train(x, eps)),
                 "bn.eval_updates_first": lambda: affine(_bn_eval(x, eps, updated_means, updated_vars))}

        def z(t: Tensor, e: float) -> Tensor:
            __tracebackhide__ = True
            return _bn_eval(t, e, means, variances)

        found.update((mistake, f) for mistake, f in _eps_mistakes(z, x, eps, self.n, 1e-5, affine, self.LAYER).items()
                     if mistake != self.LAYER["unbiased"])
        return found

    def eval_(self) -> None:
        __tracebackhide__ = True
        means = torch.tensor([0.5, -1.0, 2.0], dtype=torch.float64).view(1, 3, 1, 1)
        variances = torch.tensor([4.0, 0.25, 9.0], dtype=torch.float64).view(1, 3, 1, 1)
        for eps in (1e-5, BIG_EPS):
            bn = self.layer(eps=eps).eval()
            _set(bn, "means", means)
            _set(bn, "vars", variances)
            what = (f"BatchNorm(3, eps={eps}) in eval mode with means {means.flatten().tolist()} and vars "
                    f"{variances.flatten().tolist()}")
            _expect(what, bn(self.x), _three_channel_affine(_bn_eval(self.x, eps, means, variances)),
                    self.eval_mistakes(eps, means, variances), "F.batch_norm(training=False)")

    def buffer_mistakes(self, name: str, mom: float, want: Tensor, flipped: Tensor) -> dict[str, Callable[[], Tensor]]:
        """The wrong values of buffer `name` after one training step with momentum mom."""
        __tracebackhide__ = True
        n = self.n
        start = torch.zeros if name == "means" else torch.ones
        found = {"bn.momentum_flipped": lambda: flipped,
                 "bn.running_not_updated": lambda: start(1, 3, 1, 1, dtype=torch.float64)}
        if name == "vars":
            unbiased = (want - (1 - mom)) / mom
            biased = (1 - mom) + mom * unbiased * (n - 1) / n
            found["bn.running_var_zeros"] = lambda: want - (1 - mom)
            found["bn.biased_variance_stored"] = lambda: biased
        return found

    def buffers(self) -> None:
        __tracebackhide__ = True
        for mom in (0.1, 0.3):
            bn = self.layer(mom=mom)
            bn(self.x)
            what = f"BatchNorm(3, mom={mom}) after one training step from new"
            for name, want, flipped in zip(("means", "vars"), _bn_running(self.x, mom), _bn_running(self.x, 1 - mom)):
                got = getattr(bn, name, None)
                if not isinstance(got, Tensor) or tuple(got.shape) != (1, 3, 1, 1):
                    raise CheckFailed(f"{what}: self.{name} should be a tensor of shape (1, 3, 1, 1)")
                _expect(f"{what}: self.{name}", got.detach(), want, self.buffer_mistakes(name, mom, want, flipped),
                        "F.batch_norm's running statistics")

    def modes(self) -> None:
        __tracebackhide__ = True
        bn = _build(self.BatchNorm, 3).eval()
        before = {k: v.clone() for k, v in bn.state_dict().items()}
        bn(self.x)
        changed = [k for k, v in bn.state_dict().items() if k in before and not torch.equal(v, before[k])]
        if changed:
            raise CheckFailed(f"an eval-mode forward changed {changed}: in eval mode the buffers must stay as they are")
        bn.train()
        with torch.no_grad():
            bn(self.x)
        if torch.equal(bn.state_dict()["means"], before["means"]):
            raise CheckFailed("a training-mode forward under torch.no_grad() left means unchanged: the mode is "
                              "self.training (set by .train()/.eval()), not whether gradients are on")

    def gradients(self) -> None:
        __tracebackhide__ = True
        bn = _build(self.BatchNorm, 3).train()
        _gradients("BatchNorm(3) in training mode", bn, self.x[:4, :, :3, :3], ["mults", "adds"], seed=31)

    def history(self) -> None:
        __tracebackhide__ = True
        bn = _build(self.BatchNorm, 3).train()
        bn(self.x.clone().requires_grad_(True))
        for name in ("means", "vars"):
            buffer = getattr(bn, name)
            if buffer.requires_grad or buffer.grad_fn is not None:
                raise CheckFailed(f"after a training step self.{name} carries autograd history: update the running "
                                  f"statistics under torch.no_grad() (or from detached values)")
            if name not in dict(bn.named_buffers()):
                raise CheckFailed(f"self.{name} is not a registered buffer: use self.register_buffer({name!r}, ...)")
        if _build(self.BatchNorm, 3).means.dtype != torch.float64:
            raise CheckFailed(".double() should convert means and vars too (they must be registered buffers)")

    def arguments(self) -> None:
        __tracebackhide__ = True
        _stored(self.BatchNorm(5, mom=0.3, eps=0.01), "BatchNorm(5, mom=0.3, eps=0.01)", {"mom": 0.3, "eps": 0.01})

    def errors(self) -> None:
        __tracebackhide__ = True
        bn = _build(self.BatchNorm, 3)
        _raises("BatchNorm(3) given a 3-D input", lambda: bn(torch.randn(4, 3, 5, dtype=torch.float64)))
        _raises("BatchNorm(3) given 4 channels", lambda: bn(torch.randn(2, 4, 5, 5, dtype=torch.float64)))
        _raises("BatchNorm(3) in training mode given one value per channel",
                lambda: bn.train()(torch.randn(1, 3, 1, 1, dtype=torch.float64)))


def check_batchnorm(BatchNorm: type, *aspects: str) -> None:
    """Check a Q3 BatchNorm class against F.batch_norm; aspects: arguments, train, eval, buffers, modes,
    gradients, history, errors (all when none are given)."""
    __tracebackhide__ = True
    c = _BatchNormCheck(BatchNorm)
    _aspects(aspects, {"arguments": c.arguments, "train": c.train, "eval": c.eval_, "buffers": c.buffers,
                       "modes": c.modes, "gradients": c.gradients, "history": c.history, "errors": c.errors},
             "batchnorm")


# ---- Q6: LayerNorm ------------------------------------------------------------------------------------------

def check_layernorm(LayerNorm: type, *aspects: str) -> None:
    """Check a Q6 LayerNorm class (one mult and add) against F.layer_norm; aspects: arguments, output, modes, gradients."""
    __tracebackhide__ = True
    shape = (4, 3, 5, 4)
    n = shape[1] * shape[2] * shape[3]
    x = _input(*shape, seed=60)
    mult, add = torch.tensor(1.7, dtype=torch.float64), torch.tensor(-0.4, dtype=torch.float64)

    def affine(t: Tensor) -> Tensor:
        __tracebackhide__ = True
        return t * mult + add

    def z(t: Tensor, eps: float) -> Tensor:
        __tracebackhide__ = True
        return F.layer_norm(t, t.shape[1:], eps=eps)

    def layer(eps: float | None = None) -> nn.Module:
        __tracebackhide__ = True
        return _scaled(LayerNorm, (), {"eps": eps}, {"mult": mult, "add": add})

    def output() -> None:
        __tracebackhide__ = True
        for eps in (1e-5, BIG_EPS):
            found = _eps_mistakes(z, x, eps, n, 1e-5, affine, {"unbiased": "ln.unbiased_variance",
                                                               "unscaled": "ln.no_scale_shift"})
            found.update({
                "ln.axes_batchnorm": lambda: affine(F.batch_norm(x, None, None, training=True, eps=eps)),
                "ln.axes_instancenorm": lambda: affine(F.instance_norm(x, eps=eps)),
                "ln.affine_before_normalising": lambda: z(affine(x), eps),
            })
            ln = layer() if eps == 1e-5 else layer(eps)
            what = f"LayerNorm({'' if eps == 1e-5 else f'eps={eps}'}) on an input of shape {shape}"
            _expect(what, ln(x), affine(z(x, eps)), found, "F.layer_norm(x, x.shape[1:]) * mult + add")
        _layouts(f"LayerNorm(eps={BIG_EPS})", layer(BIG_EPS), x, affine(z(x, BIG_EPS)))

    def arguments() -> None:
        __tracebackhide__ = True
        _stored(LayerNorm(eps=0.01), "LayerNorm(eps=0.01)", {"eps": 0.01})
        _stored(LayerNorm(), "LayerNorm()", {"eps": 1e-5})
        _own_parameters("LayerNorm()", LayerNorm)

    _aspects(aspects, {
        "arguments": arguments,
        "output": output,
        "modes": lambda: _same_in_both_modes("LayerNorm()", _build(LayerNorm), x),
        "independence": lambda: _alone("LayerNorm()", _build(LayerNorm), x),
        "gradients": lambda: _gradients("LayerNorm()", _build(LayerNorm), x[:2, :, :2, :2], ["mult", "add"], seed=61),
    }, "layernorm")


def _rms(t: Tensor, eps: float, over: tuple[int, ...] = (-2, -1), total: bool = False) -> Tensor:
    """t divided by its root mean square over `over` (total: the root of the sum of squares), plus eps inside."""
    __tracebackhide__ = True
    ms = (t * t).sum(over, keepdim=True) if total else (t * t).mean(over, keepdim=True)
    return t / (ms + eps).sqrt()


def _rms_mistakes(x: Tensor, ns: tuple[int, int], weight: Tensor, eps: float) -> dict[str, Callable[[], Tensor]]:
    """What RMSNorm(ns, eps) with this weight returns on x under each mistake this check knows."""
    __tracebackhide__ = True
    dims = (-2, -1)
    return {
        "rms.mean_subtracted": lambda: F.layer_norm(x, ns, weight, eps=eps),
        "rms.eps_outside_sqrt": lambda: x / ((x * x).mean(dims, keepdim=True).sqrt() + eps) * weight,
        "rms.no_eps": lambda: _rms(x, 0.0) * weight,
        "rms.last_dim_only": lambda: _rms(x, eps, (-1,)) * weight,
        "rms.all_but_batch": lambda: _rms(x, eps, (1, 2, 3)) * weight,
        "rms.sum_not_mean": lambda: _rms(x, eps, total=True) * weight,
        "rms.std_not_rms": lambda: x / (x.var(dims, keepdim=True, correction=0) + eps).sqrt() * weight,
        "norm.default_eps": lambda: _rms(x, 1e-6) * weight,
        "rms.no_weight": lambda: _rms(x, eps),
    }


def _rms_parameters(RMSNorm: type) -> None:
    """RMSNorm's one learned parameter: weight, one value per feature, starting as ones; no buffers."""
    __tracebackhide__ = True
    layer = RMSNorm((3, 4))
    params = dict(layer.named_parameters())
    if set(params) != {"weight"}:
        raise CheckFailed(f"RMSNorm((3, 4)): the only learned parameter must be weight (no bias), got {sorted(params)}")
    if tuple(params["weight"].shape) != (3, 4):
        why = (f" {NAMED}{sentence('rms.scalar_weight')}" if params["weight"].numel() == 1 else
               " (a single scalar weight is not RMSNorm's gain)")
        raise CheckFailed(f"RMSNorm((3, 4)).weight should have one value per feature, shape (3, 4); it has shape "
                          f"{tuple(params['weight'].shape)}{why}")
    if not torch.all(params["weight"] == 1):
        raise CheckFailed("RMSNorm((3, 4)).weight should start as ones")
    _no_buffers("RMSNorm((3, 4))", layer)


def check_rmsnorm(RMSNorm: type, *aspects: str) -> None:
    """Check a Q6 RMSNorm class against F.rms_norm; aspects: arguments, output, errors."""
    __tracebackhide__ = True
    shape, ns = (3, 2, 4, 5), (4, 5)
    x = _input(*shape, seed=62) + 0.8  # a mean far from 0, so that subtracting it shows
    weight = torch.linspace(0.5, 2.0, 20, dtype=torch.float64).view(ns)

    def output() -> None:
        __tracebackhide__ = True
        for eps in (1e-6, BIG_EPS):
            layer = _scaled(RMSNorm, (ns,), {"eps": None if eps == 1e-6 else eps}, {"weight": weight})
            what = f"RMSNorm({ns}{'' if eps == 1e-6 else f', eps={eps}'}) on an input of shape {shape}"
            _expect(what, layer(x), F.rms_norm(x, ns, weight, eps), _rms_mistakes(x, ns, weight, eps),
                    "F.rms_norm(x, normalized_shape, weight, eps)")
        float32 = _build(RMSNorm, 5).float()
        x32 = x.float()
        _expect("RMSNorm(5) on a float32 input", float32(x32), F.rms_norm(x32, (5,), None, 1e-6))
        _layouts(f"RMSNorm({ns}, eps={BIG_EPS})", _scaled(RMSNorm, (ns,), {"eps": BIG_EPS}, {"weight": weight}), x,
                 F.rms_norm(x, ns, weight, BIG_EPS))

    def arguments() -> None:
        __tracebackhide__ = True
        _stored(RMSNorm(8), "RMSNorm(8)", {"normalized_shape": (8,), "eps": 1e-6})
        _stored(RMSNorm((3, 4), eps=0.01), "RMSNorm((3, 4), eps=0.01)", {"normalized_shape": (3, 4), "eps": 0.01})
        _rms_parameters(RMSNorm)
        _own_parameters("RMSNorm(8)", lambda: RMSNorm(8))

    def errors() -> None:
        __tracebackhide__ = True
        _raises("RMSNorm(5) on an input of shape (2, 3, 4)", lambda: RMSNorm(5)(torch.randn(2, 3, 4)))
        _raises("RMSNorm((4, 5)) on an input of shape (2, 5, 4)", lambda: RMSNorm((4, 5))(torch.randn(2, 5, 4)))
        _raises("RMSNorm((4, 5)) on an input of shape (5,)", lambda: RMSNorm((4, 5))(torch.randn(5)))
        try:
            RMSNorm((4, 5))(torch.randn(4, 5))
        except Exception as err:  # noqa: BLE001 - any exception is the mistake being named
            raise CheckFailed(f"RMSNorm((4, 5)) on an input of shape (4, 5) (no batch dimension, but the right trailing "
                              f"shape) raised {type(err).__name__}: {err}") from None

    _aspects(aspects, {"arguments": arguments, "output": output, "errors": errors}, "rmsnorm")


# ---- Q7: InstanceNorm ---------------------------------------------------------------------------------------

def _in_mistakes(x: Tensor, n: int, eps: float) -> dict[str, Callable[[], Tensor]]:
    """What InstanceNorm(3, eps) with the three-channel scale and shift returns on x under each mistake this check
    knows (n values per example and channel)."""
    __tracebackhide__ = True
    affine = _three_channel_affine

    def z(t: Tensor, e: float) -> Tensor:
        __tracebackhide__ = True
        return F.instance_norm(t, eps=e)

    found = _eps_mistakes(z, x, eps, n, 1e-5, affine, {"unbiased": "in.unbiased_variance",
                                                       "unscaled": "norm.no_scale_shift"})
    found.update({
        "in.axes_batchnorm": lambda: affine(F.batch_norm(x, None, None, training=True, eps=eps)),
        "in.axes_layernorm": lambda: affine(F.layer_norm(x, x.shape[1:], eps=eps)),
        "in.one_scale_shift": lambda: z(x, eps) * GAMMA[0] + BETA[0],
    })
    return found


def check_instancenorm(InstanceNorm: type, *aspects: str) -> None:
    """Check a Q7 InstanceNorm class against F.instance_norm; aspects: arguments, output, modes, one_by_one,
    gradients, errors."""
    __tracebackhide__ = True
    shape = (4, 3, 4, 3)
    n = shape[2] * shape[3]
    x = _input(*shape, seed=70)
    affine = _three_channel_affine

    def layer(eps: float | None = None) -> nn.Module:
        __tracebackhide__ = True
        return _scaled(InstanceNorm, (3,), {"eps": eps}, {"mults": GAMMA, "adds": BETA})

    def output() -> None:
        __tracebackhide__ = True
        for eps in (1e-5, BIG_EPS):
            inorm = layer() if eps == 1e-5 else layer(eps)
            what = f"InstanceNorm(3{'' if eps == 1e-5 else f', eps={eps}'}) on an input of shape {shape}"
            _expect(what, inorm(x), affine(F.instance_norm(x, eps=eps)), _in_mistakes(x, n, eps),
                    "F.instance_norm(x) * mults + adds")
        _layouts(f"InstanceNorm(3, eps={BIG_EPS})", layer(BIG_EPS), x, affine(F.instance_norm(x, eps=BIG_EPS)))

    def arguments() -> None:
        __tracebackhide__ = True
        _stored(InstanceNorm(5, eps=0.01), "InstanceNorm(5, eps=0.01)", {"nf": 5, "eps": 0.01})
        _own_parameters("InstanceNorm(3)", lambda: InstanceNorm(3))

    def one_by_one() -> None:
        __tracebackhide__ = True
        tiny = _input(4, 3, 1, 1, seed=71)
        got = _tensor_out("InstanceNorm(3) on 1x1 maps", layer()(tiny), tiny)
        want = BETA.view(1, 3, 1, 1).expand_as(tiny)
        if not _close(got, want):
            raise CheckFailed(f"InstanceNorm(3) on 1x1 maps: every normalised value is 0 there, so the output should be "
                              f"adds {BETA.flatten().tolist()} for every example; got {got[0].flatten().tolist()} for "
                              f"example 0")

    def errors() -> None:
        __tracebackhide__ = True
        inorm = _build(InstanceNorm, 3)
        _raises("InstanceNorm(3) given a 3-D input", lambda: inorm(torch.randn(4, 3, 5, dtype=torch.float64)))
        _raises("InstanceNorm(3) given 4 channels", lambda: inorm(torch.randn(2, 4, 5, 5, dtype=torch.float64)))

    _aspects(aspects, {
        "arguments": arguments,
        "output": output,
        "modes": lambda: _same_in_both_modes("InstanceNorm(3)", _build(InstanceNorm, 3), x),
        "one_by_one": one_by_one,
        "independence": lambda: _alone("InstanceNorm(3)", _build(InstanceNorm, 3), x),
        "gradients": lambda: _gradients("InstanceNorm(3)", _build(InstanceNorm, 3), x[:2, :, :2, :2], ["mults", "adds"], seed=72),
        "errors": errors,
    }, "instancenorm")


# ---- Q8: GroupNorm ------------------------------------------------------------------------------------------

GN_WEIGHT = torch.linspace(0.5, 2.0, 6, dtype=torch.float64)  # the scale and shift the GroupNorm checks give a layer
GN_BIAS = torch.linspace(-1.0, 1.0, 6, dtype=torch.float64)


def _gn_affine(t: Tensor) -> Tensor:
    __tracebackhide__ = True
    return t * GN_WEIGHT.view(1, -1, 1, 1) + GN_BIAS.view(1, -1, 1, 1)


def _interleaved(t: Tensor, groups: int, eps: float) -> Tensor:
    """Channel c in group c % groups: F.group_norm on the channels reordered so each such group is contiguous."""
    __tracebackhide__ = True
    order = sorted(range(6), key=lambda c: (c % groups, c))
    back = torch.argsort(torch.tensor(order))
    return F.group_norm(t[:, order], groups, eps=eps)[:, back]


def _gn_mistakes(x: Tensor, groups: int, eps: float,
                 affine: Callable[[Tensor], Tensor] = _gn_affine) -> dict[str, Callable[[], Tensor]]:
    """What GroupNorm(groups, 6, eps) returns on x under each mistake this check knows (affine: its scale and shift)."""
    __tracebackhide__ = True
    weight, bias, shape = GN_WEIGHT, GN_BIAS, x.shape

    def z(t: Tensor, e: float) -> Tensor:
        __tracebackhide__ = True
        return F.group_norm(t, groups, eps=e)

    n = (6 // groups) * shape[2] * shape[3]
    found = _eps_mistakes(z, x, eps, n, 1e-5, affine, {"unbiased": "gn.unbiased_variance",
                                                       "unscaled": "gn.no_scale_shift"})
    found.update({
        "gn.interleaved_groups": lambda: affine(_interleaved(x, groups, eps)),
        "gn.statistics_over_batch":
            lambda: affine(F.group_norm(x.transpose(0, 1).reshape(1, 6, -1), groups, eps=eps)
                           .reshape(6, shape[0], *shape[2:]).transpose(0, 1)),
        "gn.scale_shift_swapped":
            lambda: F.group_norm(x, groups, eps=eps) * bias.view(1, -1, 1, 1) + weight.view(1, -1, 1, 1),
        "gn.per_group_scale_shift":
            lambda: F.group_norm(x, groups, eps=eps) * weight[:groups].repeat_interleave(6 // groups).view(1, -1, 1, 1)
            + bias[:groups].repeat_interleave(6 // groups).view(1, -1, 1, 1),
    })
    return found


def _gn_affine_false(GroupNorm: type, x: Tensor) -> None:
    """GroupNorm(3, 6, affine=False): no parameters, weight and bias None, the plain normalisation."""
    __tracebackhide__ = True
    gn = _build(GroupNorm, 3, 6, affine=False)
    if getattr(gn, "weight", "missing") is not None or getattr(gn, "bias", "missing") is not None:
        raise CheckFailed("GroupNorm(3, 6, affine=False): self.weight and self.bias should be None "
                          "(self.register_parameter('weight', None))")
    if list(gn.parameters()):
        raise CheckFailed(f"GroupNorm(3, 6, affine=False) should have no parameters, it has "
                          f"{[name for name, _ in gn.named_parameters()]}")
    _expect("GroupNorm(3, 6, affine=False)", gn(x), F.group_norm(x, 3), _gn_mistakes(x, 3, 1e-5, lambda t: t))


def _gn_state_dict(GroupNorm: type) -> None:
    """GroupNorm(3, 6)'s state_dict has nn.GroupNorm's keys and shapes."""
    __tracebackhide__ = True
    theirs = nn.GroupNorm(3, 6).double()
    mine = _build(GroupNorm, 3, 6)
    want = {k: tuple(v.shape) for k, v in theirs.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in mine.state_dict().items()}
    if got != want:
        raise CheckFailed(f"GroupNorm(3, 6).state_dict() should hold {want} (nn.GroupNorm's), it holds {got}")


def check_groupnorm(GroupNorm: type, *aspects: str) -> None:
    """Check a Q8 GroupNorm class against F.group_norm; aspects: arguments, output, equivalences,
    affine_false, modes, gradients, errors, state_dict."""
    __tracebackhide__ = True
    shape = (4, 6, 3, 3)
    x = _input(*shape, seed=80)
    affine = _gn_affine

    def layer(groups: int, eps: float | None = None) -> nn.Module:
        __tracebackhide__ = True
        return _scaled(GroupNorm, (groups, 6), {"eps": eps}, {"weight": GN_WEIGHT, "bias": GN_BIAS})

    def output() -> None:
        __tracebackhide__ = True
        for groups, eps in ((3, 1e-5), (2, BIG_EPS), (3, BIG_EPS)):
            gn = layer(groups) if eps == 1e-5 else layer(groups, eps)
            what = f"GroupNorm({groups}, 6{'' if eps == 1e-5 else f', eps={eps}'}) on an input of shape {shape}"
            _expect(what, gn(x), affine(F.group_norm(x, groups, eps=eps)), _gn_mistakes(x, groups, eps),
                    "nn.GroupNorm's (same weight and bias)")
        _layouts(f"GroupNorm(3, 6, eps={BIG_EPS})", layer(3, BIG_EPS), x, affine(F.group_norm(x, 3, eps=BIG_EPS)))

    def arguments() -> None:
        __tracebackhide__ = True
        _stored(GroupNorm(2, 6, eps=0.01, affine=False), "GroupNorm(2, 6, eps=0.01, affine=False)",
                {"num_groups": 2, "num_channels": 6, "eps": 0.01, "affine": False})
        _own_parameters("GroupNorm(3, 6)", lambda: GroupNorm(3, 6))

    def equivalences() -> None:
        __tracebackhide__ = True
        _expect(f"GroupNorm(6, 6) (one channel per group) on an input of shape {shape}", layer(6)(x),
                affine(F.instance_norm(x, eps=1e-5)), _gn_mistakes(x, 6, 1e-5), "F.instance_norm (InstanceNorm)")
        _expect(f"GroupNorm(1, 6) (one group) on an input of shape {shape}", layer(1)(x),
                affine(F.layer_norm(x, x.shape[1:], eps=1e-5)), _gn_mistakes(x, 1, 1e-5), "F.layer_norm over (C, H, W)")

    def errors() -> None:
        __tracebackhide__ = True
        _raises("GroupNorm(4, 6) (6 channels do not split into 4 groups)", lambda: GroupNorm(4, 6), ("4", "6"))
        gn = _build(GroupNorm, 3, 6)
        _raises("GroupNorm(3, 6) given 4 channels", lambda: gn(torch.randn(2, 4, 3, 3, dtype=torch.float64)))

    _aspects(aspects, {
        "arguments": arguments,
        "output": output,
        "equivalences": equivalences,
        "affine_false": lambda: _gn_affine_false(GroupNorm, x),
        "modes": lambda: _same_in_both_modes("GroupNorm(3, 6)", _build(GroupNorm, 3, 6), x),
        "independence": lambda: _alone("GroupNorm(3, 6)", _build(GroupNorm, 3, 6), x),
        "gradients": lambda: _gradients("GroupNorm(3, 6)", _build(GroupNorm, 3, 6), x[:2, :, :2, :2], ["weight", "bias"], seed=81),
        "errors": errors,
        "state_dict": lambda: _gn_state_dict(GroupNorm),
    }, "groupnorm")


# ---- Q4: fold_bn (folding a BatchNorm into the conv before it) ---------------------------------------------------

def _fold_pair(ni: int, nf: int, conv_bias: bool, eps: float, training: bool, seed: int):
    """A seeded Conv2d(ni, nf, 3) and BatchNorm2d(nf) with trained-looking statistics, and an input for them."""
    __tracebackhide__ = True
    gen = torch.Generator().manual_seed(seed)
    conv = nn.Conv2d(ni, nf, 3, padding=1, bias=conv_bias).double()
    bn = nn.BatchNorm2d(nf, eps=eps).double()
    with torch.no_grad():
        for t in [conv.weight, bn.bias, bn.running_mean] + ([conv.bias] if conv_bias else []):
            t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64))
        bn.weight.copy_(torch.rand(nf, generator=gen, dtype=torch.float64) * 1.5 + 0.5)
        bn.running_var.copy_(torch.randn(nf, generator=gen, dtype=torch.float64).exp() * 0.5)
        bn.num_batches_tracked.fill_(7)
    return conv, bn.train(training), _input(3, ni, 5, 4, seed=seed)


def _fused(conv: nn.Module, bn: nn.Module, x: Tensor, **changes: Tensor | float) -> Tensor:
    """fuse_conv_bn_eval on copies, with some of bn's (or the conv's) values changed; applied to x."""
    __tracebackhide__ = True
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    conv, bn = copy.deepcopy(conv), copy.deepcopy(bn)
    with torch.no_grad():
        for name, value in changes.items():
            if name == "conv_bias":
                conv.bias.zero_()
            elif name == "eps":
                bn.eps = value
            else:
                getattr(bn, name).copy_(value)
    with torch.no_grad():
        return fuse_conv_bn_eval(conv.eval(), bn.eval())(x)


def _fold_mistakes(conv: nn.Module, bn: nn.Module, x: Tensor) -> dict[str, Callable[[], Tensor]]:
    """What the folded conv gives on x under each mistake this check knows."""
    __tracebackhide__ = True
    v, eps = bn.running_var, bn.eps
    scale = bn.weight / (v + eps).sqrt()
    found = {
        "fold.eps_outside_sqrt": lambda: _fused(conv, bn, x, running_var=(v.sqrt() + eps) ** 2, eps=0.0),
        "fold.no_eps": lambda: _fused(conv, bn, x, eps=0.0),
        "fold.bn_bias_forgotten": lambda: _fused(conv, bn, x, bias=torch.zeros_like(v)),
        "fold.mean_not_subtracted": lambda: _fused(conv, bn, x, running_mean=torch.zeros_like(v)),
    }
    if conv.bias is not None:
        found["fold.conv_bias_forgotten"] = lambda: _fused(conv, bn, x, conv_bias=0.0)
        found["fold.conv_bias_unscaled"] = lambda: _fused(conv, bn, x, conv_bias=0.0) + conv.bias.view(1, -1, 1, 1)
    if conv.in_channels == conv.out_channels:
        found["fold.wrong_axis"] = \
            lambda: _fused(conv, bn, x) + F.conv2d(x, conv.weight * (scale.view(1, -1, 1, 1) - scale.view(-1, 1, 1, 1)),
                                                   padding=1)
    return found


def _variance_factor(got: nn.Module, conv: nn.Module, bn: nn.Module) -> str:
    """What to say when got's weight is the right one with running_var times a constant k != 1 (else "")."""
    __tracebackhide__ = True
    w, gw = conv.weight.detach(), getattr(got, "weight", None)
    if not isinstance(gw, Tensor) or gw.shape != w.shape:
        return ""
    ratio = (gw.detach().double() / w).flatten(1).median(dim=1).values
    k = ((bn.weight / ratio) ** 2 - bn.eps) / bn.running_var
    if torch.isfinite(k).all() and (k.max() - k.min()).abs() < 1e-4 * k.abs().max() and abs(k.mean().item() - 1) > 1e-3:
        return (f" Your weight is the right one with running_var multiplied by {k.mean().item():.4g}. "
                f"{NAMED}{sentence('fold.variance_rescaled')}")
    return ""


def _fold_tensors(conv: nn.Module, bn: nn.Module) -> dict[str, Tensor]:
    """conv's and bn's tensors by name ("conv.weight", "bn.running_var", ...)."""
    return {**{"conv." + k: v for k, v in conv.state_dict().items()},
            **{"bn." + k: v for k, v in bn.state_dict().items()}}


def _fold_unchanged(what: str, conv: nn.Module, bn: nn.Module, before: dict, training: bool) -> None:
    __tracebackhide__ = True
    if bn.training != training:
        raise CheckFailed(f"{what}: bn was in {'training' if training else 'eval'} mode and fold_bn changed its mode; "
                          f"leave it as it was (read bn.running_mean and bn.running_var directly)")
    for name, value in _fold_tensors(conv, bn).items():
        if not torch.equal(before[name], value):
            extra = (" bn ran in TRAINING mode on a batch: that normalises with the batch's statistics and updates "
                     "the running ones; fold with bn.running_mean and bn.running_var, as bn.eval() does."
                     if name.startswith("bn.running") or name.endswith("num_batches_tracked") else "")
            raise CheckFailed(f"{what}: fold_bn changed {name}; leave conv and bn as they were (build a new Conv2d, "
                              f"no in-place edits).{extra}")


def _fold_shares(what: str, got: object, conv: nn.Module) -> None:
    """The folded conv is a new module with its own parameters."""
    __tracebackhide__ = True
    if got is conv or (isinstance(got, nn.Module) and any(
            p.data_ptr() in {q.data_ptr() for q in conv.parameters()} for p in got.parameters())):
        raise CheckFailed(f"{what}: the result shares its weights with conv; return a NEW Conv2d (copy.deepcopy, "
                          f"or a new nn.Conv2d with new Parameters)")


def _fold_output(what: str, got: object, conv: nn.Module, x: Tensor, case: tuple) -> None:
    """The folded conv is a plain Conv2d with a bias, in the conv's dtype, that computes bn.eval()(conv(x))."""
    __tracebackhide__ = True
    if type(got) is not nn.Conv2d:
        raise CheckFailed(f"{what}: expected a plain nn.Conv2d, got {type(got).__name__}")
    if got.bias is None:
        raise CheckFailed(f"{what}: the folded conv needs a bias (the norm's shift and the running mean go there)")
    if got.weight.dtype != conv.weight.dtype:
        raise CheckFailed(f"{what}: the folded weight is {got.weight.dtype}; keep the conv's dtype {conv.weight.dtype}")
    with torch.no_grad():
        out = got(x)
    conv, bn, x = _fold_pair(*case)  # fresh: yours may have changed them
    try:
        _expect(f"{what}, the folded conv on an input of shape {tuple(x.shape)}", out, _fused(conv, bn, x),
                _fold_mistakes(conv, bn, x), "torch.nn.utils.fusion.fuse_conv_bn_eval's (= bn.eval()(conv(x)))")
    except CheckFailed as failure:
        factor = _variance_factor(got, conv, bn) if "It matches none" in str(failure) else ""
        if factor:
            raise CheckFailed(str(failure).split(" It matches none")[0] + factor) from None
        raise


def _fold_case(fold_bn: Callable, case: tuple, state: bool) -> None:
    """fold_bn on one (ni, nf, conv_bias, eps, training, seed) pair: its inputs left alone, and (state False) its
    output right or (state True) a new module."""
    __tracebackhide__ = True
    ni, nf, conv_bias, eps, training, _ = case
    conv, bn, x = _fold_pair(*case)
    what = (f"fold_bn(Conv2d({ni}, {nf}, 3, padding=1, bias={conv_bias}), BatchNorm2d({nf}, eps={eps}) in "
            f"{'training' if training else 'eval'} mode)")
    before = {name: value.clone() for name, value in _fold_tensors(conv, bn).items()}
    got = fold_bn(conv, bn)
    _fold_unchanged(what, conv, bn, before, training)  # a fold that ran bn in training mode shows here first
    if state:
        _fold_shares(what, got, conv)
    else:
        _fold_output(what, got, conv, x, case)


def check_fold_bn(fold_bn: Callable, *aspects: str) -> None:
    """Check a Q4 fold_bn against torch.nn.utils.fusion.fuse_conv_bn_eval; aspects: output, inputs, errors."""
    __tracebackhide__ = True

    def errors() -> None:
        __tracebackhide__ = True
        conv = nn.Conv2d(3, 4, 3).double()
        _raises("fold_bn(Conv2d(3, 4, 3), BatchNorm2d(5))", lambda: fold_bn(conv, nn.BatchNorm2d(5).double()))
        _raises("fold_bn(Conv2d(3, 4, 3), BatchNorm2d(4, track_running_stats=False)) (no running statistics)",
                lambda: fold_bn(conv, nn.BatchNorm2d(4, track_running_stats=False).double()))

    _aspects(aspects, {
        "output": lambda: [_fold_case(fold_bn, case, state=False)
                           for case in ((4, 4, True, BIG_EPS, False, 120), (3, 5, False, 1e-5, True, 121))],
        "inputs": lambda: [_fold_case(fold_bn, case, state=True)
                           for case in ((4, 4, True, BIG_EPS, False, 122), (3, 5, False, 1e-5, True, 123))],
        "errors": errors,
    }, "fold_bn")


# ---- Q9: RunningBatchNorm (its math is written out in the test cells; here only what needs a helper) --------

def check_running_batchnorm(RunningBatchNorm: type, *aspects: str) -> None:
    """Check a Q9 RunningBatchNorm class; aspects: gradients (of one training step, against central differences)."""
    __tracebackhide__ = True
    x = _input(4, 3, 2, 2, seed=90)
    _aspects(aspects, {
        "gradients": lambda: _gradients("RunningBatchNorm(3), one training step from new",
                                        _build(RunningBatchNorm, 3).train(), x, ["mults", "adds"], seed=91),
    }, "running_batchnorm")


# ---- Q9 Part D: recalibrate_bn -------------------------------------------------------------------------------

def _recal_model() -> nn.Module:
    """Conv2d, BatchNorm2d (momentum 0.3), a block in eval (Conv2d, BatchNorm2d), Linear, BatchNorm1d; stale
    statistics (num_batches_tracked 5); the model in training mode except that block."""
    gen = torch.Generator().manual_seed(300)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.BatchNorm2d(3, momentum=0.3), nn.ReLU(),
                          nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)), nn.Flatten(),
                          nn.Linear(16, 5), nn.BatchNorm1d(5, momentum=0.05)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=torch.float64) * 0.5)
        for m in model.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen, dtype=torch.float64))
                m.running_var.copy_(0.5 + torch.rand(m.num_features, generator=gen, dtype=torch.float64))
                m.num_batches_tracked.fill_(5)
    model.train()
    model[3].eval()
    return model


def _bn_layers(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class _RecalibrateCheck:
    """check_recalibrate_bn's aspects, each a method, on three seeded batches."""

    def __init__(self, recalibrate_bn: Callable) -> None:
        self.recalibrate_bn = recalibrate_bn
        gen = torch.Generator().manual_seed(301)
        self.batches = [torch.randn(bs, 2, 4, 4, generator=gen, dtype=torch.float64) * 2 + 1 for bs in (6, 3, 5)]

    def run(self, model: nn.Module, given: object = None) -> nn.Module:
        __tracebackhide__ = True
        returned = self.recalibrate_bn(model, self.batches if given is None else given)
        if returned is not model:
            raise CheckFailed("recalibrate_bn must return the model it was given (the same object)")
        return model

    def simulated(self, momentum: object, reset: bool, first_only: bool = False) -> nn.Module:
        """The statistics torch computes with the layers' momentum set to `momentum` ('own': left as they are)."""
        model = _recal_model()
        for m in _bn_layers(model)[:1] if first_only else _bn_layers(model):
            if reset:
                m.reset_running_stats()
            if momentum != "own":
                m.momentum = momentum
        model.train()
        with torch.no_grad():
            for x in self.batches:
                model(x)
        return model

    def mistakes(self) -> dict[str, nn.Module]:
        """The model each mistake this check knows leaves behind."""
        return {
            "recal.momentum_kept": self.simulated("own", True),
            "recal.momentum_default": self.simulated(0.1, True),
            "recal.not_reset": self.simulated(None, False),
            "recal.skipped": self.simulated(None, True, first_only=True),
        }

    def statistics(self) -> None:
        __tracebackhide__ = True
        from torch.optim.swa_utils import update_bn

        want = _recal_model()
        update_bn(self.batches, want)
        got = self.run(_recal_model())
        mistakes = self.mistakes()
        for i, (g, w) in enumerate(zip(_bn_layers(got), _bn_layers(want))):
            if _close(g.running_mean, w.running_mean) and _close(g.running_var, w.running_var):
                continue
            what = (f"BatchNorm layer {i + 1} of 3: running_mean {g.running_mean.tolist()}, running_var "
                    f"{g.running_var.tolist()}; expected {w.running_mean.tolist()} and {w.running_var.tolist()} (the "
                    f"average of the batch means and of the unbiased batch variances, as update_bn computes them)")
            _recal_layer_mistake(what, i, g, mistakes)
            raise CheckFailed(what)

    def momentum(self) -> None:
        __tracebackhide__ = True
        got = [m.momentum for m in _bn_layers(self.run(_recal_model()))]
        if got != [0.3, 0.1, 0.05]:
            raise CheckFailed(f"after the call the layers' momentum is {got}; it was [0.3, 0.1, 0.05]: restore each "
                              f"layer's own momentum")

    def modes(self) -> None:
        __tracebackhide__ = True
        want = [(n, m.training) for n, m in _recal_model().named_modules()]
        got = [(n, m.training) for n, m in self.run(_recal_model()).named_modules()]
        if got != want:
            if all(t for _, t in got):
                raise CheckFailed("the model is left in train mode: restore every module's own flag "
                              "(model[3] was in eval; model.train(was_training) sets every submodule alike)")
            raise CheckFailed(f"the modes after the call are {got}, before {want}: restore every module's own flag "
                              f"(model.train(was_training) sets every submodule alike)")

    def parameters(self) -> None:
        __tracebackhide__ = True
        before = [p.detach().clone() for p in _recal_model().parameters()]
        model = self.run(_recal_model())
        if any(p.grad is not None for p in model.parameters()):
            raise CheckFailed("a parameter has a .grad after the call: recalibration computes no gradients")
        if not all(torch.equal(p, q) for p, q in zip(model.parameters(), before)):
            raise CheckFailed("the parameters changed: recalibration changes only the running statistics")

    def no_grad(self) -> None:
        __tracebackhide__ = True
        seen = []
        model = _recal_model()
        model.register_forward_hook(lambda *args: seen.append(torch.is_grad_enabled()))
        self.run(model)
        if any(seen):
            raise CheckFailed("autograd was on while the batches ran: run them under torch.no_grad()")
        if not seen:
            raise CheckFailed("the batches never ran through the model")

    def empty(self) -> None:
        __tracebackhide__ = True
        model = _recal_model()
        try:
            self.recalibrate_bn(model, [])
        except ValueError:
            pass
        else:
            raise CheckFailed("with no batches recalibrate_bn must raise ValueError")
        if not all(_close(m.running_mean, o.running_mean) and int(m.num_batches_tracked) == 5
                   for m, o in zip(_bn_layers(model), _bn_layers(_recal_model()))):
            raise CheckFailed("with no batches the statistics must be left as they were (raise before resetting)")


def _recal_layer_mistake(what: str, i: int, g: nn.Module, mistakes: dict[str, nn.Module]) -> None:
    """Fail naming the mistake BatchNorm layer i's wrong statistics (g's) match, if any."""
    __tracebackhide__ = True
    for mistake, model in mistakes.items():
        m = _bn_layers(model)[i]
        if _close(g.running_mean, m.running_mean) and _close(g.running_var, m.running_var):
            raise CheckFailed(f"{what}. {NAMED}{sentence(mistake)}")
    if _close(g.running_mean, torch.zeros_like(g.running_mean)) and _close(g.running_var, torch.ones_like(g.running_var)):
        raise CheckFailed(f"{what}. {NAMED}{sentence('recal.eval_pass')}")
    old = _bn_layers(_recal_model())[i]
    if _close(g.running_mean, old.running_mean):
        raise CheckFailed(f"{what}. {NAMED}{sentence('recal.untouched')}")


def check_recalibrate_bn(recalibrate_bn: Callable, *aspects: str) -> None:
    """Check a Q9 recalibrate_bn against torch.optim.swa_utils.update_bn's statistics; aspects: statistics, momentum,
    modes, parameters, no_grad, empty."""
    __tracebackhide__ = True
    c = _RecalibrateCheck(recalibrate_bn)
    _aspects(aspects, {"statistics": c.statistics, "momentum": c.momentum, "modes": c.modes,
                       "parameters": c.parameters, "no_grad": c.no_grad, "empty": c.empty}, "recalibrate_bn")
