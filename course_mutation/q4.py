"""Q4 (conv block with nn.BatchNorm2d): known mistakes and correct alternatives of conv_layer."""

from course_mutation import Variant

NOTEBOOK = "Q4"

_S = "conv_layer"
_CONV = "nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn)"

VARIANTS = [
    Variant("bias_left_on", _S, "the conv keeps its bias in front of the BatchNorm",
            fails=("test_conv_layer_structure",), says="the Conv2d has a bias",
            edits=((_CONV, "nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride)"),)),
    Variant("norm_before_activation", _S, "BatchNorm placed before the activation",
            fails=("test_conv_layer_structure",), says="after the activation",
            code='''
def conv_layer(ni, nf, ks=3, stride=2, bn=True, **kwargs):
    layers = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn)]
    if bn:
        layers.append(nn.BatchNorm2d(nf))
    layers.append(GeneralRelu(**kwargs))
    return nn.Sequential(*layers)
'''),
    Variant("padding_fixed_at_1", _S, "padding=1 whatever the kernel size",
            fails=("test_conv_layer_structure",), says="padding",
            edits=(("padding=ks // 2", "padding=1"),)),
    Variant("stride_ignored", _S, "the stride argument is not passed to the conv (stride 2 hard-coded)",
            fails=("test_conv_layer_structure",), says="pass the stride argument",
            edits=(("stride=stride", "stride=2"),)),
    Variant("kwargs_dropped", _S, "GeneralRelu() built without the keyword arguments",
            fails=("test_conv_layer_structure",), says="pass **kwargs on to GeneralRelu",
            edits=(("GeneralRelu(**kwargs)]", "GeneralRelu()]"),)),
    Variant("bn_always_on", _S, "the BatchNorm is added even when bn=False",
            fails=("test_conv_layer_without_bn",), says="with bn=False the block must not contain a BatchNorm",
            edits=(("    if bn:\n        layers.append", "    if True:\n        layers.append"),)),
    Variant("batchnorm1d", _S, "nn.BatchNorm1d instead of nn.BatchNorm2d",
            fails=("test_conv_layer_structure", "test_conv_layer_trains"), says="nn.BatchNorm2d",
            edits=(("nn.BatchNorm2d(nf, eps=1e-5, momentum=0.1)", "nn.BatchNorm1d(nf)"),)),
    Variant("momentum_flipped", _S, "momentum=0.9 (the old-value weight of other libraries) instead of 0.1",
            fails=("test_conv_layer_structure",), says="momentum=0.9",
            edits=(("momentum=0.1", "momentum=0.9"),)),
    Variant("bias_always_off", _S, "bias=False even without a norm",
            fails=("test_conv_layer_without_bn",), says="the Conv2d has no bias",
            edits=(("bias=not bn", "bias=False"),)),
    Variant("norm_on_input_channels", _S, "nn.BatchNorm2d(ni) instead of nn.BatchNorm2d(nf)",
            fails=("test_conv_layer_structure", "test_conv_layer_trains"),
            edits=(("nn.BatchNorm2d(nf, eps=1e-5, momentum=0.1)", "nn.BatchNorm2d(ni)"),)),
    Variant("kernel_fixed_at_3", _S, "the conv always uses a 3x3 kernel",
            fails=("test_conv_layer_structure", "test_conv_layer_trains"), says="weight shape (8, 1, 3, 3)",
            edits=(("nn.Conv2d(ni, nf, ks,", "nn.Conv2d(ni, nf, 3,"),)),
    Variant("cached_blocks", _S, "blocks cached by their arguments, so equal calls share one block and its weights",
            fails=("test_conv_layer_structure",), says="share",
            code='''
_built = {}

def conv_layer(ni, nf, ks=3, stride=2, bn=True, **kwargs):
    """Built once per set of arguments."""
    key = (ni, nf, ks, stride, bn, tuple(sorted(kwargs.items())))
    if key not in _built:
        layers = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn), GeneralRelu(**kwargs)]
        if bn:
            layers.append(nn.BatchNorm2d(nf))
        _built[key] = nn.Sequential(*layers)
    return _built[key]
'''),
    Variant("default_kernel_5", _S, "the signature's default kernel size is 5 (the first block's), not 3",
            fails=("test_conv_layer_structure",), says="defaults",
            edits=(("ks: int = 3", "ks: int = 5"),)),
    # Correct alternatives, written differently.
    Variant("ordered_dict_names", _S, None, code='''
from collections import OrderedDict

def conv_layer(ni, nf, ks=3, stride=2, bn=True, **kwargs):
    """Named parts read better in print(model)."""
    parts = OrderedDict(conv=nn.Conv2d(ni, nf, kernel_size=ks, stride=stride, padding=ks // 2, bias=not bn),
                        act=GeneralRelu(**kwargs))
    if bn:
        parts["norm"] = nn.BatchNorm2d(nf)
    return nn.Sequential(parts)
'''),
    Variant("add_module_and_defaults", _S, None, code='''
def conv_layer(ni, nf, ks=3, stride=2, bn=True, **kwargs):
    block = nn.Sequential()
    block.add_module("conv", nn.Conv2d(ni, nf, (ks, ks), (stride, stride), (ks // 2, ks // 2), bias=False if bn else True))
    block.add_module("relu", GeneralRelu(leak=kwargs.get("leak"), sub=kwargs.get("sub"), maxv=kwargs.get("maxv")))
    if bn:
        block.add_module("bn", nn.BatchNorm2d(num_features=nf))
    return block
'''),
    Variant("nested_sequentials", _S, None, code='''
def conv_layer(ni, nf, ks=3, stride=2, bn=True, **kwargs):
    body = nn.Sequential(nn.Conv2d(ni, nf, ks, stride, ks // 2, bias=not bn), GeneralRelu(**kwargs))
    return nn.Sequential(body, nn.BatchNorm2d(nf)) if bn else body
'''),
]

