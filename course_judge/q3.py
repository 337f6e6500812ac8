"""Q3's verdicts: the student's BatchNorm against nn.BatchNorm2d's rules (F.batch_norm in float64)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_judge import forbid, verdict
from course_judge.compare import (close, expect_close, expect_gradients, expect_no_error,
                                  expect_raises, layout_hint, layout_mistake, tensor)
from course_judge.diagnose import centred_somewhere, normalisation
from course_judge.records import Fail, Raised, Records
from course_judge.reference import expect_training, lesson_cnn, reference_losses, same_inputs
from course_recorder import q3
from course_recorder.inputs import laid_out, random_affine, seeded_input, seeded_normal

Tensor = torch.Tensor
AXES = (0, 2, 3)  # BatchNorm's statistics: every example and position, one value per channel
USES = ("batchnorm",)
forbid("Q3", "batchnorm")


def view(t: Tensor) -> Tensor:
    """(C,) -> (1, C, 1, 1), for broadcasting against (N, C, H, W)."""
    return t.reshape(1, -1, 1, 1)


def batch_stats(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Per-channel mean, biased variance and unbiased variance, each (1, C, 1, 1)."""
    mean = x.mean(AXES, keepdim=True)
    biased = ((x - mean) ** 2).mean(AXES, keepdim=True)
    n = x.numel() // x.shape[1]
    return mean, biased, biased * n / (n - 1)


def train_mistakes(x: Tensor, gamma: Tensor, beta: Tensor, eps: float, mom: float) -> dict[str, Tensor]:
    """What a training-mode forward from fresh buffers returns under each known mistake."""
    g, b = view(gamma), view(beta)
    mean, biased, unbiased = batch_stats(x)

    def over(axes: tuple[int, ...]) -> Tensor:
        m = x.mean(axes, keepdim=True)
        v = ((x - m) ** 2).mean(axes, keepdim=True)
        return (x - m) / torch.sqrt(v + eps) * g + b

    xhat = (x - mean) / torch.sqrt(biased + eps)
    return {
        "bn.unbiased_variance": (x - mean) / torch.sqrt(unbiased + eps) * g + b,
        "norm.eps_outside_sqrt": (x - mean) / (torch.sqrt(biased) + eps) * g + b,
        "norm.no_eps": (x - mean) / torch.sqrt(biased) * g + b,
        "bn.axes_batch_only": over((0,)),
        "bn.axes_instancenorm": over((2, 3)),
        "bn.axes_layernorm": over((1, 2, 3)),
        "bn.axes_all": over((0, 1, 2, 3)),
        "bn.train_running_before_update": x / (1 + eps) ** 0.5 * g + b,
        "bn.train_running_after_update": (x - mom * mean) / torch.sqrt(1 - mom + mom * unbiased + eps) * g + b,
        "norm.scale_shift_swapped": xhat * b + g,
        "norm.no_scale_shift": xhat,
        **unnormalised(x, g, b),
    }


def unnormalised(x: Tensor, g: Tensor, b: Tensor) -> dict[str, Tensor]:
    """What a layer that does not normalise returns: the input, or the input scaled and shifted."""
    return {"bn.input_returned": x, "bn.input_scaled_shifted": x * g + b}


def eval_mistakes(x: Tensor, means: Tensor, variances: Tensor, gamma: Tensor, beta: Tensor,
                  eps: float) -> dict[str, Tensor]:
    """What an eval-mode forward with the given running statistics returns under each known mistake."""
    g, b = view(gamma), view(beta)
    rm, rv = view(means), view(variances)
    mean, biased, unbiased = batch_stats(x) if x.numel() > x.shape[1] else (rm, rv, rv)
    return {
        "bn.eval_batch_statistics": (x - mean) / torch.sqrt(biased + eps) * g + b,
        "bn.eval_batch_unbiased_statistics": (x - mean) / torch.sqrt(unbiased + eps) * g + b,
        "bn.eval_eps_outside_sqrt": (x - rm) / (torch.sqrt(rv) + eps) * g + b,
        "bn.eval_variance_not_sqrt": (x - rm) / (rv + eps) * g + b,
        "norm.scale_shift_swapped": (x - rm) / torch.sqrt(rv + eps) * b + g,
        **unnormalised(x, g, b),
    }


