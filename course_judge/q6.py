"""Q6's verdicts: the student's LayerNorm (one scalar scale and shift) against F.layer_norm over (C, H, W)."""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from course_judge import forbid, verdict
from course_judge.compare import delegation_message, expect_close, expect_raises, tensor
from course_judge.diagnose import normalisation
from course_judge.norms import (LAYOUT_WHAT, distinguishable, do_nothing_mistakes, dropped_keepdim,
                                expect_examples_independent, expect_fresh, expect_layer_gradients,
                                expect_no_buffers, expect_own_parameters, expect_train_equals_eval,
                                layout_failure, normalisations, normalise)
from course_judge.records import Fail, Raised, Records
from course_judge.reference import expect_training, lesson_cnn, reference_losses
from course_lib.mistakes import naming
from course_recorder import q6
from course_recorder.inputs import seeded_input, seeded_normal

Tensor = torch.Tensor
AXES = (1, 2, 3)  # LayerNorm of conv activations: every channel and position of one example
USES = ("layernorm",)
forbid("Q6", "layernorm")


def ln_mistakes(x: Tensor, mult: float, add: float, eps: float) -> dict[str, Tensor]:
    """What LayerNorm(eps) with scalar mult and add returns on x under each known mistake."""

    def affine(t: Tensor) -> Tensor:
        return t * mult + add

    found = {
        "ln.unbiased_variance": affine(normalise(x, AXES, eps, unbiased=True)),
        "norm.eps_outside_sqrt_or_std": affine(normalise(x, AXES, eps, eps_outside=True)),
        "norm.no_eps": affine(normalise(x, AXES, 0.0)),
        "ln.axes_instancenorm": affine(normalise(x, (2, 3), eps)),
        "ln.axes_batchnorm": affine(normalise(x, (0, 2, 3), eps)),
        "ln.axes_all": affine(normalise(x, (0, 1, 2, 3), eps)),
        "ln.axes_channels": affine(normalise(x, (1,), eps)),
        "ln.affine_before_normalising": normalise(x * mult + add, AXES, eps),
        "norm.mean_not_subtracted": affine(normalise(x, AXES, eps, center=False)),
        "ln.no_scale_shift": normalise(x, AXES, eps),
        "ln.scale_shift_swapped": normalise(x, AXES, eps) * add + mult,
        **do_nothing_mistakes(x, affine(x), "ln.input_scaled_shifted", "ln.input_returned_or_scaled"),
    }
    if x.shape[-1] == x.shape[0]:  # only then does a dropped keepdim broadcast instead of raising
        found["ln.no_keepdim"] = (
            affine(dropped_keepdim(x, AXES, eps)))
    return distinguishable(found, affine(normalise(x, AXES, eps)))


def _set(r: Records, key: str) -> None:
    facts = r.get(key.replace("/set", "/facts"))
    shapes = {n: tuple(tensor(facts["parameters"][n], n).shape) for n in ("mult", "add") if n in facts["parameters"]}
    if isinstance(r.get(key), Raised) or any(s != () for s in shapes.values()):
        raise Fail("LayerNorm.mult and .add must each be a single learned number: an nn.Parameter holding a 0-dim "
                   "tensor of shape (); the test could not set them (one value per channel is InstanceNorm's and BatchNorm's affine, "
                   "not this LayerNorm's)")


@verdict("Q6", "test_parameters")
def parameters(r: Records) -> None:
    for i, eps in enumerate(q6.PARAMETER_EPS):
        facts = r.get(f"eps{i}")
        if facts["attributes"].get("eps") != eps:
            raise Fail(f"LayerNorm(eps={eps}) should store eps as self.eps")
        params = facts["parameters"]
        if set(params) != {"mult", "add"}:
            raise Fail(f"the learned parameters must be exactly mult and add, got {sorted(params)}")
        for name, start in (("mult", 1.0), ("add", 0.0)):
            value = tensor(params[name], f"LayerNorm.{name}")
            if value.shape != ():
                raise Fail(f"LayerNorm.{name} must be a single learned number, a 0-dim tensor of shape (); got shape "
                           f"{tuple(value.shape)} (one value per channel is InstanceNorm's and BatchNorm's affine)")
            if value.dtype != torch.float32:
                raise Fail(f"LayerNorm.{name} should start as float32, got {value.dtype}")
            if value.item() != start:
                raise Fail(f"LayerNorm.{name} must start as {start}, got {value.item()}")
        expect_no_buffers(sorted(facts["buffers"]), "LayerNorm")
        double = r.get(f"eps{i}/double")
        if isinstance(double, Raised) or any(tensor(double["parameters"].get(n), n).dtype != torch.float64
                                             for n in ("mult", "add")):
            raise Fail("after .double(), mult and add should be float64")
    default = r.get("default")["attributes"].get("eps")
    if default != 1e-5:
        raise Fail(f"LayerNorm() should default to eps=1e-5 (the stub's signature); got eps={default}")
    expect_own_parameters(r.get("first/set"), r.get("second")["parameters"], {"mult": 1.0, "add": 0.0}, "LayerNorm")


