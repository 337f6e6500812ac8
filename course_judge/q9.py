"""Q9's verdicts: the student's RunningBatchNorm against the contract's math (float64, step by step).

The contract (stated in the notebook's stub): in training, per channel, the sum, the sum of squares and the
element count are smoothed with `lerp(old, new, mom1)`, `mom1 = 1 - (1 - mom) / sqrt(max(bs - 1, 1))`; the layer
normalises (in training too) with mean = sums / count and var = max(sqrs / count - mean**2, 0) of the already
updated state, var clamped to at least 0.01 while fewer than 20 examples have been seen; a layer that has seen no
training batch uses mean 0 and var 1; eval reads the state and never changes it.
"""

from __future__ import annotations

import functools
import math
from functools import partial

import torch
from torch import Tensor, nn

from course_judge import forbid, verdict
from course_judge.compare import close, expect_close, expect_gradients, expect_no_error, layout_mistake, tensor
from course_judge.records import Fail, Raised, Records, quote
from course_judge.reference import cached, expect_training, lesson_cnn, reference_losses
from course_lib.mistakes import naming
from course_recorder import q9
from course_recorder.inputs import seeded_input

USES = ("running_batchnorm",)
forbid("Q9", "running_batchnorm")
CLAMP_UNTIL = 20  # examples
MIN_VAR = 0.01
ONE_HINT = ("The stub's rule for a batch of one example: mom1 = 1 - (1 - mom) / sqrt(max(bs - 1, 1)), i.e. the same "
            "weight as bs=2 (sqrt(0) must not divide).")

# The known mistakes of the training math (course_lib.mistakes), in the order a match is named; rbn_forward computes
# each one's numbers.
MISTAKES = ("rbn.plain_mom", "rbn.one_minus_missing", "rbn.no_clamp", "rbn.clamp_forever", "rbn.clamp_steps",
            "rbn.clamp_le", "rbn.clamp_before_update", "rbn.batch_stats", "rbn.raw_count", "rbn.unbiased",
            "rbn.eps_outside", "rbn.stats_detached", "rbn.count_examples", "rbn.count_all_channels",
            "rbn.count_positions", "rbn.identity", "rbn.untrained_before_update")


def mom1_of(bs: int, mom: float) -> float:
    """The new batch's weight in the lerp; a batch of 1 uses the bs=2 value (sqrt(bs-1) would be 0)."""
    return 1 - (1 - mom) / math.sqrt(max(bs - 1, 1))


def fresh_state(nf: int, dtype: torch.dtype = torch.float64) -> dict[str, Tensor]:
    """The state of a layer that has seen nothing."""
    return {"sums": torch.zeros(1, nf, 1, 1, dtype=dtype), "sqrs": torch.zeros(1, nf, 1, 1, dtype=dtype),
            "count": torch.zeros((), dtype=dtype), "batch": torch.zeros((), dtype=dtype), "step": torch.zeros((), dtype=dtype)}


def rbn_forward(x: Tensor, mults: Tensor, adds: Tensor, state: dict[str, Tensor], *, mom: float, eps: float,
                training: bool, mistake: str | None = None) -> tuple[Tensor, dict[str, Tensor]]:
    """One forward pass of the contract (or of a named mistake): the output and the new, detached state."""
    sums, sqrs, count = state["sums"], state["sqrs"], state["count"]
    batch, step = state["batch"], state.get("step", torch.zeros((), dtype=x.dtype))
    bs, nf = x.shape[0], x.shape[1]
    batch_before = batch
    if training:
        s = x.sum((0, 2, 3), keepdim=True)
        ss = (x * x).sum((0, 2, 3), keepdim=True)
        c = torch.tensor({"rbn.count_examples": bs, "rbn.count_all_channels": x.numel(),
                          "rbn.count_positions": x.numel() / nf / bs}.get(mistake, x.numel() / nf), dtype=x.dtype)
        w = {"rbn.plain_mom": mom, "rbn.one_minus_missing": (1 - mom) / math.sqrt(max(bs - 1, 1))}.get(
            mistake, mom1_of(bs, mom))
        if mistake == "rbn.stats_detached":
            s, ss = s.detach(), ss.detach()
        sums = sums + (s - sums) * w
        sqrs = sqrs + (ss - sqrs) * w
        count = c if mistake == "rbn.raw_count" else count + (c - count) * w
        batch, step = batch + bs, step + 1
    if float(count) == 0 or (mistake == "rbn.untrained_before_update" and float(state["count"]) == 0):
        mean, var = torch.zeros_like(sums), torch.ones_like(sums)
    elif mistake == "rbn.batch_stats" and training:
        mean = x.mean((0, 2, 3), keepdim=True)
        var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)
    else:
        mean = sums / count
        var = (sqrs / count - mean * mean).clamp_min(0)
        if mistake == "rbn.unbiased":
            var = var * count / (count - 1)
    seen = {"rbn.clamp_steps": step, "rbn.clamp_before_update": batch_before}.get(mistake, batch)
    clamp = {"rbn.no_clamp": False, "rbn.clamp_forever": True, "rbn.clamp_le": float(batch) <= CLAMP_UNTIL}.get(
        mistake, float(seen) < CLAMP_UNTIL)
    if clamp:
        var = var.clamp_min(MIN_VAR)
    out = (x - mean) / (var.sqrt() + eps) if mistake == "rbn.eps_outside" else (x - mean) / (var + eps).sqrt()
    out = out * mults + adds
    if mistake == "rbn.identity":
        out = x
    new = {"sums": sums.detach(), "sqrs": sqrs.detach(), "count": count.detach(), "batch": batch.detach(),
           "step": step.detach()}
    return out, new


