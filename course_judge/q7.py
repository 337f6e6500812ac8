"""Q7's verdicts: the student's InstanceNorm against F.instance_norm, per example and channel."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_judge import forbid, verdict
from course_judge.compare import close, expect_close, expect_no_error, expect_raises, tensor
from course_judge.diagnose import normalisation
from course_judge.norms import (LAYOUT_WHAT, distinguishable, do_nothing_mistakes, dropped_keepdim,
                                expect_examples_independent, expect_fresh, expect_layer_gradients,
                                expect_no_buffers, expect_own_parameters, expect_train_equals_eval,
                                layout_failure, normalisations, normalise)
from course_judge.records import Fail, Raised, Records
from course_lib.mistakes import sentence
from course_recorder import q7
from course_recorder.inputs import random_affine, seeded_input, seeded_normal

Tensor = torch.Tensor
AXES = (2, 3)  # InstanceNorm: every position of one channel of one example
USES = ("instancenorm",)
forbid("Q7", "instancenorm")
LESSON_EPS = sentence("in.lesson_eps")  # also said where the test of the default eps fails, and beside test_output's


def view(t: Tensor) -> Tensor:
    return t.reshape(1, -1, 1, 1)


def in_mistakes(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> dict[str, Tensor]:
    """What InstanceNorm(nf, eps) with per-channel mults=gamma and adds=beta returns under each known mistake."""
    g, b = view(gamma), view(beta)

    def affine(t: Tensor) -> Tensor:
        return t * g + b

    found = {
        "in.unbiased_variance": affine(normalise(x, AXES, eps, unbiased=True)),
        "norm.eps_outside_sqrt_or_std": affine(normalise(x, AXES, eps, eps_outside=True)),
        "norm.no_eps": affine(normalise(x, AXES, 0.0)),
        "in.axes_batchnorm": affine(normalise(x, (0, 2, 3), eps)),
        "in.axes_layernorm": affine(normalise(x, (1, 2, 3), eps)),
        "in.axes_rows": affine(normalise(x, (3,), eps)),
        "in.affine_before_normalising": normalise(x * g + b, AXES, eps),
        "norm.mean_not_subtracted": affine(normalise(x, AXES, eps, center=False)),
        "norm.no_scale_shift": normalise(x, AXES, eps),
        "norm.scale_shift_swapped": normalise(x, AXES, eps) * b + g,
        **do_nothing_mistakes(x, affine(x), "in.input_scaled_shifted", "in.input_returned_or_scaled"),
    }
    if x.shape[2:] == x.shape[:2]:  # only then does a dropped keepdim broadcast instead of raising
        found["in.no_keepdim"] = affine(dropped_keepdim(x, AXES, eps))
    return distinguishable(found, affine(normalise(x, AXES, eps)))


def _set(r: Records, key: str, nf: int) -> None:
    if isinstance(r.get(key), Raised):
        raise Fail(f"InstanceNorm.mults and .adds must be nn.Parameters of shape ({nf}, 1, 1), one value per channel; "
                   f"the test could not set them ({r.get(key).message})")


@verdict("Q7", "test_parameters")
def parameters(r: Records) -> None:
    for nf, eps in q7.PARAMETER_CASES:
        facts = r.get(f"nf{nf}")
        attributes = facts["attributes"]
        if attributes.get("eps") != eps:
            raise Fail(f"InstanceNorm({nf}, eps={eps}) should store eps as self.eps")
        if attributes.get("nf") != nf:
            raise Fail(f"InstanceNorm({nf}) should store nf as self.nf (the stub's contract); got "
                       f"{attributes.get('nf', 'no self.nf')}")
        params = facts["parameters"]
        if set(params) != {"mults", "adds"}:
            raise Fail(f"the learned parameters must be exactly mults and adds, got {sorted(params)}")
        for name, start in (("mults", torch.ones(nf, 1, 1)), ("adds", torch.zeros(nf, 1, 1))):
            value = tensor(params[name], f"InstanceNorm.{name}")
            if tuple(value.shape) != (nf, 1, 1):
                raise Fail(f"InstanceNorm({nf}).{name} should have shape ({nf}, 1, 1), one value per channel, got "
                           f"{tuple(value.shape)}")
            if value.dtype != torch.float32:
                raise Fail(f"InstanceNorm.{name} should start as float32, got {value.dtype}")
            if not torch.equal(value, start):
                raise Fail(f"InstanceNorm.{name} must start as {'ones' if start.sum() else 'zeros'}")
        expect_no_buffers(sorted(facts["buffers"]), "InstanceNorm")
        double = r.get(f"nf{nf}/double")
        if isinstance(double, Raised) or any(tensor(double["parameters"].get(n), n).dtype != torch.float64
                                             for n in ("mults", "adds")):
            raise Fail("after .double(), mults and adds should be float64")
    expect_own_parameters(r.get("first/set"), r.get("second")["parameters"], {"mults": 1.0, "adds": 0.0}, "InstanceNorm")
    default = r.get("default")["attributes"].get("eps")
    if default != 1e-5:
        raise Fail(LESSON_EPS[0].upper() + LESSON_EPS[1:] if default == 1.0 else
                   f"InstanceNorm(nf) should default to eps=1e-5 (the stub's signature); got eps={default}")


def _diagnose(x: Tensor, expected: Tensor, eps: float, gamma: Tensor, beta: Tensor):
    return lambda out: normalisation(out, x, expected, axes=AXES, eps=eps, gamma=gamma, beta=beta, layer="InstanceNorm")


@verdict("Q7", "test_output", uses=USES)
def output(r: Records) -> None:
    try:
        _output(r)
    except Fail as err:
        default = r.get("default")["attributes"].get("eps")
        if default == 1.0 and LESSON_EPS not in str(err):
            raise Fail(f"{err}\nAlso, {LESSON_EPS}") from None
        raise


def _output(r: Records) -> None:
    shape, eps, seed = q7.FRESH
    x = seeded_input(*shape, seed=seed)
    ones, zeros = torch.ones(shape[1], dtype=x.dtype), torch.zeros(shape[1], dtype=x.dtype)
    expected = F.instance_norm(x, eps=eps)
    expect_fresh(r.get("fresh/facts")["parameters"], {"mults": 1.0, "adds": 0.0}, f"InstanceNorm({shape[1]}, eps={eps})")
    expect_close(r.get("fresh"), expected, f"output of a fresh InstanceNorm({shape[1]}, eps={eps}) (mults=1, adds=0)",
                 mistakes=in_mistakes(x, ones, zeros, eps), diagnose=_diagnose(x, expected, eps, ones, zeros))
    for i, (shape, eps, seed) in enumerate(q7.OUTPUT_CASES):
        x = seeded_input(*shape, seed=seed)
        gamma, beta = random_affine(shape[1], seed=seed + 10)
        _set(r, f"case{i}/set", shape[1])
        expected = F.instance_norm(x, weight=gamma, bias=beta, eps=eps)
        expect_close(r.get(f"case{i}"), expected, f"output for an input of shape {shape} with eps={eps}",
                     mistakes=in_mistakes(x, gamma, beta, eps), diagnose=_diagnose(x, expected, eps, gamma, beta))
    shape, seed = q7.FLOAT32
    x32 = seeded_input(*shape, seed=seed, dtype=torch.float32)
    x64 = x32.double()
    lesson = {"in.lesson_eps": F.instance_norm(x64, eps=1.0).float(),
              "in.lesson_instancenorm": normalise(x64, AXES, 1.0, unbiased=True).float()}
    expect_close(r.get("float32"), F.instance_norm(x32, eps=1e-5),
                 f"output of InstanceNorm({shape[1]}) (the default eps) for a float32 input", atol=1e-5, rtol=1e-4,
                 mistakes=lesson)
    for layout, shape, eps, seed in q7.LAYOUTS:
        x = seeded_input(*shape, seed=seed)
        gamma, beta = random_affine(shape[1], seed=seed + 10)
        _set(r, f"{layout}/set", shape[1])
        layout_failure(r.get(layout), layout)
        expect_close(r.get(layout), F.instance_norm(x, weight=gamma, bias=beta, eps=eps),
                     f"output for {LAYOUT_WHAT[layout]} of shape {shape}, eps={eps}", mistakes=in_mistakes(x, gamma, beta, eps))


def in_normalised(x: Tensor, eps: float) -> list[Tensor]:
    """x normalised per example and channel over (H, W) or, the wrong axes but still a normalization, per example over
    (C, H, W) (norms.normalisations). Statistics over the batch are not among them: per channel they are a scale and
    shift of the input, which a layer that does nothing also gives."""
    return normalisations(x, eps, (AXES, (1, 2, 3)))


@verdict("Q7", "test_independence", uses=USES)
def independence(r: Records) -> None:
    for i, (shape, eps, seed) in enumerate(q7.INDEPENDENCE):
        x = seeded_input(*shape, seed=seed)
        _set(r, f"case{i}/set", shape[1])
        expect_examples_independent(r, f"case{i}", x, "InstanceNorm", in_normalised(x, eps))
        whole = tensor(r.get(f"case{i}/whole"), "the output")
        for c in range(shape[1]):
            out = tensor(expect_no_error(r.get(f"case{i}/channel{c}"), "InstanceNorm"), "the output")
            others = [k for k in range(shape[1]) if k != c]
            if not close(out[:, others], whole[:, others], 1e-10, 1e-8):
                raise Fail(f"InstanceNorm: changing channel {c} of an input of shape {shape} changed the other channels' "
                           f"output: each channel must be normalised with its own statistics")
            # A positive scale and a shift of a map are undone by its own normalization (up to eps).
            if eps < 1e-3 and not close(out[:, c], whole[:, c], 1e-4, 1e-4):
                raise Fail(f"InstanceNorm: scaling and shifting channel {c} changed its output: a map's own mean and "
                           f"variance must remove its offset and scale")


@verdict("Q7", "test_train_equals_eval", uses=USES)
def train_equals_eval(r: Records) -> None:
    for i, (shape, eps, seed) in enumerate(q7.TRAIN_EVAL):
        _set(r, f"case{i}/set", shape[1])
        x = seeded_input(*shape, seed=seed)
        expect_train_equals_eval(r, f"case{i}", x, "InstanceNorm", in_normalised(x, eps))


NAN_HINT = ("a single value v has the unbiased variance 0/0 = NaN, and without eps (v - v) / sqrt(0) = 0/0 is NaN too: "
            "use the biased variance (divide by H*W = 1), which is 0, and eps inside the square root, so the normalised "
            "value is (v - v) / sqrt(0 + eps) = 0 and the output is adds")


@verdict("Q7", "test_one_by_one_map", uses=USES)
def one_by_one_map(r: Records) -> None:
    for i, (n, nf, eps, seed) in enumerate(q7.ONE_BY_ONE):
        _, beta = random_affine(nf, seed=seed + 30)
        _set(r, f"case{i}/set", nf)
        for mode in ("train", "eval"):
            what = f"output on a 1x1 map of shape {(n, nf, 1, 1)} ({'training' if mode == 'train' else 'eval'} mode)"
            out = tensor(r.get(f"case{i}/{mode}"), what)
            if torch.isnan(out).any():
                raise Fail(f"InstanceNorm on a 1x1 map of shape {(n, nf, 1, 1)} returned NaN: {NAN_HINT}")
            x = q7.one_by_one_input(n, nf, seed)
            gamma = random_affine(nf, seed=seed + 30)[0].reshape(1, -1, 1, 1)
            wrong = {"in.zeros_returned": torch.zeros_like(x),
                     **do_nothing_mistakes(x, x * gamma + beta.reshape(1, -1, 1, 1), "in.input_scaled_shifted",
                                           "in.input_returned_or_scaled")}
            expect_close(out, beta.reshape(1, -1, 1, 1).expand(n, nf, 1, 1), f"{what}: adds, whatever the input",
                         atol=1e-12, mistakes=wrong)
    grad = tensor(r.get("gradient"), "the gradient on a 1x1 map")
    if not torch.isfinite(grad).all() or grad.abs().gt(1e-12).any():
        raise Fail(f"on a 1x1 map the output does not depend on the input, so its gradient must be 0; got "
                   f"{grad.flatten().tolist()}")


def _reference_gradients(x: Tensor, gamma: Tensor, beta: Tensor, eps: float, weights: Tensor,
                         detached: bool = False) -> dict[str, Tensor]:
    """Autograd on the contract (`detached`: with the mean and variance taken as constants, a known mistake)."""
    xs, g, b = (t.clone().requires_grad_(True) for t in (x, gamma, beta))
    if detached:
        mean, var = xs.detach().mean(AXES, keepdim=True), xs.detach().var(AXES, keepdim=True, correction=0)
        out = (xs - mean) / (var + eps).sqrt() * view(g) + view(b)
    else:
        out = F.instance_norm(xs, weight=g, bias=b, eps=eps)
    grads = torch.autograd.grad((out * weights).sum(), (xs, g, b))
    return {"output": out.detach(), "x": grads[0], "mults": grads[1].reshape(-1, 1, 1), "adds": grads[2].reshape(-1, 1, 1)}


@verdict("Q7", "test_gradients", uses=USES)
def gradients(r: Records) -> None:
    for i, (shape, eps, seed, training) in enumerate(q7.GRADIENT_CASES):
        gamma, beta = random_affine(shape[1], seed=seed + 40)
        x = seeded_input(*shape, seed=seed)
        weights = seeded_normal(*shape, seed=seed + 100)
        what = f"InstanceNorm ({'training' if training else 'eval'} mode, input shape {shape}, eps={eps})"
        expect_layer_gradients(r.get(f"case{i}"), x, in_normalised(x, eps), "InstanceNorm", what,
                               _reference_gradients(x, gamma, beta, eps, weights),
                               _reference_gradients(x, gamma, beta, eps, weights, detached=True),
                               {"x": "the input x", "mults": "mults", "adds": "adds"})


ERROR_WHAT = ("an input with 4 channels for InstanceNorm(3)", "a 2-D input of shape (4, 3)",
              "a 3-D input of shape (2, 3, 4)", "an input with 3 channels for InstanceNorm(1)",
              "an input with 2 channels for InstanceNorm(4)")


@verdict("Q7", "test_clear_errors")
def clear_errors(r: Records) -> None:
    for i, what in enumerate(ERROR_WHAT):
        expect_raises(r.get(f"case{i}"), what)