def _diagnose(x: Tensor, expected: Tensor, eps: float, mult: float, add: float):
    g, b = torch.tensor(mult, dtype=torch.float64), torch.tensor(add, dtype=torch.float64)
    return lambda out: normalisation(out, x, expected, axes=AXES, eps=eps, gamma=g, beta=b, layer="LayerNorm")


@verdict("Q6", "test_output", uses=USES)
def output(r: Records) -> None:
    shape, eps, seed = q6.FRESH
    x = seeded_input(*shape, seed=seed)
    expected = F.layer_norm(x, x.shape[1:], eps=eps)
    expect_fresh(r.get("fresh/facts")["parameters"], {"mult": 1.0, "add": 0.0}, f"LayerNorm(eps={eps})")
    expect_close(r.get("fresh"), expected, f"output of a fresh LayerNorm(eps={eps}) (mult=1, add=0)",
                 mistakes=ln_mistakes(x, 1.0, 0.0, eps), diagnose=_diagnose(x, expected, eps, 1.0, 0.0))
    for i, (shape, mult, add, eps, seed) in enumerate(q6.OUTPUT_CASES):
        x = seeded_input(*shape, seed=seed)
        _set(r, f"case{i}/set")
        expected = F.layer_norm(x, x.shape[1:], eps=eps) * mult + add
        expect_close(r.get(f"case{i}"), expected, f"output for an input of shape {shape} with mult={mult}, add={add}, "
                     f"eps={eps}", mistakes=ln_mistakes(x, mult, add, eps), diagnose=_diagnose(x, expected, eps, mult, add))
    shape, seed = q6.FLOAT32
    x32 = seeded_input(*shape, seed=seed, dtype=torch.float32)
    expect_close(r.get("float32"), F.layer_norm(x32, x32.shape[1:], eps=1e-5), "output for a float32 input", atol=1e-5,
                 rtol=1e-4)
    for kind, shape, mult, add, eps, seed in q6.LAYOUTS:
        _set(r, f"{kind}/set")
        x = seeded_input(*shape, seed=seed)
        layout_failure(r.get(kind), kind)
        expected = F.layer_norm(x, x.shape[1:], eps=eps) * mult + add
        expect_close(r.get(kind), expected, f"output for {LAYOUT_WHAT[kind]} of shape {shape}, mult={mult}, add={add}, "
                     f"eps={eps}", mistakes=ln_mistakes(x, mult, add, eps))


def ln_normalised(x: Tensor, eps: float) -> list[Tensor]:
    """x normalised per example over (C, H, W) or, the wrong axes but still a normalization, over (H, W)
    (norms.normalisations). Statistics over the batch are not among them: per channel they are a scale and shift of
    the input, which a layer that does nothing also gives."""
    return normalisations(x, eps, (AXES, (2, 3)))


@verdict("Q6", "test_batch_independence", uses=USES)
def batch_independence(r: Records) -> None:
    for i, (shape, eps, seed) in enumerate(q6.INDEPENDENCE):
        _set(r, f"case{i}/set")
        x = seeded_input(*shape, seed=seed)
        expect_examples_independent(r, f"case{i}", x, "LayerNorm", ln_normalised(x, eps))


@verdict("Q6", "test_train_equals_eval", uses=USES)
def train_equals_eval(r: Records) -> None:
    for i, (shape, eps, seed) in enumerate(q6.TRAIN_EVAL):
        _set(r, f"case{i}/set")
        x = seeded_input(*shape, seed=seed)
        expect_train_equals_eval(r, f"case{i}", x, "LayerNorm", ln_normalised(x, eps))


def _reference_gradients(x: Tensor, mult: float, add: float, eps: float, weights: Tensor,
                         detached: bool = False) -> dict[str, Tensor]:
    """Autograd on the contract (`detached`: with the mean and variance taken as constants, a known mistake)."""
    xs = x.clone().requires_grad_(True)
    m, a = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (mult, add))
    if detached:
        mean, var = xs.detach().mean(AXES, keepdim=True), xs.detach().var(AXES, keepdim=True, correction=0)
        out = (xs - mean) / (var + eps).sqrt() * m + a
    else:
        out = F.layer_norm(xs, xs.shape[1:], eps=eps) * m + a
    grads = torch.autograd.grad((out * weights).sum(), (xs, m, a))
    return {"output": out.detach(), "x": grads[0], "mult": grads[1], "add": grads[2]}