def fresh_eval_mistakes(x: Tensor, gamma: Tensor, beta: Tensor, eps: float) -> dict[str, Tensor]:
    """What an untrained layer in eval mode returns under each known mistake (buffers at their start values)."""
    g, b = view(gamma), view(beta)
    found = {"bn.running_var_zeros": x / eps ** 0.5 * g + b}
    if x.numel() > x.shape[1]:
        mean, biased, _ = batch_stats(x)
        found["bn.eval_batch_statistics"] = (x - mean) / torch.sqrt(biased + eps) * g + b
    return found


def running(x_steps: list[Tensor], mom: float) -> tuple[Tensor, Tensor]:
    """The running (means, vars) after training forwards on each input in turn, from fresh buffers, (1, C, 1, 1)."""
    c = x_steps[0].shape[1]
    rm, rv = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    for x in x_steps:
        F.batch_norm(x, rm, rv, training=True, momentum=mom, eps=0.5)
    return view(rm), view(rv)


def running_mistakes(x: Tensor, mom: float, steps: int) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """The wrong running (means, vars) after `steps` forwards of the same batch, keyed by mistake."""
    mean, biased, unbiased = batch_stats(x)
    kept, flipped = (1 - mom) ** steps, mom ** steps

    def closed(keep: float, var: Tensor) -> tuple[Tensor, Tensor]:
        return (1 - keep) * mean, keep + (1 - keep) * var

    wrong = {
        "bn.momentum_flipped": closed(flipped, unbiased),
        "bn.biased_variance_stored": closed(kept, biased),
        "bn.std_stored": closed(kept, unbiased.sqrt()),
        "bn.running_not_updated": (torch.zeros_like(mean), torch.ones_like(mean)),
    }
    return {k: v[0] for k, v in wrong.items()}, {k: v[1] for k, v in wrong.items()}


def _set(r: Records, key: str, what: str, nf: int, names=("mults", "adds")) -> None:
    """The probe could copy the tests' scale and shift (or running statistics) into the layer."""
    result = r.get(key)
    if isinstance(result, Raised):
        kind = "registered buffers" if names[0] == "means" else "nn.Parameters"
        shape = f"(1, {nf}, 1, 1)" if names[0] == "means" else f"({nf}, 1, 1)"
        raise Fail(f"{what}: BatchNorm.{names[0]} and .{names[1]} must be {kind} of shape {shape} (one value per "
                   f"channel); the test could not set them ({result.message})")


def _diagnose(x: Tensor, expected: Tensor, eps: float, gamma: Tensor, beta: Tensor):
    return lambda out: normalisation(out, x, expected, axes=AXES, eps=eps, gamma=gamma, beta=beta, layer="BatchNorm")


