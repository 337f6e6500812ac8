"""Shared scaffolding for the hidden tests: comparisons that name mistakes, a guard against delegating
to torch's own normalization, and paired training runs.

Every check raises AssertionError with a message a student can act on: what was expected, what came
back and, when the output matches a known wrong variant, which mistake that is.
"""

from __future__ import annotations

import contextlib
import math
import re
import warnings
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class DelegationError(RuntimeError):
    """Raised by torch's normalization functions while a test checks the student's own implementation."""


def _summary(t: Tensor) -> str:
    flat = t.detach().flatten()
    head = ", ".join(f"{v:.4g}" for v in flat[:4].tolist())
    return f"shape {tuple(t.shape)}, first values [{head}{', ...' if flat.numel() > 4 else ''}]"


def require_tensor(value: object, what: str) -> Tensor:
    """A real torch.Tensor (not a subclass or an object with a rigged __eq__)."""
    if type(value) is not torch.Tensor and not isinstance(value, nn.Parameter):
        raise AssertionError(f"{what}: expected a torch.Tensor, got {type(value).__name__}")
    return value  # type: ignore[return-value]


def close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    """allclose that treats a shape mismatch or NaN as 'not close' instead of raising."""
    if a.shape != b.shape:
        return False
    return bool(torch.allclose(a.detach().double().cpu(), b.detach().double().cpu(), atol=atol, rtol=rtol))


def _gap(a: Tensor, b: Tensor) -> float:
    """Largest absolute difference (inf for a shape mismatch or NaN)."""
    if a.shape != b.shape:
        return math.inf
    gap = (a.detach().double().cpu() - b.detach().double().cpu()).abs().max().item() if a.numel() else 0.0
    return gap if math.isfinite(gap) else math.inf


def expect_close(
    actual: object,
    expected: Tensor,
    what: str,
    *,
    atol: float = 1e-10,
    rtol: float = 1e-7,
    mistakes: dict[str, Tensor] | None = None,
    hint: str | None = None,
) -> None:
    """Assert `actual` equals `expected` within tolerance; name the mistake whose output it matches.

    `mistakes` maps a one-sentence description of a known mistake to the output that mistake gives
    on the same input. They are compared with a looser tolerance, since the student may write the
    wrong formula in a numerically different way.
    """
    actual = require_tensor(actual, what)
    if actual.shape != expected.shape:
        raise AssertionError(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}")
    if actual.dtype != expected.dtype:
        raise AssertionError(f"{what}: expected dtype {expected.dtype}, got {actual.dtype} (keep the input's dtype)")
    if close(actual, expected, atol, rtol):
        return
    if torch.isnan(actual).any():
        message = f"{what}: the result contains NaN"
    else:
        diff = (actual.detach().double() - expected.detach().double()).abs().max().item()
        message = f"{what}: expected {_summary(expected)}; got {_summary(actual)} (largest difference {diff:.3g})"
    # Name the known mistake the output matches: loosely (the student may write the wrong formula in a
    # numerically different way), but clearly closer to it than to the right answer, and the closest one.
    gap_right = _gap(actual, expected)
    named = None
    for description, wrong in (mistakes or {}).items():
        gap = _gap(actual, wrong)
        if close(actual, wrong, atol=1e-6, rtol=1e-5) and gap < gap_right / 10 and (named is None or gap < named[0]):
            named = (gap, description)
    if named:
        message += f"\nThis is what you get if {named[1]}"
    elif hint:
        message += f"\nHint: {hint}"
    raise AssertionError(message)


def expect_raises(call: Callable[[], object], what: str, exc: type[BaseException] = ValueError,
                  mentions: tuple[int, ...] = ()) -> None:
    """`call()` must raise `exc` whose message names every number in `mentions`, as the stub promises."""
    try:
        call()
    except exc as err:
        text = str(err)
        missing = [m for m in mentions if not re.search(rf"(?<![\d.]){m}(?![\d.])", text)]
        if missing:
            raise AssertionError(f"{what}: the {exc.__name__} should name {' and '.join(map(str, mentions))} "
                                 f"(the stub's contract) so the user can see what is wrong; its message was "
                                 f"{text!r}") from None
        return
    except Exception as err:  # noqa: BLE001 - an assert in the student's code is the wrong error type too
        raise AssertionError(f"{what}: expected {exc.__name__} (the stub's contract), got "
                             f"{type(err).__name__}: {err}") from None
    raise AssertionError(f"{what}: expected {exc.__name__} (the stub's contract); nothing was raised")


_FUNCTIONAL = ("batch_norm", "layer_norm", "instance_norm", "group_norm")
_TORCH = ("batch_norm", "layer_norm", "instance_norm", "group_norm", "native_batch_norm", "native_layer_norm",
          "native_group_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training")
_MODULES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