class ReferenceRunningBatchNorm(nn.Module):
    """The contract as a module, for the reference training runs."""

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


def _affine(nf: int, seed: int = 1) -> tuple[Tensor, Tensor]:
    values = q9.affine(nf, seed)
    return values["mults"], values["adds"]


def _set(r: Records, key: str, nf: int) -> None:
    found = r.get(f"{key}/set")
    if isinstance(found, Raised):
        raise Fail(f"RunningBatchNorm.mults and .adds must be nn.Parameters with {nf} values (shape ({nf}, 1, 1)); the "
                   f"test could not set them ({found.message})")


def _recorded_state(r: Records, key: str, where: str) -> dict[str, Tensor]:
    state = r.get(key)
    missing = [name for name in q9.BUFFERS if not isinstance(state.get(name), Tensor)]
    if missing:
        raise Fail(f"{where}: RunningBatchNorm has no registered buffer {missing[0]!r} (use self.register_buffer)")
    return {name: state[name].double() for name in q9.BUFFERS}


def _forward_error(value: object, where: str, hint: str = "") -> None:
    if isinstance(value, Raised):
        if value.is_a("DelegationError"):
            tensor(value, where)  # raises the delegation message
        mistake = layout_mistake(value)
        if mistake:
            hint = naming(mistake).lstrip("\n")
        raise Fail(f"{where}: the layer raised {value}" + (f"\n{hint}" if hint else ""), mistake=mistake)


def class_changes(r: Records, before: str = "class_before", after: str = "class_after") -> str | None:
    """A sentence when the student's class's own numbers changed while its layers trained (state shared by every
    layer), else None."""
    old, new = r.get(before), r.get(after)
    if not isinstance(old, dict) or not isinstance(new, dict):
        return None
    for name in sorted(set(old) | set(new)):
        a, b = old.get(name), new.get(name)
        same = (close(a, b, 0, 0) if isinstance(a, Tensor) and isinstance(b, Tensor) else a == b)
        if not same:
            shown = [f"{float(v):g}" if isinstance(v, Tensor) and v.numel() == 1 else str(v)[:40] for v in (a, b)]
            return (f"RunningBatchNorm.{name} is held by the class itself and changed from {shown[0]} to {shown[1]} while "
                    f"layers trained: one value shared by every RunningBatchNorm. If your layer reads it (to clamp, to "
                    f"count), each layer's output depends on what the others saw; keep a layer's state in its own "
                    f"buffers (self.register_buffer in __init__).")
    return None


def _trace(config: dict, mistake: str | None = None) -> list[tuple[Tensor, dict[str, Tensor]]]:
    cfg = q9.defaults(config)
    gamma, beta = _affine(cfg["nf"])
    state, trace = fresh_state(cfg["nf"]), []
    for i, bs in enumerate(cfg["sizes"]):
        x = q9.batch_input(bs, cfg["nf"], cfg["hw"], cfg["seed"] + i, cfg["constant"])
        out, state = rbn_forward(x, gamma, beta, state, mom=cfg["mom"], eps=cfg["eps"], training=True, mistake=mistake)
        trace.append((out, state))
    return trace


def _same(a: Tensor, b: Tensor) -> bool:
    return a.shape == b.shape and bool(torch.allclose(a.double(), b.double(), atol=1e-6, rtol=1e-5))