# ---- fold_bn ---------------------------------------------------------------------------------------------------
_F = "fold_bn"
_OUT, _INPUTS, _ERRORS = "test_fold_bn_output", "test_fold_bn_leaves_inputs", "test_fold_bn_errors"
_SCALE = "scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)"
_CHECKS = '''
    if bn.num_features != conv.out_channels:
        raise ValueError(f"bn has {bn.num_features} features, conv has {conv.out_channels} output channels")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn has no running statistics")
'''
_PROBE = '''
import copy

def fold_bn(conv, bn):
    """Reads BN's per-channel affine map off two constant inputs (zeros and ones)."""''' + _CHECKS + '''
    c = conv.out_channels
    probe = torch.stack([torch.zeros(c), torch.ones(c)]).view(2, c, 1, 1).to(conv.weight.dtype)
    with torch.no_grad():
        MODE
        out = bn(probe)
        RESTORE
        shift, scale = out[0].flatten(), out[1].flatten() - out[0].flatten()
        fused = copy.deepcopy(conv)
        fused.weight = nn.Parameter(conv.weight * scale.view(-1, 1, 1, 1))
        bias = shift if conv.bias is None else conv.bias * scale + shift
        fused.bias = nn.Parameter(bias)
    return fused
'''

# fold_bn handing the work to torch's fuse_conv_bn_eval (its own checks first), reached as the variant names it.
_DELEGATING = '''
def fold_bn(conv, bn):
    if bn.num_features != conv.out_channels:
        raise ValueError(f"{bn.num_features} != {conv.out_channels}")
    if bn.running_mean is None:
        raise ValueError("no running statistics")
    was = (conv.training, bn.training)
    fused = fuse_conv_bn_eval(conv.eval(), bn.eval())
    conv.train(was[0]), bn.train(was[1])
    return fused
'''

