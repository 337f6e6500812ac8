"""Comparisons that fail with a message a student can act on: what was expected, what came back and, when
the output matches a known wrong variant or shows a recognisable pattern, which mistake that is."""

from __future__ import annotations

import math
import re
from collections.abc import Callable

import torch

from course_judge.records import Fail, Other, Raised
from course_lib.mistakes import NAMED, naming

Tensor = torch.Tensor


def describe(value: object) -> str:
    """A short description of a recorded value that is not what was asked for."""
    if isinstance(value, Raised):
        return f"it raised {value}"
    if isinstance(value, Other):
        return f"it returned a {value.type}"
    if isinstance(value, Tensor):
        return f"it returned a tensor of shape {tuple(value.shape)}"
    return f"it returned {type(value).__name__} {str(value)[:60]}"


def tensor(value: object, what: str) -> Tensor:
    """A recorded value that must be a tensor."""
    if isinstance(value, Raised):
        if value.is_a("DelegationError"):
            raise Fail(delegation_message(value.message))
        raise Fail(f"{what}: the call raised {value}")
    if not isinstance(value, Tensor):
        raise Fail(f"{what}: expected a torch.Tensor; {describe(value)}")
    return value


# How a failure message names the catalogued mistake the output matched (course_lib.mistakes, shared with the
# visible checks); the verdict carries the mistake's id as data.
NAMED_MISTAKE = NAMED

TORCH_WHY = ("This exercise is to implement the normalization yourself (means, variances, scale and shift with "
             "tensor operations); delegating to torch's own normalization gets no points for this test.")


def delegation_message(detail: str) -> str:
    """The message for a layer that calls torch's own normalization."""
    return f"{detail}. {TORCH_WHY}"


def close(a: Tensor, b: Tensor, atol: float, rtol: float) -> bool:
    """allclose that treats a shape mismatch or NaN as 'not close' instead of raising."""
    if a.shape != b.shape:
        return False
    return bool(torch.allclose(a.detach().double(), b.detach().double(), atol=atol, rtol=rtol))


def gap(a: Tensor, b: Tensor) -> float:
    """Largest absolute difference (inf for a shape mismatch or NaN)."""
    if a.shape != b.shape:
        return math.inf
    if not a.numel():
        return 0.0
    g = (a.detach().double() - b.detach().double()).abs().max().item()
    return g if math.isfinite(g) else math.inf


def summary(t: Tensor) -> str:
    flat = t.detach().flatten()
    head = ", ".join(f"{v:.4g}" for v in flat[:4].tolist())
    return f"shape {tuple(t.shape)}, first values [{head}{', ...' if flat.numel() > 4 else ''}]"


def name_mistake(actual: Tensor, expected: Tensor, mistakes: dict[str, Tensor] | None) -> str | None:
    """The id of the known mistake whose output `actual` matches: loosely (the student may write the wrong formula in
    a numerically different way), but clearly closer to it than to the right answer, and the closest one."""
    gap_right = gap(actual, expected)
    named = None
    for mistake, wrong in (mistakes or {}).items():
        g = gap(actual, wrong)
        if close(actual, wrong, atol=1e-6, rtol=1e-5) and g < gap_right / 10 and (named is None or g < named[0]):
            named = (g, mistake)
    return named[1] if named else None


def expect_close(actual: object, expected: Tensor, what: str, *, atol: float = 1e-10, rtol: float = 1e-7,
                 mistakes: dict[str, Tensor] | None = None, hint: str | None = None,
                 diagnose: Callable[[Tensor], str | None] | None = None, dtype: bool = True) -> Tensor:
    """`actual` (a recorded value) equals `expected` within tolerance; else Fail naming the mistake.

    `mistakes` maps a catalogued mistake's id (course_lib.mistakes) to the output that mistake gives on the same
    input; the message names it by its sentence, the Fail by its id. `diagnose` reads the wrong output itself (which
    statistic, which axis) when no known mistake matches.
    """
    actual = tensor(actual, what)
    if actual.shape != expected.shape:
        raise Fail(f"{what}: expected shape {tuple(expected.shape)}, got {tuple(actual.shape)}")
    if dtype and actual.dtype != expected.dtype:
        raise Fail(f"{what}: expected dtype {expected.dtype}, got {actual.dtype} (keep the input's dtype)")
    if close(actual, expected, atol, rtol):
        return actual
    if torch.isnan(actual).any():
        message = f"{what}: the result contains NaN"
    else:
        diff = (actual.double() - expected.double()).abs().max().item()
        message = f"{what}: expected {summary(expected)}; got {summary(actual)} (largest difference {diff:.3g})"
    named = name_mistake(actual, expected, mistakes)
    found = None if named else (diagnose(actual) if diagnose else None)
    if named:
        message += naming(named)
    elif found:
        message += f"\n{found}"
    elif hint:
        message += f"\nHint: {hint}"
    raise Fail(message, mistake=named)