def expect_sequences(r: Records, keys_configs: list[tuple[str, dict]], mistakes: tuple[str, ...] = MISTAKES,
                     hint: str = "", shared: str | None = None) -> None:
    """Each recorded training sequence against the contract, step by step (output and buffers). A mistake is named
    only when the student's numbers match that mistake's on every step of every sequence, and none when `shared`
    says the layers share state (their numbers then depend on what other layers saw)."""
    if shared:
        mistakes, hint = (), shared
    runs = []
    for key, config in keys_configs:
        cfg = q9.defaults(config)
        _set(r, key, cfg["nf"])
        steps = []
        for i, bs in enumerate(cfg["sizes"]):
            where = (f"training step {i + 1} of batch sizes {cfg['sizes']} (this batch: {bs} examples of shape "
                     f"{(cfg['nf'], *cfg['hw'])}{', stored ' + cfg['layout'] if cfg['layout'] else ''}; "
                     f"mom={cfg['mom']}, eps={cfg['eps']})")
            out = r.get(f"{key}/step{i}")
            _forward_error(out, where, hint)
            steps.append((where, tensor(out, where), _recorded_state(r, f"{key}/step{i}/state", where)))
        wrong = {k: _trace(config, k) for k in mistakes if k != "rbn.stats_detached"}
        runs.append((cfg, steps, _trace(config), wrong))

    def matches(name: str) -> bool:
        for _, steps, _, wrong in runs:
            for (_, out, buffers), (w_out, w_state) in zip(steps, wrong[name]):
                if not _same(out, w_out) or not all(_same(buffers[n], w_state[n]) for n in ("sums", "sqrs", "count")):
                    return False
        return True

    named = [k for k in mistakes if k != "rbn.stats_detached" and matches(k)][:1]
    for cfg, steps, reference, wrong in runs:
        for step, ((where, out, buffers), (expected, state)) in enumerate(zip(steps, reference)):
            if cfg["constant"] is not None:
                if not torch.isfinite(out).all():
                    raise Fail(f"the output at {where} has NaN or inf. Channel 0 is constant, so sqrs/count - mean**2 "
                               f"is 0 up to rounding and can come out slightly below 0; the stub says var = "
                               f"max(sqrs/count - mean**2, 0): floor it at 0, or sqrt(var + eps) is NaN for a tiny eps.")
                out, expected = out[:, 1:], expected[:, 1:]  # the constant channel's values are all rounding
            expect_close(out, expected, f"the output at {where}", mistakes={k: wrong[k][step][0][:, 1:]
                         if cfg["constant"] is not None else wrong[k][step][0] for k in named}, hint=hint or None)
            for name in ("sums", "sqrs", "count"):
                expect_close(buffers[name], state[name], f"the buffer {name} after {where}",
                             mistakes={k: wrong[k][step][1][name] for k in named}, dtype=False,
                             hint=hint or None)
            if float(buffers["batch"]) != float(state["batch"]):
                raise Fail(f"the buffer batch after {where}: expected {float(state['batch']):g} examples seen, got "
                           f"{float(buffers['batch']):g} (add the batch size, x.shape[0], at every training step)")


@verdict("Q9", "test_rbn_state")
def state(r: Records) -> None:
    nf = q9.STATE_NF
    facts = r.get("facts")
    for name, fill in (("mults", 1.0), ("adds", 0.0)):
        param = facts["parameters"].get(name)
        if not isinstance(param, Tensor):
            raise Fail(f"{name} must be an nn.Parameter (it is learned by gradient descent); got "
                       f"{getattr(facts['attributes'].get(name), 'type', type(facts['attributes'].get(name)).__name__)}")
        if tuple(param.shape) != (nf, 1, 1) or not torch.all(param == fill):
            raise Fail(f"{name} must start as {'ones' if fill else 'zeros'} of shape ({nf}, 1, 1); got shape "
                       f"{tuple(param.shape)}")
    shapes = {"sums": (1, nf, 1, 1), "sqrs": (1, nf, 1, 1), "count": (), "batch": ()}
    for name, shape in shapes.items():
        value = facts["buffers"].get(name)
        if not isinstance(value, Tensor):
            raise Fail(f"RunningBatchNorm has no registered buffer {name!r} (use self.register_buffer); its buffers are "
                       f"{sorted(facts['buffers'])}")
        if tuple(value.shape) != shape or not torch.all(value == 0):
            raise Fail(f"the buffer {name} must start as zeros of shape {shape}; got shape {tuple(value.shape)}")
        if value.recorded["parameter"] or value.recorded["requires_grad"]:
            raise Fail(f"{name} is a statistic, measured from data: a buffer, not a learned parameter")
        if not value.is_floating_point():
            raise Fail(f"the buffer {name} is {value.dtype}; the stub says float buffers (torch.tensor(0.0), not "
                       f"torch.tensor(0)), so that they follow .double() and hold a fractional count")
    missing = {"mults", "adds", *q9.BUFFERS} - set(facts["state_dict"])
    if missing:
        raise Fail(f"state_dict lacks {sorted(missing)}: the state must be saved with the model")
    double = expect_no_error(r.get("double"), "RunningBatchNorm(nf).double()")
    for name in q9.BUFFERS:
        value = double["buffers"].get(name)
        if not isinstance(value, Tensor) or value.dtype != torch.float64:
            raise Fail(f"after .double() the buffer {name} is {getattr(value, 'dtype', None)}; create it as a float tensor "
                       f"so it follows the module's dtype")
    for i in range(len(q9.ROUND_TRIP["sizes"])):
        _forward_error(r.get(f"trained/step{i}"), "training")
    load = r.get("load")
    if isinstance(load, Raised):
        raise Fail(f"a fresh layer could not load a trained layer's state_dict: {load}")
    for name, value in r.get("float32/facts")["buffers"].items():
        if name in q9.BUFFERS and isinstance(value, Tensor) and value.dtype != torch.float32:
            raise Fail(f"a new RunningBatchNorm's buffer {name} is {value.dtype}, its parameters float32: create the "
                       f"buffers with the default dtype (torch.zeros(...), torch.tensor(0.0)), so that the whole layer is "
                       f"float32 until .double() converts it")
    out32 = tensor(r.get("float32"), "a float32 layer's output for a float32 input")
    if out32.dtype != torch.float32:
        raise Fail(f"a float32 input to a float32 layer gave a {out32.dtype} output; keep the input's dtype (the "
                   f"stub: any float dtype in, the same out)")
    original, loaded = tensor(r.get("eval"), "the eval output"), tensor(r.get("loaded"), "the loaded layer's eval output")
    if not _same(loaded, original):
        raise Fail("a fresh layer loaded with a trained layer's state_dict gives a different eval output: keep the whole "
                   "state (sums, sqrs, count, batch) in registered buffers")
    expect_own_state(r, "shared")