# ------------------------------------------------------------------------------------------- the tests
@verdict("Q3", "test_parameters_and_buffers")
def parameters_and_buffers(r: Records) -> None:
    for nf in q3.PARAMETER_NFS:
        expect_no_error(r.get(f"nf{nf}"), f"BatchNorm({nf})")
        facts = r.get(f"nf{nf}/facts")
        params, buffers = facts["parameters"], facts["buffers"]
        if set(params) != {"mults", "adds"}:
            raise Fail(f"BatchNorm({nf}): the learned parameters must be exactly mults and adds, got {sorted(params)}")
        for name in ("means", "vars"):
            if name not in buffers or not facts["registered"].get(name):
                raise Fail(f"BatchNorm.{name} must be a registered buffer (self.register_buffer('{name}', ...)), not a "
                           f"plain attribute: only buffers are saved in state_dict and follow .to(device) and .double()")
            if buffers[name].recorded["requires_grad"]:
                raise Fail(f"the buffer {name} must not require gradients")
        starts = {"mults": torch.ones(nf, 1, 1), "adds": torch.zeros(nf, 1, 1),
                  "means": torch.zeros(1, nf, 1, 1), "vars": torch.ones(1, nf, 1, 1)}
        for name, start in starts.items():
            value = tensor({**params, **buffers}[name], f"BatchNorm.{name}")
            if tuple(value.shape) != tuple(start.shape):
                raise Fail(f"BatchNorm({nf}).{name} should have shape {tuple(start.shape)}, got {tuple(value.shape)}")
            if value.dtype != torch.float32:
                raise Fail(f"BatchNorm.{name} should start as float32, got {value.dtype}")
            if not torch.equal(value, start):
                extra = (" (you initialised the running variance to 0; it must start as ones, so an untrained layer "
                         "in eval mode leaves the scale of x unchanged)" if name == "vars" and not value.any() else "")
                raise Fail(f"BatchNorm.{name} must start as {'ones' if start.sum() else 'zeros'}{extra}")
        if not {"mults", "adds", "means", "vars"} <= set(facts["state_dict"]):
            raise Fail(f"state_dict must hold mults, adds, means and vars; it holds {facts['state_dict']}")
        if facts["attributes"].get("mom") != 0.1 or facts["attributes"].get("eps") != 1e-5:
            raise Fail(f"BatchNorm({nf}) should store mom=0.1 and eps=1e-5 as self.mom and self.eps (the defaults); "
                       f"got mom={facts['attributes'].get('mom')}, eps={facts['attributes'].get('eps')}")
        double = expect_no_error(r.get(f"nf{nf}/double"), f"BatchNorm({nf}).double()")
        for name in starts:
            got = {**double["parameters"], **double["buffers"]}.get(name)
            if not isinstance(got, Tensor) or got.dtype != torch.float64:
                raise Fail(f"after .double(), BatchNorm.{name} should be float64")
    _own_tensors(r)


SHARED = ("Create each layer's tensors inside __init__ (torch.ones(nf, 1, 1), torch.zeros(1, nf, 1, 1), ...), not "
          "once for the class, in a module-level variable or in a default argument.")


def _own_tensors(r: Records) -> None:
    """Two BatchNorm(3) layers hold tensors of their own: training one leaves the other's buffers alone."""
    expect_no_error(r.get("first"), "BatchNorm(3)")
    expect_no_error(r.get("second"), "a second BatchNorm(3)")
    shared = r.get("shared")
    if shared:
        raise Fail(f"two BatchNorm(3) layers share the same {' and '.join(shared)} tensors: training or updating one "
                   f"layer changes the other. {SHARED}")
    after = r.get("second/after")
    for name, start in (("means", torch.zeros(1, 3, 1, 1)), ("vars", torch.ones(1, 3, 1, 1))):
        got = after.get(name)
        if isinstance(got, Tensor) and got.shape == start.shape and not torch.equal(got.float(), start):
            raise Fail(f"a training-mode forward of one BatchNorm(3) changed the {name} of another, untrained "
                       f"BatchNorm(3) (to {got.flatten().tolist()}): the layers share their running statistics. "
                       f"{SHARED}")


@verdict("Q3", "test_train_mode_output", uses=USES)
def train_mode_output(r: Records) -> None:
    shape, seed = q3.FRESH_X
    x = seeded_input(*shape, seed=seed)
    mean, biased, _ = batch_stats(x)
    ones, zeros = torch.ones(3, dtype=x.dtype), torch.zeros(3, dtype=x.dtype)
    expected = (x - mean) / torch.sqrt(biased + 1e-5)
    expect_close(r.get("fresh"), expected, "training-mode output of a fresh layer (mults=1, adds=0)",
                 mistakes=train_mistakes(x, ones, zeros, 1e-5, 0.1), diagnose=_diagnose(x, expected, 1e-5, ones, zeros))
    same_inputs(r, "fresh", x)
    for i, (shape, mom, eps, seed) in enumerate(q3.TRAIN_CASES):
        x = seeded_input(*shape, seed=seed)
        gamma, beta = random_affine(shape[1], seed=seed + 10)
        what = f"training-mode output for an input of shape {shape} with eps={eps}"
        _set(r, f"case{i}/set", what, shape[1])
        expected = F.batch_norm(x, torch.zeros(shape[1], dtype=x.dtype), torch.ones(shape[1], dtype=x.dtype),
                                gamma, beta, training=True, momentum=mom, eps=eps)
        _raised_on_accepted_input(r.get(f"case{i}"), what, shape)
        expect_close(r.get(f"case{i}"), expected, what, mistakes=train_mistakes(x, gamma, beta, eps, mom),
                     diagnose=_diagnose(x, expected, eps, gamma, beta))
        same_inputs(r, f"case{i}", x)
    for shape, eps, seed, layout in q3.LAYOUT_CASES:
        x = seeded_input(*shape, seed=seed)
        gamma, beta = random_affine(shape[1], seed=seed + 10)
        what = f"training-mode output for a {layout} input of shape {shape} (the same values, another memory layout)"
        _set(r, f"{layout}/set", what, shape[1])
        _raised_on_accepted_input(r.get(layout), what, shape)
        expected = F.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
        expect_close(r.get(layout), expected, what, mistakes=train_mistakes(x, gamma, beta, eps, 0.1),
                     diagnose=_diagnose(x, expected, eps, gamma, beta))
        same_inputs(r, layout, laid_out(x, layout))


