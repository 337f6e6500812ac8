"""Q8 (GroupNorm): known-wrong implementations and correct alternatives."""

from course_mutation import Variant

NOTEBOOK = "Q8"

_S = "groupnorm"
_OUTPUTS = "test_output_matches_nn_groupnorm"
_RESHAPE = "groups = x.reshape(x.shape[0], self.num_groups, -1)"
_VAR = "var = groups.var(dim=2, keepdim=True, correction=0)"
_NORMALISE = "out = ((groups - mean) / torch.sqrt(var + self.eps)).reshape(x.shape)"
_CHECK = "if num_groups <= 0 or num_channels % num_groups != 0:"

# The constructor of the reference, reused by variants that rewrite only forward.
_INIT = '''
class GroupNorm(nn.Module):
    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels={num_channels} is not divisible by num_groups={num_groups}")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
'''

VARIANTS = [
    Variant("interleaved_groups", _S, "channel c in group c % G: x.view(N, C // G, G, ...)",
            fails=(_OUTPUTS, "test_contiguous_groups"), names="gn.interleaved_groups",
            code=_INIT + '''
    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels, got {tuple(x.shape)}")
        n, c = x.shape[:2]
        grouped = x.reshape(n, c // self.num_groups, self.num_groups, -1)
        mean = grouped.mean(dim=(1, 3), keepdim=True)
        var = grouped.var(dim=(1, 3), keepdim=True, unbiased=False)
        out = ((grouped - mean) / (var + self.eps).sqrt()).reshape(x.shape)
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return out * self.weight.view(shape) + self.bias.view(shape) if self.affine else out
'''),
    Variant("per_group_affine", _S, "weight and bias with one value per group instead of per channel",
            fails=("test_parameters", _OUTPUTS, "test_state_dict"), says="per channel",
            code='''
class GroupNorm(nn.Module):
    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if num_channels % num_groups:
            raise ValueError(f"num_channels={num_channels} is not divisible by num_groups={num_groups}")
        self.num_groups, self.num_channels, self.eps, self.affine = num_groups, num_channels, eps, affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_groups))
            self.bias = nn.Parameter(torch.zeros(num_groups))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels, got {tuple(x.shape)}")
        groups = x.reshape(x.shape[0], self.num_groups, -1)
        mean = groups.mean(2, keepdim=True)
        var = groups.var(2, keepdim=True, correction=0)
        out = (groups - mean) / torch.sqrt(var + self.eps)
        if self.affine:
            out = out * self.weight.view(1, -1, 1) + self.bias.view(1, -1, 1)
        return out.reshape(x.shape)
'''),
    Variant("unbiased_variance", _S, "the unbiased variance (divide by n-1)",
            fails=(_OUTPUTS, "test_equivalences"), names="gn.unbiased_variance",
            edits=((_VAR, "var = groups.var(dim=2, keepdim=True)"),)),
    Variant("eps_outside_sqrt", _S, "eps added to the standard deviation, outside the square root",
            fails=(_OUTPUTS, "test_equivalences"), names="norm.eps_outside_sqrt",
            edits=((_NORMALISE, "out = ((groups - mean) / (torch.sqrt(var) + self.eps)).reshape(x.shape)"),)),
    Variant("eps_left_out", _S, "no eps at all",
            fails=(_OUTPUTS,), names="norm.no_eps",
            edits=((_NORMALISE, "out = ((groups - mean) / torch.sqrt(var)).reshape(x.shape)"),)),
    Variant("statistics_over_batch", _S, "one mean and variance per group for the whole batch",
            fails=(_OUTPUTS, "test_equivalences", "test_batch_independence"), names="gn.statistics_over_batch",
            edits=(("mean = groups.mean(dim=2, keepdim=True)", "mean = groups.mean(dim=(0, 2), keepdim=True)"),
                   (_VAR, "var = groups.var(dim=(0, 2), keepdim=True, correction=0)"))),
    Variant("reshape_mixes_examples", _S, "x.view(G, -1): a group's statistics mix values of different examples",
            fails=(_OUTPUTS, "test_batch_independence"), names="gn.reshape_mixes_examples",
            edits=((_RESHAPE, "groups = x.reshape(self.num_groups, -1)"),
                   ("mean = groups.mean(dim=2, keepdim=True)", "mean = groups.mean(dim=-1, keepdim=True)"),
                   (_VAR, "var = groups.var(dim=-1, keepdim=True, correction=0)"))),
    Variant("no_divisibility_check", _S, "no check that num_channels divides into num_groups",
            fails=("test_clear_errors",), says="expected ValueError",
            edits=((_CHECK, "if False:"),)),
    Variant("assert_instead_of_valueerror", _S, "an assert (AssertionError) instead of a ValueError",
            fails=("test_clear_errors",), says="expected ValueError",
            edits=((_CHECK, "assert num_channels % num_groups == 0, 'channels must divide into groups'\n        if False:"),)),
    Variant("error_message_without_numbers", _S, "a ValueError whose message does not name the two numbers",
            fails=("test_clear_errors",), says="should name 6 and 4",
            edits=(('raise ValueError(f"num_channels={num_channels} is not divisible by num_groups={num_groups}")',
                    'raise ValueError("the channels must divide into the groups")'),)),
    Variant("no_channel_check", _S, "an input with the wrong number of channels is normalised anyway",
            fails=("test_clear_errors",), says="on an input with 6 channels",
            edits=(("if x.dim() < 2 or x.shape[1] != self.num_channels:", "if x.dim() < 2:"),)),
    Variant("affine_ignored", _S, "weight and bias created and applied even when affine=False",
            fails=("test_affine_false", "test_state_dict"), says="must be None",
            edits=(("        if affine:\n            self.weight", "        if True:\n            self.weight"),
                   ("        if self.affine:\n            per_channel", "        if True:\n            per_channel"))),
    Variant("scale_and_shift_swapped", _S, "out * bias + weight",
            fails=(_OUTPUTS,), names="gn.scale_shift_swapped",
            edits=(("out * self.weight.reshape(per_channel) + self.bias.reshape(per_channel)",
                    "out * self.bias.reshape(per_channel) + self.weight.reshape(per_channel)"),)),
    Variant("mean_detached", _S, "the group statistics computed without autograd history",
            fails=("test_gradients",), names="norm.detached", says="gradient with respect to the input x",
            edits=(("mean = groups.mean(dim=2, keepdim=True)", "mean = groups.mean(dim=2, keepdim=True).detach()"),
                   (_VAR, "var = groups.var(dim=2, keepdim=True, correction=0).detach()"))),
    Variant("delegates_to_f_group_norm", _S, "calls F.group_norm instead of doing the math",
            fails=(_OUTPUTS, "test_equivalences", "test_contiguous_groups", "test_affine_false", "test_gradients",
                   "test_training_curve"), says="delegating to torch's own normalization",
            code=_INIT + '''
    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels, got {tuple(x.shape)}")
        return F.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)
'''),
    Variant("subclasses_nn_groupnorm", _S, "inherits nn.GroupNorm's forward",
            fails=(_OUTPUTS, "test_training_curve"), says="delegating to torch's own normalization",
            code='''
class GroupNorm(nn.GroupNorm):
    pass
'''),
    Variant("identity", _S, "returns its input unchanged (a layer that does nothing)",
            fails=(_OUTPUTS, "test_equivalences", "test_contiguous_groups", "test_batch_independence", "test_gradients"),
            names="gn.input_returned_or_scaled", says="returns its input unchanged",
            edits=((_RESHAPE, "return x\n        " + _RESHAPE),)),
    Variant("affine_only", _S, "scales and shifts x per channel without normalising it",
            fails=(_OUTPUTS, "test_equivalences", "test_contiguous_groups", "test_batch_independence", "test_gradients"),
            names="gn.input_returned_or_scaled", says="only scales and shifts its input",
            edits=((_RESHAPE, "per_channel = (1, -1) + (1,) * (x.dim() - 2)\n"
                              "        return x * self.weight.reshape(per_channel) + self.bias.reshape(per_channel)\n"
                              "        " + _RESHAPE),)),
    Variant("view_needs_contiguous", _S, "groups the channels with .view(), which refuses a channels_last or transposed "
            "input", fails=(_OUTPUTS,), names="layout.view",
            edits=((_RESHAPE, "groups = x.view(x.shape[0], self.num_groups, -1)"),)),
    Variant("parameters_shared_between_layers", _S,
            "wraps slices of tensors made once for the class, so every GroupNorm shares its weight and bias",
            fails=("test_parameters",), says="every layer needs parameters of its own",
            edits=(("            self.weight = nn.Parameter(torch.ones(num_channels))\n"
                    "            self.bias = nn.Parameter(torch.zeros(num_channels))",
                    "            self.weight = nn.Parameter(GroupNorm.ONES[:num_channels])\n"
                    "            self.bias = nn.Parameter(GroupNorm.ZEROS[:num_channels])"),
                   ("    def forward(", "    ONES, ZEROS = torch.ones(4096), torch.zeros(4096)\n\n    def forward("))),
    Variant("one_scale_per_group", _S, "weight and bias of shape (C,), but only the first num_groups used, one per group "
            "(for nn.GroupNorm's state_dict)", fails=(_OUTPUTS, "test_equivalences"), says="same scale",
            edits=(("out * self.weight.reshape(per_channel) + self.bias.reshape(per_channel)",
                    "out * self.weight[:self.num_groups].repeat_interleave(self.num_channels // self.num_groups)"
                    ".reshape(per_channel) + self.bias[:self.num_groups].repeat_interleave("
                    "self.num_channels // self.num_groups).reshape(per_channel)"),)),
    # Correct alternatives, written differently.
    Variant("contiguous_then_view", _S, None, code=_INIT + '''
    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels, got {tuple(x.shape)}")
        rows = x.contiguous().view(x.shape[0], self.num_groups, -1)
        var, mean = torch.var_mean(rows, dim=2, keepdim=True, correction=0)
        out = ((rows - mean) * torch.rsqrt(var + self.eps)).view(x.shape)
        if self.affine:
            out = out * self.weight.view(1, -1, *[1] * (x.dim() - 2)) + self.bias.view(1, -1, *[1] * (x.dim() - 2))
        return out
'''),
    Variant("var_mean_flatten", _S, None, code=_INIT + '''
    def forward(self, x: Tensor) -> Tensor:
        if x.ndim < 2 or x.size(1) != self.num_channels:
            raise ValueError(f"GroupNorm expects {self.num_channels} channels, got input of shape {tuple(x.shape)}")
        n = x.size(0)
        flat = x.view(n, self.num_groups, -1) if x.is_contiguous() else x.reshape(n, self.num_groups, -1)
        var, mean = torch.var_mean(flat, dim=-1, keepdim=True, unbiased=False)
        xhat = ((flat - mean) * torch.rsqrt(var + self.eps)).view_as(x)
        if not self.affine:
            return xhat
        shape = [1, -1] + [1] * (x.ndim - 2)
        return torch.addcmul(self.bias.view(shape), xhat, self.weight.view(shape))
'''),
    Variant("chunks_and_cat", _S, None, code='''
class GroupNorm(nn.Module):
    """Normalises each chunk of channels separately and glues the chunks back together."""

    def __init__(self, num_groups, num_channels, eps=1e-5, affine=True):
        super().__init__()
        if num_groups < 1 or num_channels % num_groups != 0:
            raise ValueError(f"cannot split {num_channels} channels into {num_groups} equal groups")
        self.num_groups = num_groups
        self.num_channels = num_channels
        self.eps = eps
        self.affine = affine
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x):
        if len(x.shape) < 2:
            raise ValueError("need at least (N, C)")
        if x.shape[1] != self.num_channels:
            raise ValueError(f"expected {self.num_channels} channels, got {x.shape[1]}")
        pieces = []
        for chunk in torch.split(x, self.num_channels // self.num_groups, dim=1):
            dims = tuple(range(1, x.dim()))
            m = chunk.mean(dim=dims, keepdim=True)
            v = ((chunk - m) ** 2).mean(dim=dims, keepdim=True)
            pieces.append((chunk - m) / (v + self.eps) ** 0.5)
        out = torch.cat(pieces, dim=1)
        if self.affine:
            w = self.weight[(None, slice(None)) + (None,) * (x.dim() - 2)]
            b = self.bias[(None, slice(None)) + (None,) * (x.dim() - 2)]
            out = w * out + b
        return out
'''),
    Variant("manual_sums", _S, None, code=_INIT + '''
    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"GroupNorm({self.num_groups}, {self.num_channels}) got shape {tuple(x.shape)}")
        n = x.shape[0]
        g = x.reshape(n, self.num_groups, self.num_channels // self.num_groups, -1)
        count = g.shape[2] * g.shape[3]
        total = g.sum(dim=3, keepdim=True).sum(dim=2, keepdim=True)
        mean = total / count
        centred = g - mean
        var = (centred * centred).sum(dim=(2, 3), keepdim=True) / count
        out = (centred / (var + self.eps).sqrt()).reshape(x.shape)
        if self.affine:
            extra = [1] * (x.dim() - 2)
            out = out * self.weight.view(1, self.num_channels, *extra) + self.bias.view(1, self.num_channels, *extra)
        return out
'''),
    Variant("einsum_unfold", _S, None, code=_INIT + '''
    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"wrong input shape {tuple(x.shape)} for {self.num_channels} channels")
        n, c = x.shape[:2]
        # unflatten the channel dim into (groups, channels per group), then flatten the rest
        g = x.unflatten(1, (self.num_groups, c // self.num_groups)).flatten(2)
        mean = g.mean(-1, keepdim=True)
        var = (g - mean).pow(2).mean(-1, keepdim=True)
        out = ((g - mean) / torch.sqrt(var + self.eps)).reshape(x.shape)
        if self.affine:
            out = torch.einsum("nc...,c->nc...", out, self.weight) + torch.einsum("nc...,c->nc...", torch.ones_like(out), self.bias)
        return out
'''),
    Variant("second_moment_formula", _S, None, code=_INIT + '''
    def forward(self, x):
        if x.dim() < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"expected (N, {self.num_channels}, ...), got {tuple(x.shape)}")
        g = x.reshape(len(x), self.num_groups, -1)
        mean = g.mean(-1, keepdim=True)
        var = (g * g).mean(-1, keepdim=True) - mean * mean  # E[x^2] - E[x]^2: the biased variance
        out = ((g - mean) / (var + self.eps).sqrt()).view(x.shape)
        if self.affine:
            shape = [1] * x.dim()
            shape[1] = -1
            out = out * self.weight.reshape(shape) + self.bias.reshape(shape)
        return out
'''),
]