def expect_own_state(r: Records, key: str) -> None:
    """Each layer's state is its own: two fresh layers give the same first training step whatever another layer did
    in between, the class holds no number that training changes, and no two layers share a buffer's memory."""
    nf, hw, seed = q9.SHARED["nf"], q9.SHARED["hw"], q9.SHARED["seed"]
    where = f"a new layer's first training step (a batch of {q9.SHARED['first']})"
    before, after = r.get(f"{key}/before"), r.get(f"{key}/after")
    _forward_error(before, where)
    _forward_error(after, where)
    changed = class_changes(r, f"{key}/class_before", f"{key}/class_after")
    if changed:
        # A number the class holds counts only when the output shows it: a new layer's first step left unclamped.
        x = q9.batch_input(q9.SHARED["first"], nf, hw, seed)
        gamma, beta = torch.ones(1, nf, 1, 1, dtype=x.dtype), torch.zeros(1, nf, 1, 1, dtype=x.dtype)
        right, unclamped = (rbn_forward(x, gamma, beta, fresh_state(nf), mom=0.1, eps=1e-5, training=True,
                                        mistake=m)[0] for m in (None, "rbn.no_clamp"))
        first = tensor(before, where)
        if _same(first, unclamped) and not _same(first, right):
            raise Fail(f"{where} did not clamp the variance although the layer had seen only {q9.SHARED['first']} "
                       f"examples. {changed}")
    shared = r.get(f"{key}/same_memory")
    if shared:
        raise Fail(f"two new RunningBatchNorm layers share the memory of {', '.join(shared)}: every layer needs tensors "
                   f"of its own. register_buffer and nn.Parameter keep the tensor they are given, so create a new one in "
                   f"__init__ (torch.zeros(...)), never one tensor made once for all layers (a module-level constant or a "
                   f"default argument).")
    if not _same(tensor(after, where), tensor(before, where)):
        raise Fail(f"two new layers given the same first batch gave different outputs, one before and one after another "
                   f"layer trained on batches of {q9.SHARED['between']}: each layer's output must depend on its own state "
                   f"only (is a count or a statistic kept outside the layer's own buffers, in a global or class variable?)")


@verdict("Q9", "test_rbn_training_math", uses=USES)
def training_math(r: Records) -> None:
    expect_sequences(r, [(f"seq{i}", config) for i, config in enumerate(q9.SEQUENCES)], shared=class_changes(r))


UNTRAINED = ("a layer that has seen no training batch must behave as mean 0 and variance 1 in eval, i.e. "
             "x / sqrt(1 + eps) * mults + adds (no NaN from 0/0).")


