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
            fails=("test_output",), says="unbiased variance",
            edits=((_VAR, "var = x.var(dim=(1, 2, 3), keepdim=True)"),)),
    Variant("eps_outside_sqrt", SOL, mistake="divides by sqrt(var) + eps",
            fails=("test_output",), says="outside the square root",
            edits=((_OUT, "return (x - mean) / (torch.sqrt(var) + self.eps) * self.mult + self.add"),)),
    Variant("eps_added_to_std", SOL, mistake="divides by x.std() + eps",
            fails=("test_output",), says="added it to the standard deviation",
            edits=((_OUT, "return (x - mean) / (x.std(dim=(1, 2, 3), keepdim=True, correction=0) + self.eps) "
                          "* self.mult + self.add"),)),
    Variant("axes_spatial_only", SOL, mistake="statistics over (H, W) per channel: InstanceNorm",
            fails=("test_output",), says="that is InstanceNorm",
            edits=((_MEAN, "mean = x.mean(dim=(2, 3), keepdim=True)"),
                   (_VAR, "var = x.var(dim=(2, 3), keepdim=True, correction=0)"))),
    Variant("axes_batch_norm", SOL, mistake="statistics per channel over (N, H, W): BatchNorm",
            fails=("test_output", "test_batch_independence"), says="that is BatchNorm",
            edits=((_MEAN, "mean = x.mean(dim=(0, 2, 3), keepdim=True)"),
                   (_VAR, "var = x.var(dim=(0, 2, 3), keepdim=True, correction=0)"))),
    Variant("per_channel_affine", SOL, mistake="per-channel mult and add (lazily created) instead of one number",
            fails=("test_parameters", "test_output"), says="single learned number",
            edits=((_PARAMS, "self.mult = nn.Parameter(torch.ones(1, 1, 1, 1))\n"
                             "        self.add = nn.Parameter(torch.zeros(1, 1, 1, 1))"),)),
    Variant("affine_before_normalising", SOL, mistake="scales and shifts x, then normalises",
            fails=("test_output",), says="BEFORE normalising",
            edits=((_MEAN, "x = x * self.mult + self.add\n        " + _MEAN),
                   (_OUT, "return (x - mean) / torch.sqrt(var + self.eps)"))),
    Variant("mean_not_subtracted", SOL, mistake="divides x by the std without subtracting the mean",
            fails=("test_output",), says="did not subtract the mean",
            edits=((_OUT, "return x / torch.sqrt(var + self.eps) * self.mult + self.add"),)),
    Variant("keepdim_dropped", SOL, mistake="reduces without keepdim and broadcasts the (N,) stats along W",
            fails=("test_output",), says="keepdim=True",
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
            fails=("test_gradients",), says="gradient with respect to the input x",
            edits=((_MEAN, "mean = x.detach().mean(dim=(1, 2, 3), keepdim=True)"),
                   (_VAR, "var = x.detach().var(dim=(1, 2, 3), keepdim=True, correction=0)"))),
    Variant("delegates_to_layer_norm", SOL, mistake="calls F.layer_norm instead of doing the math",
            fails=("test_output", "test_batch_independence", "test_train_equals_eval", "test_gradients"),
            says="delegating to torch's own normalization",
            edits=((_MEAN + "\n        " + _VAR + "\n        " + _OUT,
                    "return F.layer_norm(x, x.shape[1:], eps=self.eps) * self.mult + self.add"),)),
    Variant("no_eps", SOL, mistake="leaves out eps (also NaN for a constant example)",
            fails=("test_output",), says="left out eps",
            edits=((_OUT, "return (x - mean) / torch.sqrt(var) * self.mult + self.add"),)),
    Variant("identity", SOL, mistake="returns its input unchanged (a layer that does nothing)",
            fails=("test_output", "test_batch_independence", "test_train_equals_eval", "test_gradients"),
            says="returns its input unchanged",
            edits=((_MEAN + "\n        " + _VAR + "\n        " + _OUT, "return x"),)),
    Variant("affine_only", SOL, mistake="scales and shifts x without normalising it",
            fails=("test_output", "test_batch_independence", "test_train_equals_eval", "test_gradients"),
            says="only scales and shifts its input",
            edits=((_MEAN + "\n        " + _VAR + "\n        " + _OUT, "return x * self.mult + self.add"),)),
    Variant("view_needs_contiguous", SOL, mistake="flattens each example with .view(), which refuses a channels_last "
            "or transposed input", fails=("test_output",), says="calls .view()",
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