def _raised_on_accepted_input(value: object, what: str, shape: tuple) -> None:
    """A training-mode call the contract accepts raised: say why it should not have."""
    if not isinstance(value, Raised) or value.is_a("DelegationError"):
        return
    message = f"{what}: the call raised {value}" + layout_hint(value)
    if shape[0] == 1 and value.is_a("ValueError"):
        n = shape[2] * shape[3]
        message += (f"\nOne example with H*W = {n} positions still has {n} values per channel: the contract refuses "
                    f"only one value per channel in training (N*H*W == 1), not a batch of one example.")
    raise Fail(message, mistake=layout_mistake(value))


@verdict("Q3", "test_eval_mode_output", uses=USES)
def eval_mode_output(r: Records) -> None:
    for i, (shape, eps, seed) in enumerate(q3.EVAL_CASES):
        x = seeded_input(*shape, seed=seed)
        gamma, beta, means, variances = q3.eval_statistics(shape, seed)
        c = shape[1]
        untrained = f"eval-mode output of an untrained layer, input shape {shape}, eps={eps}"
        _set(r, f"case{i}/set", untrained, c)
        what = f"eval-mode output with given running statistics, input shape {shape}, eps={eps}"
        _set(r, f"case{i}/set_running", what, c, names=("means", "vars"))
        expected = F.batch_norm(x, means, variances, gamma, beta, training=False, eps=eps)
        expect_close(r.get(f"case{i}"), expected, what, mistakes=eval_mistakes(x, means, variances, gamma, beta, eps))
        expected = F.batch_norm(x, torch.zeros(c, dtype=x.dtype), torch.ones(c, dtype=x.dtype), gamma, beta,
                                training=False, eps=eps)
        expect_close(r.get(f"case{i}/untrained"), expected, untrained,
                     mistakes=fresh_eval_mistakes(x, gamma, beta, eps))
    # The default eps: an untrained layer divides by sqrt(1 + 1e-5), so leaving eps out shows only here.
    shape, seed = q3.FRESH_X
    x = seeded_input(*shape, seed=seed)
    ones, zeros = torch.ones(3, dtype=x.dtype), torch.zeros(3, dtype=x.dtype)
    expect_close(r.get("fresh"), x / (1 + 1e-5) ** 0.5, "eval-mode output of an untrained layer (x / sqrt(1 + eps))",
                 mistakes=fresh_eval_mistakes(x, ones, zeros, 1e-5))


def _expect_buffers(r: Records, key: str, means: Tensor, variances: Tensor, what: str,
                    mistakes: tuple[dict, dict] = ({}, {})) -> None:
    buffers = r.get(key)
    expect_close(buffers["means"], means, f"running means {what}", mistakes=mistakes[0])
    expect_close(buffers["vars"], variances, f"running vars {what}", mistakes=mistakes[1])


def _no_errors(r: Records, keys: list[str], what: str) -> None:
    for key in keys:
        expect_no_error(r.get(key), what)