@verdict("Q9", "test_rbn_eval", uses=USES)
def eval_(r: Records) -> None:
    nf, mom, eps, hw = (q9.EVAL[k] for k in ("nf", "mom", "eps", "hw"))
    gamma, beta = _affine(nf)
    x = q9.batch_input(4, nf, hw, seed=50)
    _set(r, "untrained", nf)
    out = r.get("untrained")
    _forward_error(out, "an untrained layer in eval")
    untouched = _recorded_state(r, "untrained/after", "an untrained layer in eval")
    for name in q9.BUFFERS:
        if torch.any(untouched[name] != 0):
            raise Fail(f"the buffer {name} of an untrained layer changed during an eval forward pass; eval must use the "
                       f"stored statistics without updating them (check self.training)")
    broken = isinstance(out, Tensor) and not torch.isfinite(out).all()
    expect_close(out, x / math.sqrt(1 + eps) * gamma + beta, "the eval output of a layer that has seen no training batch",
                 mistakes={"rbn.identity": x}, hint=UNTRAINED if broken else None)
    shared = class_changes(r)
    for k, sizes in enumerate(q9.EVAL_SIZES):
        _set(r, f"seq{k}", nf)
        for i in range(len(sizes)):
            _forward_error(r.get(f"seq{k}/step{i}"), "training")
        where = f"eval after training on batch sizes {sizes} (mom={mom}, eps={eps})"
        trained = _recorded_state(r, f"seq{k}/step{len(sizes) - 1}/state", where)
        out = r.get(f"seq{k}/eval")
        _forward_error(out, where)
        # Judged against the layer's own stored state: the training math has its own test.
        expected = rbn_forward(x, gamma, beta, trained, mom=mom, eps=eps, training=False)[0]
        # With state shared between layers the clamp depends on other layers' examples: name that, not the clamp.
        wrong = {m: rbn_forward(x, gamma, beta, trained, mom=mom, eps=eps, training=False, mistake=m)[0]
                 for m in ("rbn.unbiased", "rbn.eps_outside", "rbn.identity")
                 + (() if shared else ("rbn.no_clamp", "rbn.clamp_forever"))}
        wrong["rbn.eval_batch_statistics"] = \
            rbn_forward(x, gamma, beta, fresh_state(nf), mom=mom, eps=eps, training=True)[0]
        expect_close(out, expected, f"the output in {where} (from the layer's own stored state)", mistakes=wrong,
                     hint=shared)
        after = _recorded_state(r, f"seq{k}/after", where)
        for name in q9.BUFFERS:
            if not torch.equal(after[name], trained[name]):
                raise Fail(f"in {where} the buffer {name} changed during an eval forward pass; eval must use the stored "
                           f"averages without updating them (check self.training)")
        expect_close(r.get(f"seq{k}/alone"), expected[1:2], f"one example alone in {where} (eval must not depend on "
                     f"batch mates)")
    _set(r, "no_grad", nf)
    _forward_error(r.get("no_grad"), "a training step under torch.no_grad()")
    one_step = rbn_forward(x, gamma, beta, fresh_state(nf), mom=mom, eps=eps, training=True)[1]
    after = _recorded_state(r, "no_grad/state", "a training step under torch.no_grad()")
    if not torch.any(after["sums"] != 0) and float(after["batch"]) == 0:
        raise Fail("a training step run under torch.no_grad() (as a validation loop with model.train() might) left every "
                   "buffer as it was: decide train or eval with self.training, not torch.is_grad_enabled().")
    # Wrong sums here come from the training math (its own test names the mistake), not from the grad mode.
    expect_close(after["sums"], one_step["sums"], "the buffer sums after a training step run under torch.no_grad()")


def _one_weight(r: Records, key: str, hw: tuple[int, int], mom: float, seed: int) -> str | None:
    """The stub's bs=1 rule as a hint, when the evidence points to it: a batch of one example raised or gave NaN or
    inf, or a fresh layer's first step (a batch of one) smoothed its sums and its count with one same weight that is
    not mom (a count or sum mistake gives them different weights: the training math names those)."""
    first = r.get(f"{key}/step0")
    if (isinstance(first, Raised) and not first.is_a("DelegationError")) or \
            (isinstance(first, Tensor) and not torch.isfinite(first).all()):
        return ONE_HINT
    state = r.get(f"{key}/step0/state")
    count, sums = (state.get(n) if isinstance(state, dict) else None for n in ("count", "sums"))
    if not (isinstance(count, Tensor) and isinstance(sums, Tensor) and count.numel() == 1):
        return None
    x = q9.batch_input(1, 3, hw, seed)
    batch_sums = x.sum((0, 2, 3), keepdim=True)
    if sums.shape != batch_sums.shape:
        return None
    weight = float(count) / (hw[0] * hw[1])  # from 0 towards c = 1 * H * W
    c = int(batch_sums.abs().flatten().argmax())
    if not math.isfinite(weight):
        return ONE_HINT
    if abs(float(sums.flatten()[c] / batch_sums.flatten()[c]) - weight) < 1e-6 and abs(weight - mom1_of(1, mom)) > 1e-6:
        return (f"After a new layer's first batch of one example, sums and count were smoothed with weight "
                f"{weight:.4g}, not mom = {mom}. {ONE_HINT}")
    return None


