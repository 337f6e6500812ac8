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
