"""Q7 (InstanceNorm): known-wrong implementations and correct alternatives, as edits of the reference."""

from course_mutation import Variant

NOTEBOOK = "Q7"
SOL = "instancenorm"

_MEAN = "mean = x.mean(dim=(2, 3), keepdim=True)"
_VAR = "var = x.var(dim=(2, 3), keepdim=True, correction=0)  # biased: 0 (not NaN) for a single value"
_STATS = _MEAN + "\n        " + _VAR
_OUT = "return (x - mean) / torch.sqrt(var + self.eps) * self.mults + self.adds"
_PARAMS = ("self.mults = nn.Parameter(torch.ones(nf, 1, 1))\n"
           "        self.adds = nn.Parameter(torch.zeros(nf, 1, 1))")
_INIT = "        self.nf, self.eps = nf, eps\n        " + _PARAMS + "\n"
_CHECK = ("        if x.dim() != 4 or x.shape[1] != self.nf:\n"
          "            raise ValueError(f\"InstanceNorm({self.nf}) expects an input of shape (N, {self.nf}, H, W), \"\n"
          "                             f\"got {tuple(x.shape)}\")\n")

VARIANTS = [
    # ---- known mistakes ----
    Variant("unbiased_variance", SOL, mistake="normalises with the unbiased variance (the lesson's; NaN on 1x1 maps)",
            fails=("test_output", "test_one_by_one_map"), names="in.unbiased_variance",
            edits=((_VAR, "var = x.var(dim=(2, 3), keepdim=True)"),)),
    Variant("eps_outside_sqrt", SOL, mistake="divides by sqrt(var) + eps",
            fails=("test_output",), names="norm.eps_outside_sqrt_or_std",
            edits=((_OUT, "return (x - mean) / (torch.sqrt(var) + self.eps) * self.mults + self.adds"),)),
    Variant("no_eps", SOL, mistake="leaves out eps (NaN on 1x1 maps: 0/0)",
            fails=("test_output", "test_one_by_one_map"), names="norm.no_eps",
            edits=((_OUT, "return (x - mean) / torch.sqrt(var) * self.mults + self.adds"),)),
    Variant("axes_batch_norm", SOL, mistake="statistics per channel over (N, H, W): BatchNorm",
            fails=("test_output", "test_independence"), names="in.axes_batchnorm",
            edits=((_STATS, "mean = x.mean(dim=(0, 2, 3), keepdim=True)\n"
                            "        var = x.var(dim=(0, 2, 3), keepdim=True, correction=0)"),)),
    Variant("axes_layer_norm", SOL, mistake="statistics per example over (C, H, W): LayerNorm",
            fails=("test_output", "test_independence"), names="in.axes_layernorm",
            edits=((_STATS, "mean = x.mean(dim=(1, 2, 3), keepdim=True)\n"
                            "        var = x.var(dim=(1, 2, 3), keepdim=True, correction=0)"),)),
    Variant("scalar_affine", SOL, mistake="one scale and shift for all channels instead of one per channel",
            fails=("test_parameters", "test_output"), says="one value per channel",
            edits=((_PARAMS, "self.mults = nn.Parameter(torch.tensor(1.0))\n"
                             "        self.adds = nn.Parameter(torch.tensor(0.0))"),)),
    Variant("affine_before_normalising", SOL, mistake="scales and shifts x, then normalises",
            fails=("test_output", "test_one_by_one_map"), names="in.affine_before_normalising",
            edits=((_STATS, "x = x * self.mults + self.adds\n        " + _STATS),
                   (_OUT, "return (x - mean) / torch.sqrt(var + self.eps)"))),
    Variant("mean_not_subtracted", SOL, mistake="divides x by the std without subtracting the mean",
            fails=("test_output", "test_one_by_one_map"), names="norm.mean_not_subtracted",
            edits=((_OUT, "return x / torch.sqrt(var + self.eps) * self.mults + self.adds"),)),
    Variant("keepdim_dropped", SOL, mistake="reduces without keepdim: the (N, C) stats broadcast against (H, W)",
            fails=("test_output",), names="in.no_keepdim",
            edits=((_STATS, "mean = x.mean(dim=(2, 3))\n"
                            "        var = x.var(dim=(2, 3), correction=0)"),)),
    Variant("running_stats_in_eval", SOL,
            mistake="keeps BatchNorm-style running statistics and uses them in eval mode",
            fails=("test_train_equals_eval",), says="keeps no running statistics",
            edits=((_INIT, _INIT + "        self.register_buffer('means', torch.zeros(1, nf, 1, 1))\n"
                                   "        self.register_buffer('vars', torch.ones(1, nf, 1, 1))\n"),
                   (_STATS,
                    "if self.training:\n"
                    "            " + _STATS.replace("\n        ", "\n            ") + "\n"
                    "            with torch.no_grad():\n"
                    "                self.means.lerp_(mean.mean(0, keepdim=True), 0.1)\n"
                    "                self.vars.lerp_(var.mean(0, keepdim=True), 0.1)\n"
                    "        else:\n"
                    "            mean, var = self.means, self.vars"))),
    Variant("nan_guard_returns_zero", SOL,
            mistake="on a 1x1 map returns zeros (skips the shift) instead of adds",
            fails=("test_one_by_one_map",), names="in.zeros_returned", says="adds, whatever the input",
            edits=((_STATS, "if x.shape[2] * x.shape[3] == 1:\n"
                            "            return torch.zeros_like(x)\n"
                            "        " + _STATS),)),
    Variant("no_error_on_wrong_channels", SOL, mistake="no check of the input's shape (broadcasting errors or silence)",
            fails=("test_clear_errors",), says="expected ValueError",
            edits=((_CHECK, ""),)),
    Variant("delegates_to_instance_norm", SOL, mistake="calls F.instance_norm instead of doing the math",
            fails=("test_output", "test_independence", "test_train_equals_eval", "test_one_by_one_map",
                   "test_gradients"),
            says="delegating to torch's own normalization",
            edits=((_STATS + "\n        " + _OUT,
                    "return F.instance_norm(x, weight=self.mults.flatten(), bias=self.adds.flatten(), eps=self.eps)"),)),
    Variant("stats_detached", SOL, mistake="computes the statistics from x.detach(), so no gradient flows through them",
            fails=("test_gradients",), names="norm.detached", says="gradient with respect to the input x",
            edits=((_STATS, "mean = x.detach().mean(dim=(2, 3), keepdim=True)\n"
                            "        var = x.detach().var(dim=(2, 3), keepdim=True, correction=0)"),)),
    Variant("nf_not_stored", SOL, mistake="keeps the channel count under another name, not self.nf as the stub says",
            fails=("test_parameters",), says="self.nf",
            edits=(("        self.nf, self.eps = nf, eps\n", "        self.channels, self.eps = nf, eps\n"),
                   (_CHECK, _CHECK.replace("self.nf", "self.channels")))),
    Variant("lesson_default_eps", SOL, mistake="the lesson's default eps=1e-0 instead of 1e-5",
            fails=("test_parameters", "test_output"), names="in.lesson_eps",
            edits=(("def __init__(self, nf: int, eps: float = 1e-5)", "def __init__(self, nf: int, eps: float = 1e-0)"),)),
    Variant("lesson_instancenorm", SOL, mistake="the lesson's InstanceNorm: unbiased variance and eps=1e-0",
            fails=("test_output",), says="eps=1e-0",
            edits=(("def __init__(self, nf: int, eps: float = 1e-5)", "def __init__(self, nf: int, eps: float = 1e-0)"),
                   (_VAR, "var = x.var(dim=(2, 3), keepdim=True)"))),
    Variant("identity", SOL, mistake="returns its input unchanged (a layer that does nothing)",
            fails=("test_output", "test_independence", "test_train_equals_eval", "test_one_by_one_map", "test_gradients"),
            names="norm.input_returned", says="returns its input unchanged",
            edits=((_STATS + "\n        " + _OUT, "return x"),)),
    Variant("affine_only", SOL, mistake="scales and shifts x per channel without normalising it",
            fails=("test_output", "test_independence", "test_train_equals_eval", "test_one_by_one_map", "test_gradients"),
            names="in.input_scaled_shifted", says="only scales and shifts its input",
            edits=((_STATS + "\n        " + _OUT, "return x * self.mults + self.adds"),)),
    Variant("view_needs_contiguous", SOL, mistake="flattens each map with .view(), which refuses a channels_last or "
            "transposed input", fails=("test_output",), names="layout.view",
            edits=((_STATS, "flat = x.view(x.shape[0], x.shape[1], -1)\n"
                            "        mean = flat.mean(dim=2)[..., None, None]\n"
                            "        var = flat.var(dim=2, correction=0)[..., None, None]"),)),
    Variant("parameters_shared_between_layers", SOL,
            mistake="wraps slices of two tensors made once for the class, so layers share their mults and adds",
            fails=("test_parameters",), says="every layer needs parameters of its own",
            edits=((_PARAMS, "self.mults = nn.Parameter(InstanceNorm.ONES[:nf].view(nf, 1, 1))\n"
                             "        self.adds = nn.Parameter(InstanceNorm.ZEROS[:nf].view(nf, 1, 1))"),
                   ("    def forward(", "    ONES, ZEROS = torch.ones(512), torch.zeros(512)\n\n    def forward("))),
    # ---- correct alternatives, written differently ----
    Variant("contiguous_then_view", SOL,
            edits=((_STATS + "\n        " + _OUT,
                    "n, c = x.shape[:2]\n"
                    "        flat = x.contiguous().view(n, c, -1)\n"
                    "        var, mean = torch.var_mean(flat, dim=2, unbiased=False)\n"
                    "        xhat = (flat - mean[..., None]) / torch.sqrt(var[..., None] + self.eps)\n"
                    "        return xhat.view(x.shape) * self.mults + self.adds"),)),
    Variant("var_mean_rsqrt", SOL,
            edits=((_STATS, "var, mean = torch.var_mean(x, dim=(2, 3), keepdim=True, correction=0)"),
                   (_OUT, "return self.adds + self.mults * (x - mean) * torch.rsqrt(var + self.eps)"))),
    Variant("flatten_maps", SOL,
            edits=((_STATS + "\n        " + _OUT,
                    "flat = x.flatten(2)\n"
                    "        centred = flat - flat.mean(dim=2, keepdim=True)\n"
                    "        std = (centred.pow(2).mean(dim=2, keepdim=True) + self.eps).sqrt()\n"
                    "        return (centred / std).view_as(x) * self.mults + self.adds"),)),
    Variant("manual_sums", SOL,
            edits=((_STATS,
                    "n = x.shape[2] * x.shape[3]\n"
                    "        mean = x.sum(dim=(2, 3), keepdim=True) / n\n"
                    "        var = ((x - mean) ** 2).sum(dim=(2, 3), keepdim=True) / n"),)),
    Variant("checks_against_parameter_shape", SOL,
            edits=((_CHECK, "        if x.ndim != 4:\n"
                            "            raise ValueError(f'expected a 4-D input, got shape {tuple(x.shape)}')\n"
                            "        if x.size(1) != self.mults.shape[0]:\n"
                            "            raise ValueError(f'expected {self.mults.shape[0]} channels, got {x.size(1)}')\n"),
                   (_PARAMS, "self.mults = nn.Parameter(torch.ones(nf).view(nf, 1, 1))\n"
                             "        self.adds = nn.Parameter(torch.zeros(nf).view(nf, 1, 1))"))),
]