def expect_raises(value: object, what: str, exc: str = "ValueError", mentions: tuple[int, ...] = ()) -> None:
    """A recorded call must have raised `exc` (or a subclass) whose message names every number in `mentions`."""
    if isinstance(value, Raised):
        if value.is_a("DelegationError"):
            raise Fail(delegation_message(value.message))
        if not value.is_a(exc):
            raise Fail(f"{what}: expected {exc} (the stub's contract), got {value}")
        if not value.message.strip():
            raise Fail(f"{what}: the {exc} has no message; say what is wrong")
        missing = [m for m in mentions if not re.search(rf"(?<![\d.]){m}(?![\d.])", value.message)]
        if missing:
            raise Fail(f"{what}: the {exc} should name {' and '.join(map(str, mentions))} (the stub's contract) so "
                       f"the user can see what is wrong; its message was {value.message!r}")
        return
    raise Fail(f"{what}: expected {exc} (the stub's contract); nothing was raised")


def expect_no_error(value: object, what: str) -> object:
    """A recorded call that must not have raised."""
    if isinstance(value, Raised):
        if value.is_a("DelegationError"):
            raise Fail(delegation_message(value.message))
        raise Fail(f"{what}: raised {value}")
    return value


def expect_curve_like(losses: object, reference: list[float], what: str, *, rtol: float = 0.05) -> None:
    """The student's loss curve tracks the reference: finite, and the mean loss over the last third within rtol."""
    losses = expect_no_error(losses, what)
    if not isinstance(losses, list) or not all(isinstance(v, (int, float)) for v in losses):
        raise Fail(f"{what}: the training run recorded no losses ({describe(losses)})")
    if len(losses) != len(reference):
        raise Fail(f"{what}: the run recorded {len(losses)} losses, expected {len(reference)}")
    bad = [i for i, v in enumerate(losses) if not math.isfinite(v)]
    if bad:
        raise Fail(f"{what}: the training loss became {losses[bad[0]]} at step {bad[0] + 1}")
    third = max(1, len(losses) // 3)
    mine = sum(losses[-third:]) / third
    ref = sum(reference[-third:]) / third
    if abs(mine - ref) > rtol * abs(ref):
        first = next((i for i, (a, b) in enumerate(zip(losses, reference)) if abs(a - b) > rtol * abs(b)), None)
        where = f" The curves part at step {first + 1} ({losses[first]:.4f} against {reference[first]:.4f})." \
            if first is not None else ""
        raise Fail(f"{what}: over the last {third} of {len(losses)} steps the mean training loss was {mine:.4f}; the "
                   f"reference layer, trained from the same weights on the same batches, gets {ref:.4f} (allowed: "
                   f"within {rtol:.0%}).{where}")


def expect_gradients(recorded: object, reference: dict[str, Tensor], what: str, labels: dict[str, str], *,
                     hint: str = "", seed: int = 0, directions: int = 2) -> None:
    """The gradients a probe recorded (course_recorder.probes.gradients) are right.

    When the recorded output equals the reference output, each gradient must equal the judge's own (autograd on
    the reference implementation, same inputs). When the output is wrong (another test says so), the gradient
    is checked the way gradcheck does: autograd's gradient against finite differences of the student's own
    function, so one mistake in the forward pass does not also cost this test.
    """
    recorded = expect_no_error(recorded, what)
    if not isinstance(recorded, dict) or "output" not in recorded:
        raise Fail(f"{what}: no gradients were recorded ({describe(recorded)})")
    for key, label in labels.items():
        if recorded.get(key) is None:
            raise Fail(f"{what}: the output does not depend on {label} through autograd (was it detached, or computed "
                       f"under torch.no_grad()?)")
    out = tensor(recorded["output"], f"{what}: the output")
    if close(out, reference["output"], 1e-9, 1e-7):
        for key, label in labels.items():
            expect_close(recorded[key], reference[key], f"{what}: the gradient with respect to {label}", atol=1e-8,
                         rtol=1e-6, hint=hint if key == "x" else None)
        return
    g = torch.Generator().manual_seed(seed)
    for key, label in labels.items():
        grad = tensor(recorded[key], f"{what}: the gradient with respect to {label}")
        for k in range(directions):
            d = torch.randn(grad.shape, generator=g, dtype=torch.float64)
            numeric = recorded.get(f"{key}/{k}")
            if not isinstance(numeric, (int, float)):
                raise Fail(f"{what}: the finite differences for {label} were not recorded")
            analytic = float((grad.double() * d).sum())
            if not abs(analytic - numeric) <= 1e-6 * (1 + abs(numeric)) + 1e-5 * abs(numeric):
                raise Fail(f"{what}: the gradient with respect to {label} does not match finite differences of your "
                           f"own layer (autograd gives {analytic:.6g} along a random direction, the numbers give "
                           f"{numeric:.6g}).{(' ' + hint) if hint and key == 'x' else ''}")


def layout_mistake(value: object) -> str | None:
    """The .view() mistake's id (Fail's `mistake`) for a call that raised because its input was not contiguous, else
    None."""
    return "layout.view" if isinstance(value, Raised) and "view size is not compatible" in value.message else None


def layout_hint(value: object) -> str:
    """The line naming the .view() mistake for a call that raised because its input was not contiguous ('' otherwise);
    the Fail that carries it says mistake=layout_mistake(value)."""
    mistake = layout_mistake(value)
    return naming(mistake) if mistake else ""