@verdict("Q9", "test_rbn_batch_of_one", uses=USES, errors={"ZeroDivisionError": ONE_HINT})
def batch_of_one(r: Records) -> None:
    shared = class_changes(r)
    for i, (hw, sizes) in enumerate(q9.BATCH_OF_ONE):
        try:
            expect_sequences(r, [(f"seq{i}", dict(sizes=sizes, nf=3, hw=hw, mom=0.2, eps=1e-5, seed=30))],
                             mistakes=("rbn.no_clamp", "rbn.clamp_forever", "rbn.clamp_before_update", "rbn.raw_count",
                                       "rbn.count_examples", "rbn.count_all_channels", "rbn.count_positions",
                                       "rbn.identity"), shared=shared)
        except Fail as err:
            hint = None if shared else _one_weight(r, f"seq{i}", hw, 0.2, 30)
            raise Fail(f"{err}\n{hint}" if hint and hint not in str(err) else str(err)) from None


@verdict("Q9", "test_rbn_gradients", uses=USES)
def gradients(r: Records) -> None:
    nf, mom, eps = q9.GRADIENT["nf"], q9.GRADIENT["mom"], q9.GRADIENT["eps"]
    _set(r, "history", nf)
    for i in range(q9.HISTORY_STEPS):
        where = f"training step {i + 1} of {q9.HISTORY_STEPS}, each followed by backward()"
        value = r.get(f"history/step{i}")
        if isinstance(value, Raised):
            if "backward" in value.message or "freed" in value.message:
                raise Fail(f"{where}: backward raised {value}\nThe stored state is still attached to an earlier step's "
                           f"graph: detach it every step (store .detach()ed values).")
            _forward_error(value, where)
        state = r.get(f"history/step{i}/state")
        for name in ("sums", "sqrs", "count"):
            buffer = state.get(name)
            if isinstance(buffer, Tensor) and (buffer.recorded["requires_grad"] or buffer.recorded["grad_fn"]):
                raise Fail(f"after {where} the buffer {name} is attached to the autograd graph (requires_grad="
                           f"{buffer.recorded['requires_grad']}); the stored state must be detached every step")
    _set(r, "grad", nf)
    for i in range(len(q9.GRADIENT["before"])):
        _forward_error(r.get(f"grad/step{i}"), "training")
    state = _recorded_state(r, "grad/state", "before the gradient check")
    gamma, beta = _affine(nf)
    x = q9.batch_input(q9.GRADIENT["size"], nf, (2, 2), seed=90)
    weights = seeded_input(*x.shape, seed=91)

    def reference(mistake: str | None = None) -> dict[str, Tensor]:
        xs, g, b = x.clone().requires_grad_(), gamma.clone().requires_grad_(), beta.clone().requires_grad_()
        out = rbn_forward(xs, g, b, state, mom=mom, eps=eps, training=True, mistake=mistake)[0]
        grads = torch.autograd.grad((out * weights).sum(), (xs, g, b))
        return {"output": out.detach(), "x": grads[0], "mults": grads[1], "adds": grads[2]}

    recorded = r.get("grad")
    what = f"training step 3 after batches of {q9.GRADIENT['before']} (mom={mom}, eps={eps}), from the layer's own state"
    output = recorded.get("output") if isinstance(recorded, dict) else None
    if isinstance(output, Tensor):
        for done, sentence in ((x, "returns its input unchanged"), (x * gamma + beta, "only scales and shifts its input "
                                                                    "(x * mults + adds) and never normalises it")):
            if close(output, done, 1e-9, 1e-7):
                raise Fail(f"{what}: your layer {sentence}. The gradients of a layer that does not normalise earn no "
                           f"points: RunningBatchNorm must return (x - mean) / sqrt(var + eps) * mults + adds.")
    try:
        expect_gradients(recorded, reference(), what, {"x": "the input", "mults": "mults", "adds": "adds"},
                         hint="Use differentiable tensor operations only.")
    except Fail as err:
        detached = reference("rbn.stats_detached")
        if isinstance(recorded, dict) and isinstance(recorded.get("x"), Tensor) and _same(recorded["x"], detached["x"]):
            raise Fail(f"{err}{naming('rbn.stats_detached')}", mistake="rbn.stats_detached") from None
        raise


@verdict("Q9", "test_rbn_trains_at_bs2", uses=USES)
def trains_at_bs2(r: Records) -> None:
    reference = reference_losses("Q9-rbn-bs2", partial(lesson_cnn, lambda nf: ReferenceRunningBatchNorm(nf)),
                                 **q9.TRAINING)
    expect_training(r, "losses", reference, "the CNN with your RunningBatchNorm at batch size 2 (lr 0.1, 30 steps)",
                    rtol=0.03)