@verdict("Q3", "test_running_statistics", uses=USES)
def running_statistics(r: Records) -> None:
    shape, seed = q3.FRESH_X
    x = seeded_input(*shape, seed=seed)
    mean, _, unbiased = batch_stats(x)
    _no_errors(r, ["default/step"], "a training-mode forward")
    buffers = r.get("default")
    expect_close(buffers["means"], 0.1 * mean, "means after one step from zeros (0.1 * the batch mean)",
                 mistakes=running_mistakes(x, 0.1, 1)[0])
    expect_close(buffers["vars"], 0.9 + 0.1 * unbiased,
                 "vars after one step from ones (0.9 + 0.1 * the unbiased batch variance)",
                 mistakes=running_mistakes(x, 0.1, 1)[1])
    for i, (shape, mom, steps, seed) in enumerate(q3.RUNNING_CASES):
        x = seeded_input(*shape, seed=seed)
        _no_errors(r, [f"case{i}/step{s}" for s in range(steps)], f"a training-mode forward of shape {shape}")
        means, variances = running([x] * steps, mom)
        _expect_buffers(r, f"case{i}", means, variances,
                        f"after {steps} training step(s) with mom={mom} on an input of shape {shape}",
                        running_mistakes(x, mom, steps))
    mom, sizes = q3.SEQUENCE
    xs = [seeded_input(n, 3, 2, 1, seed=100 + step) for step, n in enumerate(sizes)]
    _no_errors(r, [f"sequence/step{s}" for s in range(len(sizes))], "a training-mode forward")
    _expect_buffers(r, "sequence", *running(xs, mom), f"after {len(sizes)} batches of different sizes, mom={mom}")


READ_MODE = "Read the mode from self.training (set by .train()/.eval()), not from torch.is_grad_enabled()."


def _unchanged(before: dict, after: dict) -> bool:
    return all(torch.equal(tensor(after[n], n), tensor(before[n], n)) for n in ("means", "vars"))


@verdict("Q3", "test_eval_leaves_buffers_alone", uses=USES)
def eval_leaves_buffers_alone(r: Records) -> None:
    _no_errors(r, ["first/train", "first/eval"] + [f"train{s}" for s in range(3)], "a forward pass")
    expect_no_error(r.get("with_grad"), "a training-mode forward")
    # The evidence that the mode is read from grad mode: the same training-mode forward updates the buffers with
    # gradients on and leaves them alone under torch.no_grad() (twin and layer start from the same buffers).
    before = r.get(f"eval{len(q3.EVAL_AFTER) - 1}/after")
    updates_with_grad = not _unchanged(before, r.get("with_grad/after"))
    updates_without = not _unchanged(before, r.get("no_grad/after"))
    hint = f" {READ_MODE}" if updates_with_grad and not updates_without else ""
    if not _unchanged(r.get("first/trained"), r.get("first/after")):
        raise Fail(f"an eval-mode forward changed the running statistics: eval mode must only read means and vars.{hint}")
    trained = r.get("trained")
    for i, (shape, _) in enumerate(q3.EVAL_AFTER):
        expect_no_error(r.get(f"eval{i}"), f"an eval-mode forward and backward of shape {shape}")
        if not _unchanged(trained, r.get(f"eval{i}/after")):
            raise Fail(f"an eval-mode forward (with gradients enabled) of an input of shape {shape} changed the "
                       f"running statistics: eval mode must only read means and vars, bit for bit unchanged.{hint}")
    if not updates_with_grad:
        raise Fail("a training-mode forward did not update the running statistics, with gradients on or off: this test "
                   "checks that eval mode leaves buffers alone which training updates, so it earns its point together "
                   "with running statistics that are updated (see test_running_statistics).")
    if not updates_without:
        raise Fail(f"a training-mode forward under torch.no_grad() did not update the running statistics (with "
                   f"gradients on it did).{hint}")
    expect_close(r.get("no_grad"), tensor(r.get("with_grad"), "the output with gradients"),
                 "training-mode output under torch.no_grad(), against the same layer's output with gradients",
                 hint=READ_MODE)
    twin = r.get("with_grad/after")
    expect_close(r.get("no_grad/after")["vars"], tensor(twin["vars"], "vars"),
                 "running vars after a training-mode forward under torch.no_grad()", hint=READ_MODE)


def _reference_gradients(x: Tensor, gamma: Tensor, beta: Tensor, eps: float, weights: Tensor) -> dict[str, Tensor]:
    xs, g, b = (t.clone().requires_grad_(True) for t in (x, gamma, beta))
    out = F.batch_norm(xs, None, None, g, b, training=True, eps=eps)
    grads = torch.autograd.grad((out * weights).sum(), (xs, g, b))
    return {"output": out.detach(), "x": grads[0], "mults": grads[1].reshape(-1, 1, 1),
            "adds": grads[2].reshape(-1, 1, 1)}