@contextlib.contextmanager
def own_implementation(layer: str) -> Iterator[None]:
    """While active, torch's own normalization raises DelegationError: the layer must do the math itself."""

    def refuse(name: str) -> Callable:
        def raiser(*args, **kwargs):
            raise DelegationError(
                f"{layer} called torch's {name}. This exercise is to implement the normalization yourself "
                f"(means, variances, scale and shift with tensor operations); delegating to torch's own "
                f"normalization gets no points for this test."
            )

        return raiser

    saved = []
    for owner, names in ((F, _FUNCTIONAL), (torch, _TORCH)):
        for name in names:
            if hasattr(owner, name):
                saved.append((owner, name, getattr(owner, name)))
                setattr(owner, name, refuse(f"{owner.__name__}.{name}"))
    for cls in _MODULES:
        saved.append((cls, "forward", cls.__dict__.get("forward")))
        cls.forward = refuse(f"nn.{cls.__name__}")
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def call_own(layer: nn.Module, *inputs: Tensor, name: str | None = None) -> Tensor:
    """layer(*inputs) with torch's normalization refused; a DelegationError becomes a clear failure."""
    name = name or type(layer).__name__
    try:
        with own_implementation(name), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return layer(*inputs)
    except DelegationError as err:
        raise AssertionError(str(err)) from None


def seeded_input(*shape: int, seed: int = 0, dtype: torch.dtype = torch.float64) -> Tensor:
    """A test input in which every channel and every example has its own offset and scale.

    A reduction over the wrong axes, or statistics shared across what should be separate groups,
    then changes the output by a large amount.
    """
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    if len(shape) >= 2:
        view = [shape[0], shape[1]] + [1] * (len(shape) - 2)
        offset = torch.randn(shape[0], 1, generator=g, dtype=dtype) * 2 + torch.linspace(-3, 3, shape[1], dtype=dtype)
        scale = torch.rand(shape[0], 1, generator=g, dtype=dtype) + torch.linspace(0.5, 3, shape[1], dtype=dtype)
        x = x * scale.reshape(view) + offset.reshape(view)
    return x


def random_affine(num_features: int, seed: int = 1, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
    """Non-uniform gamma and beta (never ones and zeros), so a wrong shape or a missing affine shows."""
    g = torch.Generator().manual_seed(seed)
    gamma = torch.rand(num_features, generator=g, dtype=dtype) * 1.5 + 0.5
    beta = torch.randn(num_features, generator=g, dtype=dtype)
    return gamma, beta


# ---------------------------------------------------------------------------------------------
# Paired training: the student's layer against the reference layer, same everything else.
# ---------------------------------------------------------------------------------------------

def _grading_batches(n_steps: int, bs: int, seed: int) -> list[tuple[Tensor, Tensor]]:
    """A fixed, seeded sequence of normalised MNIST batches shaped (bs, 1, 28, 28)."""
    from course_lib import get_data, normalize_to

    x_train, y_train, x_valid, _ = get_data()
    x_train, _ = normalize_to(x_train, x_valid)
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(x_train), generator=g)
    batches = []
    for step in range(n_steps):
        idx = order[(step * bs) % len(order):][:bs]
        batches.append((x_train[idx].view(-1, 1, 28, 28), y_train[idx]))
    return batches


def _copy_weights(src: nn.Module, dst: nn.Module) -> None:
    """Give dst's convolutions and linear layers exactly src's initial weights, in order."""
    kinds = (nn.Conv2d, nn.Linear)
    src_layers = [m for m in src.modules() if isinstance(m, kinds)]
    dst_layers = [m for m in dst.modules() if isinstance(m, kinds)]
    if len(src_layers) != len(dst_layers):
        raise AssertionError(f"the model has {len(dst_layers)} conv/linear layers; expected {len(src_layers)}")
    with torch.no_grad():
        for s, d in zip(src_layers, dst_layers):
            if s.weight.shape != d.weight.shape:
                raise AssertionError(f"a layer has weight shape {tuple(d.weight.shape)}; expected {tuple(s.weight.shape)}")
            d.weight.copy_(s.weight)
            if s.bias is not None and d.bias is not None:
                d.bias.copy_(s.bias)


def train_losses(model: nn.Module, batches: list[tuple[Tensor, Tensor]], lr: float) -> list[float]:
    """Plain SGD over the batches; the training loss of each step."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    losses = []
    for xb, yb in batches:
        loss = F.cross_entropy(model(xb), yb)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    return losses


def paired_losses(
    make_model: Callable[[], nn.Module],
    make_reference: Callable[[], nn.Module],
    *,
    steps: int = 30,
    bs: int = 64,
    lr: float = 0.4,
    seed: int = 0,
) -> tuple[list[float], list[float]]:
    """Train the student's model and the reference model from identical weights on identical batches.

    Runs on the CPU with one thread so the result is the same on every machine and every run.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        batches = _grading_batches(steps, bs, seed)
        torch.manual_seed(seed)
        reference = make_reference()
        torch.manual_seed(seed)
        model = make_model()
        _copy_weights(reference, model)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref_losses = train_losses(reference, batches, lr)
            torch.manual_seed(seed)
            losses = train_losses(model, batches, lr)
    finally:
        torch.set_num_threads(threads)
    return losses, ref_losses


def expect_curve_like(losses: list[float], reference: list[float], what: str, *, rtol: float = 0.05) -> None:
    """The student's loss curve tracks the reference: finite, and the mean loss over the last third within rtol."""
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad:
        raise AssertionError(f"{what}: the training loss became {losses[bad[0]]} at step {bad[0] + 1}")
    third = max(1, len(losses) // 3)
    mine = sum(losses[-third:]) / third
    ref = sum(reference[-third:]) / third
    if abs(mine - ref) > rtol * abs(ref):
        raise AssertionError(
            f"{what}: over the last {third} of {len(losses)} steps the mean training loss was {mine:.4f}; "
            f"the reference layer, trained from the same weights on the same batches, gets {ref:.4f} "
            f"(allowed: within {rtol:.0%})"
        )
