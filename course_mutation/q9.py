"""Q9 RunningBatchNorm: the lesson's known mistakes and correct alternatives written differently."""

from course_mutation import Variant

NOTEBOOK = "Q9"
S = "running_batchnorm"

MOM1 = "mom1 = 1 - (1 - self.mom) / math.sqrt(max(bs - 1, 1))"
CLAMP = "if self.batch < 20:"
MATH = ("test_rbn_training_math",)
R = "recalibrate_bn"
RECAL = ("test_recalibrate_bn",)
COUNT = "count = torch.lerp(count, count.new_tensor(x.numel() / nf), mom1)"

# recalibrate_bn handing the work to torch's update_bn, then restoring the modes.
_UPDATE_BN = '''
def recalibrate_bn(model: nn.Module, batches) -> nn.Module:
    """Delegates to update_bn, then restores the modes."""
    batches = list(batches)
    if not batches:
        raise ValueError("no batches")
    modes = [(m, m.training) for m in model.modules()]
    torch.optim.swa_utils.update_bn(batches, model)
    for m, mode in modes:
        m.training = mode
    return model
'''

VARIANTS = [
    Variant("mom1_plain_mom", S, "the new batch's weight is mom for every batch size",
            fails=MATH, names="rbn.plain_mom", edits=((MOM1, "mom1 = self.mom"),)),
    Variant("mom1_without_one_minus", S, "mom1 = (1 - mom) / sqrt(bs - 1)",
            fails=MATH, names="rbn.one_minus_missing",
            edits=((MOM1, "mom1 = (1 - self.mom) / math.sqrt(max(bs - 1, 1))"),)),
    Variant("no_clamp", S, "the variance is never clamped",
            fails=("test_rbn_training_math", "test_rbn_eval"), names="rbn.no_clamp",
            edits=((CLAMP, "if False:"),)),
    Variant("clamp_forever", S, "the variance is clamped to 0.01 forever",
            fails=("test_rbn_training_math", "test_rbn_eval"), names="rbn.clamp_forever", edits=((CLAMP, "if True:"),)),
    Variant("clamp_threshold_inclusive", S, "clamp while batch <= 20",
            fails=("test_rbn_training_math",), names="rbn.clamp_le", edits=((CLAMP, "if self.batch <= 20:"),)),
    Variant("clamp_by_steps", S, "clamp for the first 20 steps (batches) instead of 20 examples",
            fails=("test_rbn_training_math",), names="rbn.clamp_steps",
            edits=(("        self.register_buffer(\"batch\", torch.tensor(0.0))",
                    "        self.register_buffer(\"batch\", torch.tensor(0.0))\n        self.steps = 0"),
                   ("            self.batch += bs", "            self.batch += bs\n            self.steps += 1"),
                   (CLAMP, "if self.steps < 20:"))),
    Variant("clamp_before_update", S, "the clamp counts the examples seen before this batch",
            fails=("test_rbn_training_math",), names="rbn.clamp_before_update",
            edits=(("            self.batch += bs\n", ""),
                   ("            var = var.clamp_min(0.01)\n",
                    "            var = var.clamp_min(0.01)\n        if self.training:\n            self.batch += bs\n"))),
    Variant("current_batch_stats", S, "normalising with the current batch's statistics in training",
            fails=("test_rbn_training_math",), names="rbn.batch_stats",
            edits=(("            var = (sqrs / count - mean * mean).clamp_min(0)",
                    "            var = (sqrs / count - mean * mean).clamp_min(0)\n"
                    "            if self.training:\n"
                    "                mean = x.mean((0, 2, 3), keepdim=True)\n"
                    "                var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)"),)),
    Variant("eval_updates_buffers", S, "the statistics are updated in eval too",
            fails=("test_rbn_eval",), says="changed during an eval forward",
            edits=(("        if self.training:\n            bs, nf", "        if True:\n            bs, nf"),)),
    Variant("state_not_detached", S, "the stored state keeps the autograd graph",
            fails=("test_rbn_gradients",), says="detached every step",
            edits=(("self.sums, self.sqrs, self.count = sums.detach(), sqrs.detach(), count.detach()",
                    "self.sums, self.sqrs, self.count = sums, sqrs, count"),)),
    Variant("stats_detached_before_use", S, "gradients do not flow through the batch statistics",
            fails=("test_rbn_gradients",), names="rbn.stats_detached",
            edits=(("            self.sums, self.sqrs, self.count = sums.detach(), sqrs.detach(), count.detach()",
                    "            self.sums, self.sqrs, self.count = sums.detach(), sqrs.detach(), count.detach()\n"
                    "            sums, sqrs, count = self.sums, self.sqrs, self.count"),)),
    Variant("count_not_smoothed", S, "count holds the raw element count of the last batch",
            fails=MATH, names="rbn.raw_count",
            edits=(("count = torch.lerp(count, count.new_tensor(x.numel() / nf), mom1)",
                    "count = count.new_tensor(x.numel() / nf)"),)),
    Variant("unbiased_variance", S, "the unbiased variance",
            fails=MATH, names="rbn.unbiased",
            edits=(("var = (sqrs / count - mean * mean).clamp_min(0)",
                    "var = ((sqrs / count - mean * mean) * count / (count - 1)).clamp_min(0)"),)),
    Variant("eps_outside_sqrt", S, "eps added to the standard deviation",
            fails=MATH, names="rbn.eps_outside",
            edits=(("(var + self.eps).sqrt()", "(var.sqrt() + self.eps)"),)),
    Variant("nan_when_untrained", S, "an untrained layer divides 0 by 0 in eval",
            fails=("test_rbn_eval",), says="nan",
            edits=(("        if self.count == 0:  # nothing seen yet: behave as mean 0, variance 1 instead of 0/0\n"
                    "            mean, var = torch.zeros_like(sums), torch.ones_like(sums)\n"
                    "        else:\n"
                    "            mean = sums / count\n"
                    "            var = (sqrs / count - mean * mean).clamp_min(0)",
                    "        mean = sums / count\n"
                    "        var = (sqrs / count - mean * mean).clamp_min(0)"),)),
    Variant("batch_of_one_crashes", S, "the lesson's sqrt(bs - 1) divides by zero for bs=1",
            fails=("test_rbn_batch_of_one",), says="sqrt(max(bs - 1, 1))",
            edits=((MOM1, "mom1 = 1 - (1 - self.mom) / math.sqrt(bs - 1)"),)),
    Variant("delegates_to_batch_norm", S, "computes the statistics, then calls F.batch_norm",
            fails=("test_rbn_training_math", "test_rbn_eval"), says="delegating to torch's own normalization",
            edits=(("        return (x - mean) / (var + self.eps).sqrt() * self.mults + self.adds",
                    "        return F.batch_norm(x, mean.flatten(), var.flatten(), self.mults.flatten(),\n"
                    "                            self.adds.flatten(), False, 0.0, self.eps)"),)),
    Variant("no_floor_at_zero", S, "var = sqrs/count - mean**2 without max(..., 0): rounding can make it negative",
            fails=MATH, says="floor it at 0",
            edits=(("var = (sqrs / count - mean * mean).clamp_min(0)", "var = sqrs / count - mean * mean"),)),
    Variant("integer_batch_buffer", S, "the examples-seen counter as an integer buffer (torch.tensor(0))",
            fails=("test_rbn_state",), says="float buffers",
            edits=(('self.register_buffer("batch", torch.tensor(0.0))', 'self.register_buffer("batch", torch.tensor(0))'),)),
    Variant("float64_statistics", S, "the statistics are computed in float64 whatever the input (a float32 input "
            "gives a float64 output)", fails=("test_rbn_state",), says="keep the input's dtype",
            edits=(("            mean = sums / count\n", "            mean = sums.double() / count.double()\n"),)),
    Variant("count_examples", S, "count smooths the number of examples (bs), not the elements per channel",
            fails=MATH, names="rbn.count_examples",
            edits=((COUNT, "count = torch.lerp(count, count.new_tensor(bs), mom1)"),)),
    Variant("count_all_channels", S, "count smooths x.numel(), the elements of every channel together",
            fails=MATH, names="rbn.count_all_channels",
            edits=((COUNT, "count = torch.lerp(count, count.new_tensor(x.numel()), mom1)"),)),
    Variant("count_positions", S, "count smooths H * W, the positions of one map, not bs * H * W",
            fails=MATH, names="rbn.count_positions",
            edits=((COUNT, "count = torch.lerp(count, count.new_tensor(x.shape[2] * x.shape[3]), mom1)"),)),
    Variant("untrained_check_before_update", S,
            "decides 'untrained' (count == 0) before the update, so the first training step uses mean 0, variance 1",
            fails=MATH, names="rbn.untrained_before_update",
            edits=(("        sums, sqrs, count = self.sums, self.sqrs, self.count\n",
                    "        sums, sqrs, count = self.sums, self.sqrs, self.count\n        untrained = self.count == 0\n"),
                   ("        if self.count == 0:", "        if untrained:"))),
    Variant("examples_counted_in_class_tensor", S,
            "counts the examples seen for the clamp in a class-level tensor, shared by every RunningBatchNorm",
            fails=("test_rbn_state", "test_rbn_training_math"), says="held by the class itself",
            edits=(("            self.batch += bs", "            self.batch += bs\n            self.seen += bs"),
                   (CLAMP, "if self.seen < 20:"),
                   ("    def forward(", "    seen = torch.zeros(())  # examples seen\n\n    def forward("))),
    Variant("view_needs_contiguous", S, "sums per channel through x.view(bs, nf, -1), which refuses a channels_last input",
            fails=MATH, names="layout.view",
            edits=(("sums = torch.lerp(sums, x.sum(dims, keepdim=True), mom1)",
                    "flat = x.view(bs, nf, -1)\n"
                    "            sums = torch.lerp(sums, flat.sum((0, 2)).view(1, nf, 1, 1), mom1)"),)),
    Variant("count_buffer_float64", S, "count created as a float64 buffer in a float32 layer",
            fails=("test_rbn_state",), says="float32",
            edits=(('self.register_buffer("count", torch.tensor(0.0))',
                    'self.register_buffer("count", torch.tensor(0.0, dtype=torch.float64))'),)),
    Variant("identity", S, "returns its input unchanged (keeps the statistics but never normalises)",
            fails=("test_rbn_training_math", "test_rbn_eval", "test_rbn_gradients"), names="rbn.identity",
            says="returns its input unchanged",
            edits=(("        return (x - mean) / (var + self.eps).sqrt() * self.mults + self.adds", "        return x"),)),
    # Correct alternatives, written differently.
    Variant("contiguous_view_stats", S, None, edits=(
        ("sums = torch.lerp(sums, x.sum(dims, keepdim=True), mom1)\n"
         "            sqrs = torch.lerp(sqrs, (x * x).sum(dims, keepdim=True), mom1)",
         "flat = x.transpose(0, 1).contiguous().view(nf, -1)  # (nf, bs * H * W)\n"
         "            sums = sums + (flat.sum(1).view(1, nf, 1, 1) - sums) * mom1\n"
         "            sqrs = sqrs + ((flat * flat).sum(1).view(1, nf, 1, 1) - sqrs) * mom1"),
        (COUNT, "count = count + (flat.shape[1] - count) * mom1"))),
    Variant("explicit_lerp_in_place_buffers", S, None, code='''
class RunningBatchNorm(nn.Module):
    """Explicit lerp formula, statistics via flatten, in-place buffer updates."""

    def __init__(self, nf: int, mom: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.mom, self.eps = mom, eps
        self.mults = nn.Parameter(torch.ones(nf, 1, 1))
        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))
        for name in ("sums", "sqrs"):
            self.register_buffer(name, torch.zeros(1, nf, 1, 1))
        self.register_buffer("count", torch.zeros(()))
        self.register_buffer("batch", torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        nf = x.shape[1]
        if self.training:
            flat = x.transpose(0, 1).flatten(1)          # (nf, elements)
            s = flat.sum(1).view(1, nf, 1, 1)
            ss = (flat ** 2).sum(1).view(1, nf, 1, 1)
            c = float(flat.shape[1])
            w = 1 - (1 - self.mom) / max(x.shape[0] - 1, 1) ** 0.5
            sums = self.sums * (1 - w) + s * w
            sqrs = self.sqrs * (1 - w) + ss * w
            count = self.count * (1 - w) + c * w
            with torch.no_grad():
                self.sums.copy_(sums)
                self.sqrs.copy_(sqrs)
                self.count.copy_(count)
                self.batch.add_(x.shape[0])
        else:
            sums, sqrs, count = self.sums, self.sqrs, self.count
        if float(self.count) > 0:
            mean = sums / count
            var = torch.clamp(sqrs / count - mean ** 2, min=0.0)
        else:
            mean, var = torch.zeros_like(sums), torch.ones_like(sums)
        if float(self.batch) < 20:
            var = torch.clamp(var, min=0.01)
        return self.mults * ((x - mean) * torch.rsqrt(var + self.eps)) + self.adds
'''),
    Variant("einsum_and_where", S, None, code='''
class RunningBatchNorm(nn.Module):
    """Statistics with einsum, lerp_ on detached buffers, torch.where for the untrained case."""

    def __init__(self, nf: int, mom: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.mom, self.eps = mom, eps
        self.mults = nn.Parameter(torch.ones(nf, 1, 1))
        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))
        self.register_buffer("sums", torch.zeros(1, nf, 1, 1))
        self.register_buffer("sqrs", torch.zeros(1, nf, 1, 1))
        self.register_buffer("count", torch.tensor(0.))
        self.register_buffer("batch", torch.tensor(0.))

    def forward(self, x: Tensor) -> Tensor:
        bs, nf, h, w = x.shape
        sums, sqrs, count = self.sums, self.sqrs, self.count
        if self.training:
            mom1 = 1 - (1 - self.mom) / math.sqrt(bs - 1) if bs > 1 else self.mom
            s = torch.einsum("bchw->c", x).view(1, nf, 1, 1)
            ss = torch.einsum("bchw,bchw->c", x, x).view(1, nf, 1, 1)
            sums = sums + mom1 * (s - sums)
            sqrs = sqrs + mom1 * (ss - sqrs)
            count = count + mom1 * (bs * h * w - count)
            self.sums.lerp_(s.detach(), mom1)
            self.sqrs.lerp_(ss.detach(), mom1)
            self.count.lerp_(torch.full_like(self.count, bs * h * w), mom1)
            self.batch += bs
        safe = torch.where(count > 0, count, torch.ones_like(count))
        mean = torch.where(count > 0, sums / safe, torch.zeros_like(sums))
        var = torch.where(count > 0, sqrs / safe - mean * mean, torch.ones_like(sqrs)).clamp(min=0)
        var = var.clamp(min=0.01) if self.batch < 20 else var
        return (x - mean) / torch.sqrt(var + self.eps) * self.mults + self.adds
'''),
    # Part D: recalibrate_bn.
    Variant("recal_momentum_kept", R, "each layer keeps its own momentum during the pass (an exponential average)",
            fails=RECAL, names="recal.momentum_kept", edits=(("        m.momentum = None\n", ""),)),
    Variant("recal_momentum_default", R, "momentum set to 0.1 during the pass instead of None",
            fails=RECAL, names="recal.momentum_default",
            edits=(("        m.momentum = None\n", "        m.momentum = 0.1\n"),)),
    Variant("recal_momentum_left_none", R, "momentum left at None after the call",
            fails=RECAL, names="recal.momentum_changed",
            edits=(("        m.momentum = momentum\n", "        pass\n"),)),
    Variant("recal_left_in_train", R, "the model left in train mode",
            fails=RECAL, names="recal.modes",
            edits=(("    for m, mode in modes:\n        m.training = mode\n", ""),)),
    Variant("recal_top_mode_only", R, "model.train(was_training): every submodule gets the model's own mode",
            fails=RECAL, names="recal.modes",
            edits=(("    for m, mode in modes:\n        m.training = mode\n", "    model.train(modes[0][1])\n"),)),
    Variant("recal_not_reset", R, "the statistics are not reset first", fails=RECAL, names="recal.not_reset",
            edits=(("        m.reset_running_stats()\n", ""),)),
    Variant("recal_with_grad", R, "the batches run with autograd on (no torch.no_grad())", fails=RECAL,
            names="recal.gradients", edits=(("    with torch.no_grad():\n", "    if True:\n"),)),
    Variant("recal_sgd_step", R, "trains the parameters on the batches (a loss, backward and an SGD step)",
            fails=RECAL, names="recal.parameters_updated", edits=((
                "    with torch.no_grad():\n        model(first)\n        for x in it:\n            model(x)\n",
                "    opt = torch.optim.SGD(model.parameters(), lr=0.01)\n"
                "    for x in [first, *it]:\n"
                "        model(x).pow(2).mean().backward()\n"
                "        opt.step()\n"
                "        opt.zero_grad()\n"),)),
    Variant("recal_first_norm_only", R, "only the first BatchNorm layer is recalibrated", fails=RECAL,
            names="recal.skipped", edits=((
                "if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]",
                "if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats][:1]"),)),
    Variant("recal_no_train_mode", R, "the batches run in the modes the model was in (no model.train())",
            fails=RECAL, names="recal.eval_pass", edits=(("    model.train()\n", ""),)),
    Variant("recal_empty_resets", R, "with no batches the statistics are reset and nothing raised",
            fails=RECAL, says="ValueError", edits=((
                '        raise ValueError("recalibrate_bn needs at least one batch")\n',
                "        for m in model.modules():\n"
                "            if isinstance(m, nn.modules.batchnorm._BatchNorm):\n"
                "                m.reset_running_stats()\n"
                "        return model\n"),)),
    Variant("recal_delegates_update_bn", R, "calls torch.optim.swa_utils.update_bn", fails=RECAL,
            says="update_bn", code=_UPDATE_BN),
    Variant("recal_update_bn_name_built", R, "update_bn reached by a name built at run time (no forbidden name in "
            "the code: refused while the probe runs)", fails=RECAL, says="update_bn",
            code=_UPDATE_BN.replace("torch.optim.swa_utils.update_bn(",
                                    'getattr(getattr(torch.optim, "swa" + "_utils"), "update" + "_bn")(')),
    # Correct alternatives for Part D.
    Variant("recal_list_and_state_dict", R, None, code='''
def recalibrate_bn(model: nn.Module, batches) -> nn.Module:
    """Materialises the batches; resets by hand; restores the modes by name."""
    batches = list(batches)
    if len(batches) == 0:
        raise ValueError("no batches given")
    saved = {}
    for name, m in model.named_modules():
        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)) and m.track_running_stats:
            saved[name] = m.momentum
            m.running_mean.zero_()
            m.running_var.fill_(1.0)
            m.num_batches_tracked.zero_()
            m.momentum = None
    flags = {name: m.training for name, m in model.named_modules()}
    for m in model.modules():
        m.training = True
    with torch.inference_mode(False), torch.no_grad():
        for x in batches:
            model(x)
    for name, m in model.named_modules():
        m.training = flags[name]
        if name in saved:
            m.momentum = saved[name]
    return model
'''),
    Variant("recal_manual_average", R, None, code='''
def recalibrate_bn(model: nn.Module, batches) -> nn.Module:
    """Averages each layer's batch means and unbiased variances with hooks, then writes them (momentum 0 while
    the batches run, so torch's own update leaves the buffers alone)."""
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.track_running_stats]
    sums = {m: [0.0, 0.0] for m in norms}
    count = 0

    def hook(m, args, out):
        x = args[0]
        dims = [d for d in range(x.dim()) if d != 1]
        sums[m][0] = sums[m][0] + x.mean(dims)
        sums[m][1] = sums[m][1] + x.var(dims, unbiased=True)

    handles = [m.register_forward_hook(hook) for m in norms]
    modes = {m: m.training for m in model.modules()}
    momenta = {m: m.momentum for m in norms}
    for m in norms:
        m.momentum = 0.0
    model.train()
    try:
        with torch.no_grad():
            for x in batches:
                model(x)
                count += 1
    finally:
        for h in handles:
            h.remove()
        for m in norms:
            m.momentum = momenta[m]
        for m, t in modes.items():
            m.training = t
    if count == 0:
        raise ValueError("no batches")
    with torch.no_grad():
        for m in norms:
            m.running_mean.copy_(sums[m][0] / count)
            m.running_var.copy_(sums[m][1] / count)
            m.num_batches_tracked.fill_(count)
    return model
'''),
    # update_bn's own habit: the whole function under a @torch.no_grad() decorator (guard.refusing refuses
    # update_bn by its own code, not by the decorator's wrapper, which this function shares).
    Variant("recal_no_grad_decorator", R, None, code='''
@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches) -> nn.Module:
    """The pass under the no_grad decorator; layers collected by type; a generator checked for emptiness."""
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise ValueError("recalibrate_bn: no batches")
    kinds = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
    layers = [(m, m.momentum) for m in model.modules() if isinstance(m, kinds) and m.track_running_stats]
    flags = [(m, m.training) for m in model.modules()]
    for m, _ in layers:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    model(first)
    for xb in batches:
        model(xb)
    for m, momentum in layers:
        m.momentum = momentum
    for m, flag in flags:
        m.training = flag
    return model
'''),
]