@verdict("Q9", "test_bs2_batchnorm_collapses", uses=USES)
def bs2_collapses(r: Records) -> None:
    steps, lr = q9.COLLAPSE["steps"], q9.COLLAPSE["lr"]
    rbn_loss = expect_no_error(r.get("valid_loss"), "training the CNN with your RunningBatchNorm at batch size 2")
    if not isinstance(rbn_loss, (int, float)):
        raise Fail("the validation loss was not recorded")
    bn_loss = cached("Q9-bn-collapse", lambda: q9.valid_loss(lesson_cnn, **q9.COLLAPSE), **q9.COLLAPSE)
    if not (math.isfinite(rbn_loss) and rbn_loss < 2.0):
        raise Fail(f"after {steps} steps at batch size 2 (lr {lr}) the CNN with your RunningBatchNorm has validation loss "
                   f"{rbn_loss:.3f}; it should learn (below 2.0; chance is ln 10 = 2.30)")
    if not bn_loss > 2 * rbn_loss:
        raise Fail(f"validation loss after {steps} steps at batch size 2 (lr {lr}): nn.BatchNorm2d {bn_loss:.3f}, your "
                   f"RunningBatchNorm {rbn_loss:.3f}; expected RunningBatchNorm to be far better (less than half)")


# ---- Part D: recalibrate_bn ----------------------------------------------------------------------------------

forbid("Q9", "recalibrate_bn", frozenset({"update_bn", "swa_utils"}),
       "torch.optim.swa_utils.update_bn already recalibrates BatchNorm statistics: write the loop yourself")