def _detached_gradients(x: Tensor, gamma: Tensor, beta: Tensor, eps: float, weights: Tensor) -> dict[str, Tensor]:
    """The input's gradient when the batch mean, the variance or both are cut from the autograd graph."""
    found = {}
    for cut, mistake in ((("mean", "var"), "bn.detached_mean_and_var"), (("mean",), "bn.detached_mean"),
                         (("var",), "bn.detached_var")):
        xs = x.clone().requires_grad_(True)
        mean = xs.mean(AXES, keepdim=True)
        var = ((xs - mean) ** 2).mean(AXES, keepdim=True)
        mean = mean.detach() if "mean" in cut else mean
        var = var.detach() if "var" in cut else var
        out = (xs - mean) / torch.sqrt(var + eps) * view(gamma) + view(beta)
        found[mistake] = torch.autograd.grad((out * weights).sum(), xs)[0]
    return found


def _normalised_output(recorded: object, reference: Tensor, gamma: Tensor, beta: Tensor, what: str,
                       checks: str = "the gradients of a normalisation") -> None:
    """A layer whose output is not normalised at all (an identity, a scale and shift) earns no point for
    properties such a layer has for free."""
    # mults and adds swapped is its own named mistake (test_train_mode_output): not charged here a second time.
    if isinstance(recorded, Tensor) and not close(recorded, reference, 1e-9, 1e-7) \
            and not centred_somewhere(recorded, gamma, beta) and not centred_somewhere(recorded, beta, gamma):
        raise Fail(f"{what}: your layer's output is not normalised (once mults and adds are undone no group of values "
                   f"has mean 0: it is a scale and shift of the input, or the input itself); this test checks {checks}, "
                   f"so it earns its point only together with an output that is normalised (see test_train_mode_output).")


@verdict("Q3", "test_gradients", uses=USES)
def gradients(r: Records) -> None:
    for i, (shape, eps, seed) in enumerate(q3.GRADIENT_CASES):
        gamma, beta = random_affine(shape[1], seed=seed + 40)
        x = seeded_input(*shape, seed=seed)
        weights = seeded_normal(*shape, seed=seed + 100)
        reference = _reference_gradients(x, gamma, beta, eps, weights)
        what = f"training mode, input shape {shape}, eps={eps}"
        recorded = r.get(f"case{i}")
        if isinstance(recorded, dict) and isinstance(recorded.get("output"), Tensor):
            _normalised_output(recorded["output"], reference["output"], gamma, beta, what)
            if close(recorded["output"], reference["output"], 1e-9, 1e-7) and isinstance(recorded.get("x"), Tensor):
                expect_close(recorded["x"], reference["x"], f"{what}: the gradient with respect to the input x",
                             atol=1e-8, rtol=1e-6, mistakes=_detached_gradients(x, gamma, beta, eps, weights))
        expect_gradients(recorded, reference, what,
                         {"x": "the input x", "mults": "mults (the scale)", "adds": "adds (the shift)"},
                         hint="Keep the batch mean and variance inside the autograd graph (do not detach them or "
                              "compute them under torch.no_grad()); only the update of the running statistics is "
                              "free of history.")