@verdict("Q6", "test_gradients", uses=USES)
def gradients(r: Records) -> None:
    for i, (shape, eps, seed, training) in enumerate(q6.GRADIENT_CASES):
        x = seeded_input(*shape, seed=seed)
        weights = seeded_normal(*shape, seed=seed + 100)
        what = f"LayerNorm ({'training' if training else 'eval'} mode, input shape {shape}, eps={eps})"
        expect_layer_gradients(r.get(f"case{i}"), x, ln_normalised(x, eps), "LayerNorm", what,
                               _reference_gradients(x, *q6.GRADIENT_PARAMS, eps, weights),
                               _reference_gradients(x, *q6.GRADIENT_PARAMS, eps, weights, detached=True),
                               {"x": "the input x", "mult": "mult", "add": "add"})


class ReferenceLayerNorm(nn.Module):
    """The contract, computed by torch: layer_norm over (C, H, W) with one learned scale and shift."""

    def __init__(self, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.mult = nn.Parameter(torch.tensor(1.0))
        self.add = nn.Parameter(torch.tensor(0.0))

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, x.shape[1:], eps=self.eps) * self.mult + self.add


@verdict("Q6", "test_training_curve", uses=USES)
def training_curve(r: Records) -> None:
    reference = reference_losses("Q6-layernorm", partial(lesson_cnn, lambda nf: ReferenceLayerNorm()), **q6.TRAINING)
    expect_training(r, "losses", reference, "training the lesson's CNN with your LayerNorm (lr 0.2, bs 64, 30 steps)",
                    rtol=0.05)


# ---- Part E: RMSNorm ----
RMS_USES = ("rmsnorm",)
forbid("Q6", "rmsnorm")


def _tuple(ns) -> tuple[int, ...]:
    return (ns,) if isinstance(ns, int) else tuple(ns)


def _rms(x: Tensor, dims: tuple[int, ...], eps: float, *, total: bool = False, eps_outside: bool = False) -> Tensor:
    ms = (x * x).sum(dims, keepdim=True) if total else (x * x).mean(dims, keepdim=True)
    return x / (ms.sqrt() + eps) if eps_outside else x / (ms + eps).sqrt()


def rms_mistakes(x: Tensor, ns: tuple[int, ...], weight: Tensor, eps: float) -> dict[str, Tensor]:
    """What RMSNorm(ns, eps) with this weight returns on x under each known mistake."""
    dims = tuple(range(-len(ns), 0))
    found = {
        "rms.mean_subtracted": F.layer_norm(x, ns, weight, eps=eps),
        "rms.std_not_rms": x / (x.var(dims, keepdim=True, correction=0) + eps).sqrt() * weight,
        "rms.eps_outside_sqrt": _rms(x, dims, eps, eps_outside=True) * weight,
        "rms.no_eps": _rms(x, dims, 0.0) * weight,
        "rms.sum_not_mean": _rms(x, dims, eps, total=True) * weight,
        "rms.no_weight": _rms(x, dims, eps),
        "norm.input_returned": x,
        "rms.input_times_weight": x * weight,
    }
    if len(ns) > 1:
        found["rms.last_dim_only"] = _rms(x, (-1,), eps) * weight
    if x.dim() > len(ns) + 1:
        every = tuple(range(1, x.dim()))
        found["rms.all_but_batch"] = _rms(x, every, eps) * weight
    return distinguishable(found, F.rms_norm(x, ns, weight, eps))


def _rms_set(r: Records, key: str, ns: tuple[int, ...]) -> None:
    if isinstance(r.get(key), Raised):
        raise Fail(f"RMSNorm({ns}).weight must be an nn.Parameter with one value per feature, shape {ns}; the test could "
                   f"not set it ({r.get(key)}). A single scalar weight is not RMSNorm's gain.")