def _norms(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def _fmt(t: object) -> str:
    if not isinstance(t, Tensor) or t.numel() > 8:
        return quote(t)
    return "[" + ", ".join(f"{float(v):.4g}" for v in t.flatten()) + "]"


@functools.lru_cache(maxsize=None)
def recal_reference(kind: int) -> dict[str, object]:
    """Each BatchNorm's input per batch (in training mode, as the contract runs them), the contract's statistics
    (the average over batches of the batch means and of the unbiased batch variances) and the named mistakes'."""
    model = q9.recal_model(kind)
    norms = _norms(model)
    old = [(m.running_mean.clone(), m.running_var.clone(), int(m.num_batches_tracked), m.momentum) for m in norms]
    inputs: list[list[Tensor]] = [[] for _ in norms]
    hooks = [m.register_forward_hook(lambda mod, args, out, i=i: inputs[i].append(args[0].detach().clone()))
             for i, m in enumerate(norms)]
    with torch.no_grad():
        model.train()
        for x in q9.recal_batches(kind):
            model(x)
    for h in hooks:
        h.remove()
    out = []
    for i, xs in enumerate(inputs):
        dims = [d for d in range(xs[0].dim()) if d != 1]
        means = [x.mean(dims) for x in xs]
        unbiased = [x.var(dims, correction=1) for x in xs]
        biased = [x.var(dims, correction=0) for x in xs]
        mean0, var0, n0, mom = old[i]

        def ema(m: float, stats: list[Tensor], start: Tensor) -> Tensor:
            r = start.clone()
            for s in stats:
                r = (1 - m) * r + m * s
            return r

        def cumulative(stats: list[Tensor], start: Tensor, n: int) -> Tensor:
            r = start.clone()
            for s in stats:
                n += 1
                r = r + (s - r) / n
            return r

        cases = {
            None: (torch.stack(means).mean(0), torch.stack(unbiased).mean(0)),
            "recal.not_reset": (cumulative(means, mean0, n0), cumulative(unbiased, var0, n0)),
            "recal.momentum_default": (ema(0.1, means, torch.zeros_like(mean0)),
                                       ema(0.1, unbiased, torch.ones_like(var0))),
            "recal.untouched": (mean0, var0),
            "recal.eval_pass": (torch.zeros_like(mean0), torch.ones_like(var0)),
            "recal.skipped": ((cumulative(means, mean0, n0), cumulative(unbiased, var0, n0)) if mom is None else
                        (ema(mom, means, mean0), ema(mom, unbiased, var0))),
            "recal.biased": (torch.stack(means).mean(0), torch.stack(biased).mean(0)),
        }
        if mom is not None and mom != 0.1:
            cases["recal.momentum_kept"] = (ema(mom, means, torch.zeros_like(mean0)),
                                            ema(mom, unbiased, torch.ones_like(var0)))
        out.append({"cases": cases, "momentum": mom, "batches": len(xs)})
    return {"norms": out, "modes": [[name, m.training] for name, m in q9.recal_model(kind).named_modules()],
            "params": [p.detach().clone() for p in q9.recal_model(kind).parameters()]}


def _expect_after(after: object, ref: dict, where: str, statistics: bool = True) -> None:
    if not isinstance(after, dict) or not isinstance(after.get("norms"), list):
        raise Fail(f"{where}: the model's state after the call was not recorded")
    params = after.get("params") or []
    if len(params) != len(ref["params"]) or not all(isinstance(p, Tensor) and p.shape == q.shape and torch.equal(p.double(), q)
                                                    for p, q in zip(params, ref["params"])):
        raise Fail(f"{where}: the model's parameters changed: recalibration changes only the BatchNorm layers' "
                   f"running statistics (no optimizer step, no parameter update).{naming('recal.parameters_updated')}",
                   mistake="recal.parameters_updated")
    seen = after.get("seen") or []
    if any(isinstance(s, list) and s and s[0] for s in seen):
        raise Fail(f"{where}: autograd was on while the batches ran through the model: run them under torch.no_grad() "
                   f"(recalibration computes no gradients; with autograd on every forward pass builds a graph for "
                   f"nothing).{naming('recal.gradients')}", mistake="recal.gradients")
    grads = after.get("grads") or []
    if any(grads):
        raise Fail(f"{where}: a parameter has a .grad after the call: recalibration must not compute gradients "
                   f"(no backward, no optimizer).{naming('recal.gradients')}", mistake="recal.gradients")
    if statistics:
        for i, (got, want) in enumerate(zip(after["norms"], ref["norms"])):
            what = f"{where}, BatchNorm layer {i + 1} of {len(ref['norms'])}"
            mean, var = got.get("running_mean"), got.get("running_var")
            if not (isinstance(mean, Tensor) and isinstance(var, Tensor)):
                raise Fail(f"{what}: running_mean / running_var are not tensors")
            right_mean, right_var = want["cases"][None]
            if not (close(mean, right_mean, 1e-9, 1e-7) and close(var, right_var, 1e-9, 1e-7)):
                named = next((k for k, (m, v) in want["cases"].items() if k is not None and close(mean, m, 1e-9, 1e-7)
                              and close(var, v, 1e-9, 1e-7)), None)
                msg = (f"{what}: after {want['batches']} batches running_mean should be {_fmt(right_mean)} and "
                       f"running_var {_fmt(right_var)} (the average of the batch means and of the unbiased batch "
                       f"variances); got {_fmt(mean)} and {_fmt(var)}")
                if named:
                    raise Fail(f"{msg}{naming(named)}", mistake=named)
                raise Fail(msg)
            if got.get("num_batches_tracked") != want["batches"]:
                raise Fail(f"{what}: num_batches_tracked should be {want['batches']} (reset, then one per batch); got "
                           f"{quote(got.get('num_batches_tracked'))}.{naming('recal.not_reset')}",
                           mistake="recal.not_reset")
    for i, (got, want) in enumerate(zip(after["norms"], ref["norms"])):
        if got.get("momentum") != want["momentum"]:
            raise Fail(f"{where}, BatchNorm layer {i + 1}: its momentum is {quote(got.get('momentum'))} after the call; "
                       f"it was {want['momentum']} before: restore each layer's own momentum."
                       f"{naming('recal.momentum_changed')}", mistake="recal.momentum_changed")
    modes = after.get("modes")
    if modes != ref["modes"]:
        wrong = [name or "the model" for (name, mode), (_, was) in zip(modes or [], ref["modes"]) if mode != was]
        named = "recal.modes" if all(mode for _, mode in (modes or [])) else None
        hint = (naming(named).lstrip("\n") if named else
                "Restore each module's own flag (a submodule may have been in eval while the model was not): "
                "model.train(was_training) sets every submodule alike.")
        raise Fail(f"{where}: the modes (module.training) after the call differ from before for {', '.join(wrong[:4])}"
                   f".\n{hint}", mistake=named)


@verdict("Q9", "test_recalibrate_bn", uses=("recalibrate_bn",))
def recalibrate(r: Records) -> None:
    descriptions = {0: "a model with BatchNorm2d (momentum 0.3), a block in eval with BatchNorm2d, and BatchNorm1d "
                       "(momentum 0.05), batches of 5, 3, 8, 2 (a list)",
                    1: "a model in eval with BatchNorm3d (momentum None), batches of 4, 6, 3 (a generator)",
                    2: "a model without BatchNorm, in eval"}
    for kind in (0, 1, 2):
        where = descriptions[kind]
        returned = expect_no_error(r.get(f"model{kind}"), where)
        _expect_after(r.get(f"model{kind}/after"), recal_reference(kind), where)
        if returned is not True:
            raise Fail(f"{where}: recalibrate_bn must return the model it was given (the same object)")
    empty = r.get("empty")
    if not (isinstance(empty, Raised) and empty.is_a("ValueError")):
        raise Fail(f"with no batches recalibrate_bn must raise ValueError (and change nothing); "
                   f"{'it raised ' + str(empty) if isinstance(empty, Raised) else 'it raised nothing'}")
    ref = recal_reference(0)
    stale = {**ref, "norms": [{**n, "cases": {None: n["cases"]["recal.untouched"]}, "batches": q9.OLD_BATCHES_TRACKED}
                              for n in ref["norms"]]}
    _expect_after(r.get("empty/after"), stale, "with no batches (the model must be left as it was)")
