"""Q6 (LayerNorm): known-wrong implementations and correct alternatives, as edits of the reference."""

from course_mutation import Variant

NOTEBOOK = "Q6"
SOL = "layernorm"

_MEAN = "mean = x.mean(dim=(1, 2, 3), keepdim=True)"
_VAR = "var = x.var(dim=(1, 2, 3), keepdim=True, correction=0)"
_OUT = "return (x - mean) / torch.sqrt(var + self.eps) * self.mult + self.add"
_PARAMS = ("self.mult = nn.Parameter(torch.tensor(1.0))\n"
           "        self.add = nn.Parameter(torch.tensor(0.0))")
_INIT = "        self.eps = eps\n        " + _PARAMS + "\n"

VARIANTS = [
    # ---- known mistakes ----
    Variant("unbiased_variance", SOL, mistake="normalises with the unbiased variance (the lesson's choice)",
            fails=("test_output",), names="ln.unbiased_variance",
            edits=((_VAR, "var = x.var(dim=(1, 2, 3), keepdim=True)"),)),
    Variant("eps_outside_sqrt", SOL, mistake="divides by sqrt(var) + eps",
            fails=("test_output",), names="norm.eps_outside_sqrt_or_std",
            edits=((_OUT, "return (x - mean) / (torch.sqrt(var) + self.eps) * self.mult + self.add"),)),
    Variant("eps_added_to_std", SOL, mistake="divides by x.std() + eps",
            fails=("test_output",), names="norm.eps_outside_sqrt_or_std",
            edits=((_OUT, "return (x - mean) / (x.std(dim=(1, 2, 3), keepdim=True, correction=0) + self.eps) "
                          "* self.mult + self.add"),)),
    Variant("axes_spatial_only", SOL, mistake="statistics over (H, W) per channel: InstanceNorm",
            fails=("test_output",), names="ln.axes_instancenorm",
            edits=((_MEAN, "mean = x.mean(dim=(2, 3), keepdim=True)"),
                   (_VAR, "var = x.var(dim=(2, 3), keepdim=True, correction=0)"))),
    Variant("axes_batch_norm", SOL, mistake="statistics per channel over (N, H, W): BatchNorm",
            fails=("test_output", "test_batch_independence"), names="ln.axes_batchnorm",
            edits=((_MEAN, "mean = x.mean(dim=(0, 2, 3), keepdim=True)"),
                   (_VAR, "var = x.var(dim=(0, 2, 3), keepdim=True, correction=0)"))),
    Variant("per_channel_affine", SOL, mistake="per-channel mult and add (lazily created) instead of one number",
            fails=("test_parameters", "test_output"), says="single learned number",
            edits=((_PARAMS, "self.mult = nn.Parameter(torch.ones(1, 1, 1, 1))\n"
                             "        self.add = nn.Parameter(torch.zeros(1, 1, 1, 1))"),)),
    Variant("affine_before_normalising", SOL, mistake="scales and shifts x, then normalises",
            fails=("test_output",), names="ln.affine_before_normalising",
            edits=((_MEAN, "x = x * self.mult + self.add\n        " + _MEAN),
                   (_OUT, "return (x - mean) / torch.sqrt(var + self.eps)"))),
    Variant("mean_not_subtracted", SOL, mistake="divides x by the std without subtracting the mean",
            fails=("test_output",), names="norm.mean_not_subtracted",
            edits=((_OUT, "return x / torch.sqrt(var + self.eps) * self.mult + self.add"),)),
    Variant("keepdim_dropped", SOL, mistake="reduces without keepdim and broadcasts the (N,) stats along W",
            fails=("test_output",), names="ln.no_keepdim",
            edits=((_MEAN, "mean = x.mean(dim=(1, 2, 3))"),
                   (_VAR, "var = x.var(dim=(1, 2, 3), correction=0)"))),
    Variant("running_stats_in_eval", SOL,
            mistake="keeps BatchNorm-style running statistics and uses them in eval mode",
            fails=("test_train_equals_eval",), says="keeps no running statistics",
            edits=((_INIT, _INIT + "        self.register_buffer('means', torch.zeros(()))\n"
                                   "        self.register_buffer('vars', torch.ones(()))\n"),
                   (_MEAN + "\n        " + _VAR,
                    "if self.training:\n"
                    "            " + _MEAN + "\n"
                    "            " + _VAR + "\n"
                    "            with torch.no_grad():\n"
                    "                self.means.lerp_(mean.mean(), 0.1)\n"
                    "                self.vars.lerp_(var.mean(), 0.1)\n"
                    "        else:\n"
                    "            mean, var = self.means, self.vars"))),
    Variant("stats_detached", SOL, mistake="computes the statistics from x.detach(), so no gradient flows through them",
            fails=("test_gradients",), names="norm.detached", says="gradient with respect to the input x",
            edits=((_MEAN, "mean = x.detach().mean(dim=(1, 2, 3), keepdim=True)"),
                   (_VAR, "var = x.detach().var(dim=(1, 2, 3), keepdim=True, correction=0)"))),
    Variant("delegates_to_layer_norm", SOL, mistake="calls F.layer_norm instead of doing the math",
            fails=("test_output", "test_batch_independence", "test_train_equals_eval", "test_gradients"),
            says="delegating to torch's own normalization",
            edits=((_MEAN + "\n        " + _VAR + "\n        " + _OUT,
                    "return F.layer_norm(x, x.shape[1:], eps=self.eps) * self.mult + self.add"),)),
    Variant("no_eps", SOL, mistake="leaves out eps (also NaN for a constant example)",
            fails=("test_output",), names="norm.no_eps",
            edits=((_OUT, "return (x - mean) / torch.sqrt(var) * self.mult + self.add"),)),
    Variant("identity", SOL, mistake="returns its input unchanged (a layer that does nothing)",
            fails=("test_output", "test_batch_independence", "test_train_equals_eval", "test_gradients"),
            names="ln.input_returned_or_scaled", says="returns its input unchanged",
            edits=((_MEAN + "\n        " + _VAR + "\n        " + _OUT, "return x"),)),
    Variant("affine_only", SOL, mistake="scales and shifts x without normalising it",
            fails=("test_output", "test_batch_independence", "test_train_equals_eval", "test_gradients"),
            names="ln.input_returned_or_scaled", says="only scales and shifts its input",
            edits=((_MEAN + "\n        " + _VAR + "\n        " + _OUT, "return x * self.mult + self.add"),)),
    Variant("view_needs_contiguous", SOL, mistake="flattens each example with .view(), which refuses a channels_last "
            "or transposed input", fails=("test_output",), names="layout.view",
            edits=((_MEAN + "\n        " + _VAR + "\n        " + _OUT,
                    "flat = x.view(x.shape[0], -1)\n"
                    "        mean = flat.mean(dim=1).view(-1, 1, 1, 1)\n"
                    "        var = flat.var(dim=1, correction=0).view(-1, 1, 1, 1)\n"
                    "        " + _OUT),)),
    Variant("default_eps", SOL, mistake="defaults to eps=1e-8 (Adam's habit), not the stub's 1e-5",
            fails=("test_parameters",), says="default to eps=1e-5",
            edits=(("def __init__(self, eps: float = 1e-5)", "def __init__(self, eps: float = 1e-8)"),)),
    Variant("parameters_shared_between_layers", SOL,
            mistake="wraps two tensors made once for the whole class, so every LayerNorm shares one mult and one add",
            fails=("test_parameters",), says="every layer needs parameters of its own",
            edits=(("        super().__init__()\n", "        super().__init__()\n        start = LayerNorm.START\n"),
                   (_PARAMS, "self.mult = nn.Parameter(start[0])\n        self.add = nn.Parameter(start[1])"),
                   ("    def forward(", "    START = (torch.tensor(1.0), torch.tensor(0.0))\n\n    def forward("))),
    # ---- correct alternatives, written differently ----
    Variant("contiguous_then_view", SOL,
            edits=((_MEAN + "\n        " + _VAR + "\n        " + _OUT,
                    "flat = x.contiguous().view(x.shape[0], -1)\n"
                    "        var, mean = torch.var_mean(flat, dim=1, unbiased=False)\n"
                    "        scale = (var + self.eps).rsqrt()\n"
                    "        return torch.einsum('nchw,n->nchw', x - mean[:, None, None, None], scale) * self.mult + self.add"),)),
    Variant("var_mean_rsqrt", SOL,
            edits=((_MEAN + "\n        " + _VAR,
                    "var, mean = torch.var_mean(x, dim=(1, 2, 3), keepdim=True, correction=0)"),
                   (_OUT, "return self.add + self.mult * (x - mean) * torch.rsqrt(var + self.eps)"))),
    Variant("flatten_per_example", SOL,
            edits=((_MEAN + "\n        " + _VAR + "\n        " + _OUT,
                    "flat = x.reshape(x.shape[0], -1)\n"
                    "        centred = flat - flat.mean(dim=1, keepdim=True)\n"
                    "        std = (centred.pow(2).mean(dim=1, keepdim=True) + self.eps).sqrt()\n"
                    "        return (centred / std).view_as(x) * self.mult + self.add"),)),
    Variant("manual_sums", SOL,
            edits=((_MEAN + "\n        " + _VAR,
                    "n = x[0].numel()\n"
                    "        mean = x.sum(dim=(1, 2, 3), keepdim=True) / n\n"
                    "        var = (x * x).sum(dim=(1, 2, 3), keepdim=True) / n - mean * mean"),)),
    Variant("parameters_with_full", SOL,
            edits=((_PARAMS, "self.mult = nn.Parameter(torch.full((), 1.0))\n"
                             "        self.add = nn.Parameter(torch.zeros(()))"),)),
]