@verdict("Q6", "test_rms_parameters")
def rms_parameters(r: Records) -> None:
    for i, (ns, eps) in enumerate(q6.RMS_PARAMETERS):
        built = f"RMSNorm({ns!r}, eps={eps})"
        facts = r.get(f"eps{i}")
        if not facts.get("module"):
            raise Fail(f"{built} should be an nn.Module")
        if facts["attributes"].get("eps") != eps:
            raise Fail(f"{built} should store eps as self.eps")
        shape = r.get(f"eps{i}/shape")
        if not isinstance(shape, tuple) or shape != _tuple(ns):
            raise Fail(f"{built} should store self.normalized_shape as the tuple {_tuple(ns)}, got {shape!r} "
                       f"(an int becomes a one-element tuple)")
        params = facts["parameters"]
        if set(params) != {"weight"}:
            raise Fail(f"{built}: the only learned parameter must be weight (no bias), got {sorted(params)}")
        weight = tensor(params["weight"], "RMSNorm.weight")
        if tuple(weight.shape) != _tuple(ns):
            scalar = "rms.scalar_weight" if weight.numel() == 1 else None
            why = naming(scalar) if scalar else " (a single scalar weight is not RMSNorm's gain)"
            raise Fail(f"{built}.weight must have one value per feature, shape {_tuple(ns)}; got shape "
                       f"{tuple(weight.shape)}{why}", mistake=scalar)
        if weight.dtype != torch.float32:
            raise Fail(f"{built}.weight should start as float32, got {weight.dtype}")
        if not torch.all(weight == 1):
            raise Fail(f"{built}.weight must start as ones")
        expect_no_buffers(sorted(facts["buffers"]), "RMSNorm")
        double = r.get(f"eps{i}/double")
        if isinstance(double, Raised) or tensor(double["parameters"].get("weight"), "weight").dtype != torch.float64:
            raise Fail("after .double(), weight should be float64")
    default = r.get("default")["attributes"].get("eps")
    if default != 1e-6:
        raise Fail(f"RMSNorm(4) should default to eps=1e-6 (the stub's signature); got eps={default}")
    expect_own_parameters(r.get("first/set"), r.get("second")["parameters"], {"weight": 1.0}, "RMSNorm")


@verdict("Q6", "test_rms_output", uses=RMS_USES)
def rms_output(r: Records) -> None:
    shape, ns, eps, seed = q6.RMS_FRESH
    ns = _tuple(ns)
    x = seeded_input(*shape, seed=seed)
    ones = torch.ones(ns, dtype=torch.float64)
    expect_fresh(r.get("fresh/facts")["parameters"], {"weight": 1.0}, f"RMSNorm({ns}, eps={eps})")
    expect_close(r.get("fresh"), F.rms_norm(x, ns, ones, eps), f"output of a fresh RMSNorm({ns}, eps={eps}) (weight "
                 f"ones) on an input of shape {shape}", mistakes=rms_mistakes(x, ns, ones, eps))
    for i, (shape, ns, eps, seed) in enumerate(q6.RMS_CASES):
        ns = _tuple(ns)
        _rms_set(r, f"case{i}/set", ns)
        x, weight = seeded_input(*shape, seed=seed), q6.rms_weight(ns, seed)
        expect_close(r.get(f"case{i}"), F.rms_norm(x, ns, weight, eps), f"output of RMSNorm({ns}, eps={eps}) with a "
                     f"random weight on an input of shape {shape}", mistakes=rms_mistakes(x, ns, weight, eps))
    shape, ns, seed = q6.RMS_FLOAT32
    x32 = seeded_input(*shape, seed=seed, dtype=torch.float32)
    expect_close(r.get("float32"), F.rms_norm(x32.double(), _tuple(ns), None, 1e-6).float(),
                 "output for a float32 input", atol=1e-5, rtol=1e-4)
    for kind, shape, ns, eps, seed in q6.RMS_LAYOUTS:
        ns = _tuple(ns)
        _rms_set(r, f"{kind}/set", ns)
        x, weight = seeded_input(*shape, seed=seed), q6.rms_weight(ns, seed)
        layout_failure(r.get(kind), kind)
        expect_close(r.get(kind), F.rms_norm(x, ns, weight, eps), f"output of RMSNorm({ns}, eps={eps}) for "
                     f"{LAYOUT_WHAT[kind]} of shape {shape}", mistakes=rms_mistakes(x, ns, weight, eps))


@verdict("Q6", "test_rms_errors", uses=RMS_USES)
def rms_errors(r: Records) -> None:
    for i, (ns, shape) in enumerate(q6.RMS_BAD):
        expect_raises(r.get(f"bad{i}"), f"RMSNorm({ns!r}) on an input of shape {shape} (its last dimensions are not "
                      f"{_tuple(ns)})")
    for i, (ns, shape) in enumerate(q6.RMS_GOOD):
        got = r.get(f"good{i}")
        if isinstance(got, Raised):
            if got.is_a("DelegationError"):
                raise Fail(delegation_message(got.message))
            raise Fail(f"RMSNorm({ns!r}) on an input of shape {shape} (its last dimensions are {_tuple(ns)}, as they "
                       f"must be) raised {got}")
        if tuple(got) != shape:
            raise Fail(f"RMSNorm({ns!r}) on an input of shape {shape} returned shape {tuple(got)}, not the input's")