VARIANTS += [
    Variant("fold_training_mode_statistics", _F, "bn called in training mode on a probe batch: the batch's statistics "
            "are folded (and the running ones updated)", fails=(_OUT, _INPUTS), says="training mode",
            code=_PROBE.replace("MODE", "pass").replace("RESTORE", "pass")),
    Variant("fold_unbiased_variance", _F, "running_var rescaled by n / (n - 1) (as if it held the biased variance)",
            fails=(_OUT,), names="fold.variance_rescaled",
            edits=((_SCALE, "scale = bn.weight / torch.sqrt(bn.running_var * 64 / 63 + bn.eps)"),)),
    Variant("fold_eps_outside_root", _F, "eps added outside the square root", fails=(_OUT,),
            names="fold.eps_outside_sqrt",
            edits=((_SCALE, "scale = bn.weight / (torch.sqrt(bn.running_var) + bn.eps)"),)),
    Variant("fold_conv_bias_forgotten", _F, "the conv's own bias left out of the folded bias", fails=(_OUT,),
            names="fold.conv_bias_forgotten",
            edits=(("        if conv.bias is not None:\n            bias = bias + conv.bias * scale\n", ""),)),
    Variant("fold_conv_bias_unscaled", _F, "the conv's bias added without the norm's scale", fails=(_OUT,),
            names="fold.conv_bias_unscaled", edits=(("bias = bias + conv.bias * scale", "bias = bias + conv.bias"),)),
    Variant("fold_wrong_axis", _F, "the weight scaled per input channel instead of per output channel",
            fails=(_OUT,), names="fold.wrong_axis",
            edits=(("scale.reshape(-1, 1, 1, 1)", "scale.reshape(1, -1, 1, 1)"),)),
    Variant("fold_bn_bias_forgotten", _F, "bn.bias (beta) left out of the folded bias", fails=(_OUT,),
            names="fold.bn_bias_forgotten",
            edits=(("bias = bn.bias - bn.running_mean * scale", "bias = - bn.running_mean * scale"),)),
    Variant("fold_mean_not_subtracted", _F, "the running mean not subtracted", fails=(_OUT,),
            names="fold.mean_not_subtracted",
            edits=(("bias = bn.bias - bn.running_mean * scale", "bias = bn.bias + 0 * scale"),)),
    Variant("fold_in_place", _F, "conv's own weights overwritten (no copy): the folded conv is conv itself",
            fails=(_INPUTS,), says="changed conv", edits=(("fused = copy.deepcopy(conv)", "fused = conv"),)),
    Variant("fold_mismatch_unchecked", _F, "no ValueError when bn.num_features != conv.out_channels",
            fails=(_ERRORS,), says="ValueError",
            edits=(("    if bn.num_features != conv.out_channels:\n        raise ValueError(f\"bn has {bn.num_features} "
                    "features, conv has {conv.out_channels} output channels\")\n", ""),)),
    Variant("fold_untracked_unchecked", _F, "no ValueError when bn keeps no running statistics",
            fails=(_ERRORS,), says="ValueError",
            edits=(("    if bn.running_mean is None or bn.running_var is None:\n        raise ValueError(\"bn has no "
                    "running statistics (track_running_stats=False): nothing to fold\")\n", ""),)),
    Variant("fold_delegates", _F, "torch's own fuse_conv_bn_eval called (the delegation rule)",
            fails=(_OUT, _INPUTS, _ERRORS), code="from torch.nn.utils.fusion import fuse_conv_bn_eval\n" + _DELEGATING),
    Variant("fold_delegates_name_built", _F, "torch's fuse_conv_bn_eval reached by a name built at run time (no "
            "forbidden name in the code: refused while the probe runs)", fails=(_OUT, _INPUTS), says="fuse_conv_bn",
            code=_DELEGATING.replace("fuse_conv_bn_eval(", 'getattr(torch.nn.utils, "fuse_conv_bn" + "_eval")(')),
    Variant("fold_delegates_weights_name_built", _F, "torch's fuse_conv_bn_weights reached by a name built at run "
            "time", fails=(_OUT, _INPUTS), says="fuse_conv_bn", code='''
import copy


def fold_bn(conv, bn):
    if bn.num_features != conv.out_channels:
        raise ValueError(f"{bn.num_features} != {conv.out_channels}")
    if bn.running_mean is None:
        raise ValueError("no running statistics")
    fused = copy.deepcopy(conv)
    fused.weight, fused.bias = vars(torch.nn.utils)["fuse_conv_bn" + "_weights"](
        conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    return fused
'''),
    # Correct alternatives, written differently.
    Variant("fold_probe_in_eval_mode", _F, None,
            code=_PROBE.replace("MODE", "was = bn.training\n        bn.eval()").replace("RESTORE", "bn.train(was)")),
    Variant("fold_new_conv_float64", _F, None, code='''
def fold_bn(conv, bn):
    """A new Conv2d built from conv's settings; the arithmetic in float64, with rsqrt."""
    if conv.out_channels != bn.num_features:
        raise ValueError(f"{conv.out_channels} output channels but {bn.num_features} BatchNorm features")
    if not bn.track_running_stats:
        raise ValueError("a BatchNorm without running statistics cannot be folded")
    fused = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                      dilation=conv.dilation, groups=conv.groups, bias=True, padding_mode=conv.padding_mode,
                      device=conv.weight.device, dtype=conv.weight.dtype)
    inv = torch.rsqrt(bn.running_var.double() + bn.eps) * bn.weight.double()
    b = conv.bias.double() if conv.bias is not None else torch.zeros_like(inv)
    with torch.no_grad():
        fused.weight.copy_(conv.weight.double() * inv[:, None, None, None])
        fused.bias.copy_((b - bn.running_mean.double()) * inv + bn.bias.double())
    return fused.train(conv.training)
'''),
    Variant("fold_einsum_state_dict", _F, None, code='''
import copy

def fold_bn(conv, bn):
    """Through the state dicts, with einsum."""
    state, stats = conv.state_dict(), bn.state_dict()
    if "running_var" not in stats:
        raise ValueError("bn has no running statistics")
    if stats["weight"].shape[0] != state["weight"].shape[0]:
        raise ValueError(f"BatchNorm2d({stats['weight'].shape[0]}) after a conv with {state['weight'].shape[0]} channels")
    s = stats["weight"] * (stats["running_var"] + bn.eps).pow(-0.5)
    fused = copy.deepcopy(conv)
    fused.bias = nn.Parameter(torch.zeros_like(s))
    with torch.no_grad():
        fused.weight.copy_(torch.einsum("oihw,o->oihw", state["weight"], s))
        fused.bias.copy_(s * (state.get("bias", torch.zeros_like(s)) - stats["running_mean"]) + stats["bias"])
    return fused
'''),
]