# ---- Part E: RMSNorm ----
RMS = "rmsnorm"
_MS = "ms = (x * x).mean(dim=dims, keepdim=True)"
_RMS_OUT = "return x / torch.sqrt(ms + self.eps) * self.weight"
_WEIGHT = "self.weight = nn.Parameter(torch.ones(self.normalized_shape))"
_CHECK = ("if tuple(x.shape[x.dim() - k:]) != self.normalized_shape or x.dim() < k:\n"
          "            raise ValueError(f\"RMSNorm({self.normalized_shape}): the input's last dimensions must be \"\n"
          "                             f\"{self.normalized_shape}, got an input of shape {tuple(x.shape)}\")\n")

VARIANTS += [
    # ---- known mistakes ----
    Variant("rms_mean_subtracted", RMS, mistake="subtracts the mean and divides by the std: LayerNorm",
            fails=("test_rms_output",), names="rms.mean_subtracted",
            edits=((_MS, "x = x - x.mean(dim=dims, keepdim=True)\n        " + _MS),)),
    Variant("rms_eps_outside_root", RMS, mistake="divides by sqrt(mean(x**2)) + eps",
            fails=("test_rms_output",), names="rms.eps_outside_sqrt",
            edits=((_RMS_OUT, "return x / (torch.sqrt(ms) + self.eps) * self.weight"),)),
    Variant("rms_no_eps", RMS, mistake="leaves out eps", fails=("test_rms_output",), names="rms.no_eps",
            edits=((_RMS_OUT, "return x / torch.sqrt(ms) * self.weight"),)),
    Variant("rms_last_dim_only", RMS, mistake="reduces over the last dimension only, whatever normalized_shape",
            fails=("test_rms_output",), names="rms.last_dim_only",
            edits=((_MS, "ms = (x * x).mean(dim=-1, keepdim=True)"),)),
    Variant("rms_all_but_batch", RMS, mistake="reduces over every dimension but the batch",
            fails=("test_rms_output",), names="rms.all_but_batch",
            edits=((_MS, "ms = (x * x).mean(dim=tuple(range(1, x.dim())), keepdim=True)"),)),
    Variant("rms_scalar_weight", RMS, mistake="one scalar weight for the whole layer",
            fails=("test_rms_parameters", "test_rms_output"), names="rms.scalar_weight",
            edits=((_WEIGHT, "self.weight = nn.Parameter(torch.tensor(1.0))"),)),
    Variant("rms_sum_not_mean", RMS, mistake="the square root of the sum of x**2 instead of its mean",
            fails=("test_rms_output",), names="rms.sum_not_mean",
            edits=((_MS, "ms = (x * x).sum(dim=dims, keepdim=True)"),)),
    Variant("rms_divides_by_std", RMS, mistake="divides x (not centred) by its standard deviation",
            fails=("test_rms_output",), names="rms.std_not_rms",
            edits=((_MS, "ms = x.var(dim=dims, keepdim=True, correction=0)"),)),
    Variant("rms_weight_forgotten", RMS, mistake="never multiplies by the weight",
            fails=("test_rms_output",), names="rms.no_weight",
            edits=((_RMS_OUT, "return x / torch.sqrt(ms + self.eps)"),)),
    Variant("rms_with_bias", RMS, mistake="adds a learned bias (LayerNorm's shift) as a second parameter",
            fails=("test_rms_parameters",), says="no bias",
            edits=((_WEIGHT, _WEIGHT + "\n        self.bias = nn.Parameter(torch.zeros(self.normalized_shape))"),
                   (_RMS_OUT, "return x / torch.sqrt(ms + self.eps) * self.weight + self.bias"))),
    Variant("rms_no_shape_check", RMS, mistake="never checks the input's trailing shape (broadcasting may hide it)",
            fails=("test_rms_errors",), says="expected ValueError",
            edits=((_CHECK + "        ", ""),)),
    Variant("rms_shape_kept_as_int", RMS, mistake="stores normalized_shape as given (an int stays an int)",
            fails=("test_rms_parameters",), says="as the tuple",
            edits=(("self.normalized_shape = tuple(normalized_shape)",
                    "self.normalized_shape = tuple(normalized_shape)\n        self._shape = self.normalized_shape\n"
                    "        self.normalized_shape = original"),
                   ("        if isinstance(normalized_shape, int):", "        original = normalized_shape\n"
                    "        if isinstance(normalized_shape, int):"),
                   ("k = len(self.normalized_shape)", "k = len(self._shape)"),
                   ("!= self.normalized_shape or", "!= self._shape or"))),
    Variant("rms_default_eps", RMS, mistake="defaults to eps=1e-5 (LayerNorm's), not the stub's 1e-6",
            fails=("test_rms_parameters",), says="default to eps=1e-6",
            edits=(("eps: float = 1e-6", "eps: float = 1e-5"),)),
    Variant("rms_delegates", RMS, mistake="calls F.rms_norm", fails=("test_rms_output", "test_rms_errors"),
            says="delegating to torch's own normalization",
            edits=((_MS + "\n        " + _RMS_OUT,
                    "return F.rms_norm(x, self.normalized_shape, self.weight, self.eps)"),)),
    Variant("rms_view_flatten", RMS, mistake="flattens the trailing dims with .view(), which refuses a transposed input",
            fails=("test_rms_output",), names="layout.view",
            edits=((_MS, "ms = (x * x).view(*x.shape[:x.dim() - k], -1).mean(dim=-1)"
                         ".view(*x.shape[:x.dim() - k], *([1] * k))"),)),
    # ---- correct alternatives, written differently ----
    Variant("rms_rsqrt_pow", RMS,
            edits=((_MS + "\n        " + _RMS_OUT,
                    "return self.weight * x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + self.eps)"),)),
    Variant("rms_float64_cast_back", RMS,
            edits=((_MS + "\n        " + _RMS_OUT,
                    "x64 = x.double()\n"
                    "        scale = (x64.square().mean(dims, keepdim=True) + self.eps).rsqrt()\n"
                    "        return (x64 * scale * self.weight.double()).to(x.dtype)"),)),
    Variant("rms_flatten_norm", RMS,
            edits=((_MS + "\n        " + _RMS_OUT,
                    "flat = x.reshape(*x.shape[:x.dim() - k], -1)\n"
                    "        n = flat.shape[-1]\n"
                    "        norm = torch.linalg.vector_norm(flat, dim=-1, keepdim=True)\n"
                    "        return (flat / torch.sqrt(norm ** 2 / n + self.eps)).reshape(x.shape) * self.weight"),)),
    Variant("rms_einsum_check_by_endswith", RMS,
            edits=((_CHECK, "if x.shape[x.dim() - k:] != torch.Size(self.normalized_shape) or x.dim() < k:\n"
                            "            raise ValueError(f'expected trailing dims {self.normalized_shape}, got {tuple(x.shape)}')\n"),
                   (_MS, "ms = torch.mean(torch.square(x), dim=dims, keepdim=True)"))),
]