def _updated_and_normalised(r: Records) -> None:
    """Buffers free of history earn the point only in a layer that normalises and updates them: an identity or a
    plain scale and shift leaves them untouched and trivially free of history."""
    x = seeded_input(4, 3, 2, 2)
    out = tensor(r.get("one"), "the training-mode output")
    ones, zeros = torch.ones(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    mean, biased, _ = batch_stats(x)
    _normalised_output(out, (x - mean) / torch.sqrt(biased + 1e-5), ones, zeros,
                       "a training-mode forward of BatchNorm(3)", checks="the running statistics a normalisation keeps")
    trained = r.get("trained")
    starts = {"means": torch.zeros(1, 3, 1, 1), "vars": torch.ones(1, 3, 1, 1)}
    if all(isinstance(trained.get(n), Tensor) and close(trained[n], s, 0, 0) for n, s in starts.items()):
        raise Fail(f"after {q3.HISTORY_STEPS} training steps means and vars still hold their start values (zeros and "
                   f"ones): the running statistics were never updated, so there is no history to keep out of them. "
                   f"This test earns its point together with running statistics that are updated (see "
                   f"test_running_statistics).")


@verdict("Q3", "test_buffers_without_history", uses=USES)
def buffers_without_history(r: Records) -> None:
    expect_no_error(r.get("one"), "a training step followed by backward()")
    for name, value in r.get("one/buffers").items():
        value = tensor(value, name)
        if value.recorded["requires_grad"] or value.recorded["grad_fn"]:
            raise Fail(f"after a training step, {name} carries autograd history: update the running statistics under "
                       f"torch.no_grad() (or from detached values), or every step's graph stays in memory")
    for step in range(q3.HISTORY_STEPS):
        value = r.get(f"step{step}")
        if isinstance(value, Raised):
            raise Fail(f"training step {step + 1} of {q3.HISTORY_STEPS} (each followed by backward()) raised {value}"
                       + ("\nThe running statistics are still attached to an earlier step's graph: update them "
                          "under torch.no_grad()." if "backward" in value.message else ""))
    trained = r.get("trained")
    facts = r.get("trained/facts")
    _updated_and_normalised(r)
    for name in ("means", "vars"):
        value = tensor(trained[name], name)
        if value.recorded["requires_grad"] or value.recorded["grad_fn"]:
            raise Fail(f"after {q3.HISTORY_STEPS} training steps, {name} carries autograd history (requires_grad/"
                       f"grad_fn): update the running statistics under torch.no_grad() or from detached values")
        if not facts["registered"].get(name):
            raise Fail(f"after training, {name} is no longer the registered buffer: assign tensors to it (or update it "
                       f"in place), do not replace it by something that is not a buffer")
    load = r.get("load")
    if isinstance(load, Raised):
        raise Fail(f"a new BatchNorm(3) could not load this layer's state_dict: {load}")
    original = tensor(r.get("eval"), "the eval output after training")
    loaded = tensor(r.get("loaded"), "the eval output of the loaded layer")
    if loaded.shape != original.shape or not torch.equal(loaded, original):
        raise Fail("a layer loaded from this layer's state_dict gives different eval outputs: keep means and vars in "
                   "registered buffers (only those are saved in state_dict)")
    expect_no_error(r.get("float32"), "a training step on a float32 input")
    doubled = r.get("float32/double")
    for name in ("means", "vars"):
        if tensor(doubled[name], name).dtype != torch.float64:
            raise Fail("after training and .double(), means and vars should be float64: keep them in registered buffers")
    if tensor(r.get("float32/eval"), "the eval output after .double()").dtype != torch.float64:
        raise Fail("a float64 input to a .double() layer should give a float64 output")


ERROR_WHAT = ("a training-mode input with one value per channel, shape (1, 3, 1, 1)", "a 2-D input of shape (4, 3)",
              "a 3-D input of shape (2, 3, 4) in eval mode", "an input with 4 channels for BatchNorm(3)",
              "an input with 3 channels for BatchNorm(1)")


@verdict("Q3", "test_clear_errors")
def clear_errors(r: Records) -> None:
    for i, what in enumerate(ERROR_WHAT):
        expect_raises(r.get(f"case{i}"), what)
    out = r.get("eval_1x1")
    if isinstance(out, Raised) or not torch.isfinite(tensor(out, "the eval output")).all():
        raise Fail("an eval-mode input of shape (1, 3, 1, 1) must give a finite output, not raise: that is what the "
                   f"running statistics are for ({'it raised ' + str(out) if isinstance(out, Raised) else 'NaN'})")


@verdict("Q3", "test_training_curve", uses=USES)
def training_curve(r: Records) -> None:
    reference = reference_losses("Q3-bn-float64", lambda: lesson_cnn(), float64=True, **q3.TRAINING)
    expect_training(r, "losses", reference,
                    "training the lesson's CNN with your BatchNorm (float64, lr 1.0, bs 64, 30 steps)", rtol=0.02)
