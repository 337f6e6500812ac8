"""Q3 (BatchNorm): known-wrong implementations and correct alternatives, as edits of the reference."""

from course_mutation import Variant

NOTEBOOK = "Q3"
SOL = "batchnorm"

_NORMALISE = "        return (x - mean) / torch.sqrt(var + self.eps) * self.mults + self.adds"
_BIASED = "var = x.var(dim=(0, 2, 3), keepdim=True, correction=0)"
_UPDATE = ("            with torch.no_grad():\n"
           "                self.means.lerp_(mean, self.mom)\n"
           "                self.vars.lerp_(var * n / (n - 1), self.mom)\n")
_CHECK_ONE = "            if n < 2:"

VARIANTS = [
    # ---- known mistakes (GRADING.md's catalogue) ----
    Variant("unbiased_variance_for_output", SOL,
            mistake="normalises with the unbiased batch variance (the 2019 lesson's choice)",
            fails=("test_train_mode_output",), names="bn.unbiased_variance",
            edits=((_BIASED, "var = x.var(dim=(0, 2, 3), keepdim=True)"),
                   ("self.vars.lerp_(var * n / (n - 1), self.mom)", "self.vars.lerp_(var, self.mom)"))),
    Variant("biased_variance_stored", SOL,
            mistake="stores the biased batch variance in the running variance",
            fails=("test_running_statistics",), names="bn.biased_variance_stored",
            edits=(("self.vars.lerp_(var * n / (n - 1), self.mom)", "self.vars.lerp_(var, self.mom)"),)),
    Variant("momentum_flipped", SOL,
            mistake="running = mom * running + (1 - mom) * batch (the CS231n habit)",
            fails=("test_running_statistics",), names="bn.momentum_flipped",
            edits=(("self.means.lerp_(mean, self.mom)", "self.means.lerp_(mean, 1 - self.mom)"),
                   ("self.vars.lerp_(var * n / (n - 1), self.mom)", "self.vars.lerp_(var * n / (n - 1), 1 - self.mom)"))),
    Variant("eps_outside_sqrt", SOL,
            mistake="divides by sqrt(var) + eps",
            fails=("test_train_mode_output", "test_eval_mode_output"), names="norm.eps_outside_sqrt",
            edits=((_NORMALISE, "        return (x - mean) / (torch.sqrt(var) + self.eps) * self.mults + self.adds"),)),
    Variant("axes_batch_only", SOL,
            mistake="statistics over the batch dimension only",
            fails=("test_train_mode_output",), names="bn.axes_batch_only",
            edits=(("mean = x.mean(dim=(0, 2, 3), keepdim=True)", "mean = x.mean(dim=0, keepdim=True)"),
                   (_BIASED, "var = x.var(dim=0, keepdim=True, correction=0)"),
                   (_UPDATE, "            with torch.no_grad():\n"
                             "                self.means.lerp_(mean.mean((2, 3), keepdim=True), self.mom)\n"
                             "                self.vars.lerp_(var.mean((2, 3), keepdim=True) * n / (n - 1), self.mom)\n"))),
    Variant("axes_spatial_only", SOL,
            mistake="statistics over (2, 3), per example (InstanceNorm)",
            fails=("test_train_mode_output",), names="bn.axes_instancenorm",
            edits=(("mean = x.mean(dim=(0, 2, 3), keepdim=True)", "mean = x.mean(dim=(2, 3), keepdim=True)"),
                   (_BIASED, "var = x.var(dim=(2, 3), keepdim=True, correction=0)"),
                   (_UPDATE, "            with torch.no_grad():\n"
                             "                self.means.lerp_(mean.mean(0, keepdim=True), self.mom)\n"
                             "                self.vars.lerp_(var.mean(0, keepdim=True) * n / (n - 1), self.mom)\n"))),
    Variant("eval_uses_batch_stats", SOL,
            mistake="eval mode normalises with the batch's statistics",
            fails=("test_eval_mode_output",), names="bn.eval_batch_statistics",
            edits=(("            mean, var = self.means, self.vars",
                    "            mean = x.mean(dim=(0, 2, 3), keepdim=True)\n"
                    "            var = x.var(dim=(0, 2, 3), keepdim=True, correction=0)"),)),
    Variant("train_uses_running_stats", SOL,
            mistake="training mode normalises with the (just updated) running statistics",
            fails=("test_train_mode_output", "test_training_curve"), names="bn.train_running_after_update",
            edits=((_UPDATE, _UPDATE + "            mean, var = self.means, self.vars\n"),)),
    Variant("running_stats_on_graph", SOL,
            mistake="updates the running statistics with autograd history attached",
            fails=("test_buffers_without_history",), says="autograd history",
            edits=((_UPDATE, "            self.means = (1 - self.mom) * self.means + self.mom * mean\n"
                             "            self.vars = (1 - self.mom) * self.vars + self.mom * var * n / (n - 1)\n"),)),
    Variant("plain_attributes", SOL,
            mistake="keeps the running statistics as plain attributes, not registered buffers",
            fails=("test_parameters_and_buffers", "test_buffers_without_history"), says="registered buffer",
            edits=(('        self.register_buffer("means", torch.zeros(1, nf, 1, 1))\n'
                    '        self.register_buffer("vars", torch.ones(1, nf, 1, 1))\n',
                    "        self.means = torch.zeros(1, nf, 1, 1)\n"
                    "        self.vars = torch.ones(1, nf, 1, 1)\n"),)),
    Variant("running_var_starts_at_zero", SOL,
            mistake="initialises the running variance to zeros",
            fails=("test_parameters_and_buffers", "test_eval_mode_output"), names="bn.running_var_zeros",
            edits=(('self.register_buffer("vars", torch.ones(1, nf, 1, 1))',
                    'self.register_buffer("vars", torch.zeros(1, nf, 1, 1))'),)),
    Variant("eval_updates_buffers", SOL,
            mistake="updates the running statistics in eval mode too",
            fails=("test_eval_leaves_buffers_alone",), says="changed the running statistics",
            edits=(("            mean, var = self.means, self.vars",
                    "            with torch.no_grad():\n"
                    "                self.means.lerp_(x.mean(dim=(0, 2, 3), keepdim=True), self.mom)\n"
                    "            mean, var = self.means, self.vars"),)),
    Variant("mode_from_grad_mode", SOL,
            mistake="decides train vs eval from torch.is_grad_enabled() instead of self.training",
            fails=("test_eval_leaves_buffers_alone",), says="self.training",
            edits=(("        if self.training:", "        if torch.is_grad_enabled():"),)),
    Variant("scale_and_shift_swapped", SOL,
            mistake="x_hat * adds + mults",
            fails=("test_train_mode_output", "test_eval_mode_output"), names="norm.scale_shift_swapped",
            edits=((_NORMALISE, "        return (x - mean) / torch.sqrt(var + self.eps) * self.adds + self.mults"),)),
    Variant("scale_wrong_shape", SOL,
            mistake="mults and adds of shape (nf,), which broadcast over the width instead of the channels",
            fails=("test_parameters_and_buffers",), says="should have shape",
            edits=(("self.mults = nn.Parameter(torch.ones(nf, 1, 1))", "self.mults = nn.Parameter(torch.ones(nf))"),
                   ("self.adds = nn.Parameter(torch.zeros(nf, 1, 1))", "self.adds = nn.Parameter(torch.zeros(nf))"))),
    Variant("statistics_detached", SOL,
            mistake="computes the batch statistics without gradient (detached)",
            fails=("test_gradients",), names="bn.detached_mean_and_var",
            edits=((_BIASED, _BIASED + "\n            mean, var = mean.detach(), var.detach()"),)),
    Variant("no_error_for_one_value", SOL,
            mistake="returns NaN instead of raising ValueError for one value per channel in training",
            fails=("test_clear_errors",), says="ValueError",
            edits=((_CHECK_ONE, "            if n < 1:"),)),
    Variant("delegates_to_torch", SOL,
            mistake="calls F.batch_norm instead of implementing the normalization",
            fails=("test_train_mode_output", "test_eval_mode_output", "test_running_statistics", "test_gradients"),
            says="delegating to torch's own normalization",
            edits=((_NORMALISE,
                    "        return F.batch_norm(x, self.means.view(-1), self.vars.view(-1), self.mults.view(-1),\n"
                    "                            self.adds.view(-1), training=self.training, momentum=self.mom, eps=self.eps)"),)),
    Variant("identity", SOL,
            mistake="forward checks the input and returns it unchanged (a layer that does nothing)",
            fails=("test_train_mode_output", "test_eval_mode_output", "test_running_statistics",
                   "test_eval_leaves_buffers_alone", "test_gradients", "test_buffers_without_history",
                   "test_training_curve"), names="bn.input_returned",
            edits=((_NORMALISE, "        return x"),
                   ("        if self.training:\n            n = x.numel()", "        if False:\n            n = x.numel()"))),
    Variant("affine_only", SOL,
            mistake="forward only scales and shifts: x * mults + adds, no normalization",
            fails=("test_train_mode_output", "test_eval_mode_output", "test_running_statistics",
                   "test_eval_leaves_buffers_alone", "test_gradients", "test_buffers_without_history",
                   "test_training_curve"), names="bn.input_scaled_shifted", says="not normalised",
            edits=((_NORMALISE, "        return x * self.mults + self.adds"),
                   ("        if self.training:\n            n = x.numel()", "        if False:\n            n = x.numel()"))),
    Variant("class_level_buffers", SOL,
            mistake="the running statistics are tensors made once for the class, so layers of one size share them",
            fails=("test_parameters_and_buffers",), says="share",
            edits=(('        self.register_buffer("means", torch.zeros(1, nf, 1, 1))\n'
                    '        self.register_buffer("vars", torch.ones(1, nf, 1, 1))\n',
                    '        if getattr(BatchNorm, "_nf", None) != nf:  # start values made once per size\n'
                    '            BatchNorm._nf, BatchNorm._means, BatchNorm._vars = nf, torch.zeros(1, nf, 1, 1), torch.ones(1, nf, 1, 1)\n'
                    '        self.register_buffer("means", BatchNorm._means)\n'
                    '        self.register_buffer("vars", BatchNorm._vars)\n'),)),
    Variant("refuses_single_example", SOL,
            mistake="raises ValueError for a batch of one example in training, though it has H*W values per channel",
            fails=("test_train_mode_output",), says="not a batch of one example",
            edits=((_CHECK_ONE, "            if n < 2 or x.shape[0] < 2:"),)),
    Variant("view_needs_contiguous", SOL,
            mistake="flattens the input with .view, which fails on an input that is not contiguous",
            fails=("test_train_mode_output",), names="layout.view",
            edits=(("            mean = x.mean(dim=(0, 2, 3), keepdim=True)\n            " + _BIASED,
                    "            flat = x.view(x.shape[0], x.shape[1], -1)\n"
                    "            mean = flat.mean(dim=(0, 2))[None, :, None, None]\n"
                    "            var = flat.var(dim=(0, 2), correction=0)[None, :, None, None]"),)),
    # ---- correct alternatives, written differently ----
    Variant("flattened_with_reshape", SOL,
            edits=(("            mean = x.mean(dim=(0, 2, 3), keepdim=True)\n            " + _BIASED,
                    "            flat = x.reshape(x.shape[0], x.shape[1], -1)\n"
                    "            mean = flat.mean(dim=(0, 2))[None, :, None, None]\n"
                    "            var = flat.var(dim=(0, 2), correction=0)[None, :, None, None]"),)),
    Variant("momentum_stored_under_another_name", SOL, "keeps mom as self.momentum, not self.mom as the stub says",
            fails=("test_parameters_and_buffers",), says="self.mom",
            edits=(("self.nf, self.mom, self.eps = nf, mom, eps", "self.nf, self.momentum, self.eps = nf, mom, eps"),
                   ("self.means.lerp_(mean, self.mom)", "self.means.lerp_(mean, self.momentum)"),
                   ("self.vars.lerp_(var * n / (n - 1), self.mom)", "self.vars.lerp_(var * n / (n - 1), self.momentum)"))),
    Variant("via_squared_deviations", SOL,
            edits=((_BIASED, "var = ((x - mean) ** 2).mean(dim=(0, 2, 3), keepdim=True)"),
                   (_UPDATE, "            with torch.no_grad():\n"
                             "                self.means.mul_(1 - self.mom).add_(self.mom * mean)\n"
                             "                self.vars.copy_((1 - self.mom) * self.vars + self.mom * var * n / (n - 1))\n"),
                   (_NORMALISE, "        x_hat = (x - mean) * torch.rsqrt(var + self.eps)\n"
                                "        return self.mults * x_hat + self.adds"))),
    Variant("via_channels_first_var_mean", SOL,
            code='''class BatchNorm(nn.Module):
    """Batch normalization with nn.BatchNorm2d's rules, computed on a (C, N*H*W) view."""

    def __init__(self, nf: int, mom: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.mom, self.eps = mom, eps
        self.mults = nn.Parameter(torch.ones(nf, 1, 1))
        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))
        self.register_buffer("means", torch.zeros(1, nf, 1, 1))
        self.register_buffer("vars", torch.ones(1, nf, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim != 4:
            raise ValueError("expected a 4-D input")
        if x.size(1) != self.mults.size(0):
            raise ValueError("wrong number of channels")
        if self.training:
            flat = x.transpose(0, 1).reshape(x.size(1), -1)
            if flat.size(1) == 1:
                raise ValueError("need more than one value per channel")
            var, mean = torch.var_mean(flat, dim=1, correction=0)
            unbiased = torch.var(flat.detach(), dim=1, correction=1)
            self.means = (1 - self.mom) * self.means + self.mom * mean.detach().view(1, -1, 1, 1)
            self.vars = (1 - self.mom) * self.vars + self.mom * unbiased.view(1, -1, 1, 1)
            mean, var = mean.view(1, -1, 1, 1), var.view(1, -1, 1, 1)
        else:
            mean, var = self.means, self.vars
        return (x - mean) / (var + self.eps) ** 0.5 * self.mults + self.adds
'''),
    Variant("via_einsum", SOL,
            code='''class BatchNorm(nn.Module):
    """Batch normalization with nn.BatchNorm2d's rules, sums written with einsum."""

    def __init__(self, nf: int, mom: float = 0.1, eps: float = 1e-5) -> None:
        super().__init__()
        self.nf, self.mom, self.eps = nf, mom, eps
        self.mults = nn.Parameter(torch.ones(nf, 1, 1))
        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))
        self.register_buffer("means", torch.zeros(1, nf, 1, 1))
        self.register_buffer("vars", torch.ones(1, nf, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        if len(x.shape) != 4 or x.shape[1] != self.nf:
            raise ValueError(f"bad input shape {tuple(x.shape)}")
        if not self.training:
            return self.mults * (x - self.means) / torch.sqrt(self.vars + self.eps) + self.adds
        n = x.shape[0] * x.shape[2] * x.shape[3]
        if n == 1:
            raise ValueError("one value per channel")
        mean = torch.einsum("nchw->c", x) / n
        centred = x - mean[None, :, None, None]
        var = torch.einsum("nchw,nchw->c", centred, centred) / n
        with torch.no_grad():
            self.means.copy_(self.means + self.mom * (mean[None, :, None, None] - self.means))
            self.vars.copy_(self.vars + self.mom * (var[None, :, None, None] * n / (n - 1) - self.vars))
        scale = self.mults.view(1, -1, 1, 1) / torch.sqrt(var + self.eps)[None, :, None, None]
        return centred * scale + self.adds.view(1, -1, 1, 1)
'''),
]
