# %% [markdown]
# # Q4 — Use PyTorch's `nn.BatchNorm2d`
#
# In Q3 you wrote BatchNorm yourself. PyTorch's `nn.BatchNorm2d` does the same computation in one
# fused kernel: per channel, it normalises with the batch's mean and **biased** variance in training,
# keeps running averages of the mean and of the **unbiased** variance (new batch weight `momentum=0.1`),
# and uses those running averages in eval mode (Ioffe & Szegedy, 2015).
#
# Here you write the lesson's convolutional block with it and train the lesson's CNN for 3 epochs.

# %% [setup]
%matplotlib inline
from functools import partial

import matplotlib.pyplot as plt
import torch
from torch import nn

from course_lib import (AvgStatsCallback, BatchTransformXCallback, DeviceCallback, GeneralRelu, ProgressCallback,
                        Recorder, accuracy, get_learn_run, get_mnist_databunch, mnist_view, set_seed)

data = get_mnist_databunch(bs=512)
nfs = [8, 16, 32, 64, 64]
# Statistics with accuracy, CUDA when present (CPU otherwise), and flat vectors reshaped to (1, 28, 28) images.
cbfs = [partial(AvgStatsCallback, accuracy), DeviceCallback, partial(BatchTransformXCallback, mnist_view)]

# %% [markdown]
# ## Part A (4 points) — the block
#
# Write `conv_layer(ni, nf, ks=3, stride=2, bn=True, **kwargs)`. It returns an `nn.Sequential` of
#
# 1. `nn.Conv2d(ni, nf, ks, padding=ks//2, stride=stride, bias=not bn)` — the lesson drops the conv's
#    bias when a norm follows. Where BatchNorm comes **right after** the conv, as in the paper, it
#    subtracts each channel's mean, so a per-channel bias is cancelled exactly and its role is taken by
#    BatchNorm's shift `beta` (Ioffe & Szegedy 2015, §3.2). In the lesson's block the norm comes after
#    `GeneralRelu`: the bias moves where each channel crosses the activation's kink, and nothing after
#    the activation can undo that, so dropping it changes the block's output (by up to 0.7 on a random
#    batch with PyTorch's default bias, against 5e-7 with BatchNorm right after the conv). Dropping it
#    there is the lesson's choice, not a free simplification;
# 2. `GeneralRelu(**kwargs)` — every extra keyword (`leak`, `sub`, `maxv`) goes to the activation;
# 3. `nn.BatchNorm2d(nf, eps=1e-5, momentum=0.1)` **after** the activation, as in the lesson — only when `bn` is true.
#
# The CNN builder calls `conv_layer(ni, nf, ks, **kwargs)`, so every block has stride 2
# (28 -> 14 -> 7 -> 4 -> 2 -> 1).

# %% [solution id=conv_layer]
def conv_layer(ni: int, nf: int, ks: int = 3, stride: int = 2, bn: bool = True, **kwargs) -> nn.Sequential:
    """Conv2d (bias only without a norm) -> GeneralRelu(**kwargs) -> BatchNorm2d(nf) when bn."""
    ### BEGIN SOLUTION
    layers = [nn.Conv2d(ni, nf, ks, padding=ks // 2, stride=stride, bias=not bn), GeneralRelu(**kwargs)]
    if bn:
        layers.append(nn.BatchNorm2d(nf, eps=1e-5, momentum=0.1))
    return nn.Sequential(*layers)
    ### END SOLUTION

# %% [demo]
# Check that it does: the block, and the map sizes through the lesson's five blocks.
print(conv_layer(1, 8, 5, leak=0.1, sub=0.4, maxv=6.))
x = torch.randn(2, 1, 28, 28)
for ni, nf, ks in [(1, 8, 5), (8, 16, 3), (16, 32, 3), (32, 64, 3), (64, 64, 3)]:
    x = conv_layer(ni, nf, ks)(x)
    print(tuple(x.shape))

# %% [test id=test_conv_layer_structure points=2]
"""conv_layer(bn=True): Conv2d without bias -> GeneralRelu(**kwargs) -> BatchNorm2d(nf), with the right settings."""
torch.manual_seed(0)  # the same visible inputs on every run
from course_lib.checks import student_checks

with student_checks():
    block = conv_layer(3, 8, 5, leak=0.1, sub=0.4, maxv=6.)
    assert isinstance(block, nn.Module), "conv_layer must return an nn.Module (an nn.Sequential)"
    assert any(isinstance(m, nn.BatchNorm2d) for m in block.modules()), "with bn=True the block needs an nn.BatchNorm2d"
    layers = [m for m in block.modules() if not list(m.children())]  # in order, however the block nests them
    kinds = [type(m).__name__ for m in layers]
    assert kinds == ["Conv2d", "GeneralRelu", "BatchNorm2d"], (
        f"the block should be Conv2d -> GeneralRelu -> BatchNorm2d, in that order (the norm after the activation); got {kinds}")
    conv, relu, norm = layers
    assert conv.bias is None, "with bn=True the lesson's conv has no bias: nn.Conv2d(..., bias=not bn)"
    assert (relu.leak, relu.sub, relu.maxv) == (0.1, 0.4, 6.0), (
        f"GeneralRelu should get conv_layer's keyword arguments (leak=0.1, sub=0.4, maxv=6.); got leak={relu.leak}, "
        f"sub={relu.sub}, maxv={relu.maxv}")
    assert norm.momentum == 0.1 and norm.eps == 1e-5, (
        f"BatchNorm2d(nf) with PyTorch's momentum=0.1 (the weight of the NEW batch) and eps=1e-5; got momentum="
        f"{norm.momentum}, eps={norm.eps}")
    flat = tuple(conv_layer(3, 8, 3, stride=1)(torch.randn(2, 3, 12, 12)).shape)
    assert flat == (2, 8, 12, 12), f"conv_layer(3, 8, 3, stride=1) should keep a 12x12 map (pass stride to the conv); got {flat}"
    shape = tuple(block(torch.randn(2, 3, 12, 12)).shape)
    assert shape == (2, 8, 6, 6), (
        f"a (2, 3, 12, 12) input should give (2, 8, 6, 6) (padding ks//2 keeps the size, stride 2 halves it), got {shape}")
    kernel = next(m for m in conv_layer(3, 8).modules() if isinstance(m, nn.Conv2d)).kernel_size
    assert kernel == (3, 3), f"conv_layer(3, 8) should use the default ks=3, got a {kernel} kernel"
    again = conv_layer(3, 8, 5, leak=0.1, sub=0.4, maxv=6.)
    assert not {id(p) for p in block.parameters()} & {id(p) for p in again.parameters()}, (
        "two calls of conv_layer with the same arguments returned blocks that share weights: build new layers every call")
### BEGIN HIDDEN TESTS
from course_recorder import q4

q4.structure(conv_layer)
### END HIDDEN TESTS

# %% [test id=test_conv_layer_without_bn points=1]
"""conv_layer(bn=False): Conv2d with bias -> GeneralRelu(**kwargs), no norm."""
torch.manual_seed(0)  # the same visible inputs on every run
from course_lib.checks import student_checks

with student_checks():
    block = conv_layer(3, 8, 3, bn=False)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in block.modules()), (
        "with bn=False the block must not contain a BatchNorm")
    conv = next(m for m in block.modules() if isinstance(m, nn.Conv2d))
    assert conv.bias is not None, "without a norm after it the conv keeps its bias (bias=True when bn=False)"
    shape = tuple(block(torch.randn(2, 3, 12, 12)).shape)
    assert shape == (2, 8, 6, 6), (
        f"a (2, 3, 12, 12) input should give (2, 8, 6, 6) (padding ks//2 keeps the size, stride 2 halves it), got {shape}")
### BEGIN HIDDEN TESTS
from course_recorder import q4

q4.without_bn(conv_layer)
### END HIDDEN TESTS

# %% [test id=test_conv_layer_trains points=1]
"""The lesson's CNN built from conv_layer trains like the reference block (same weights, same batches)."""
torch.manual_seed(0)  # the same visible inputs on every run
from types import SimpleNamespace

from course_lib import get_cnn_model
from course_lib.checks import student_checks

with student_checks():
    model = get_cnn_model(SimpleNamespace(c=10), nfs, conv_layer, leak=0.1, sub=0.4, maxv=6.)
    assert model(torch.randn(3, 1, 28, 28)).shape == (3, 10), "the CNN should map (3, 1, 28, 28) to (3, 10)"
### BEGIN HIDDEN TESTS
from course_recorder import q4

q4.trains(conv_layer)
### END HIDDEN TESTS

# %% [markdown]
# ## The custom BatchNorm math and `nn.BatchNorm2d` agree
#
# The formula from Q3, written out in a few lines, against PyTorch's layer in training mode. Note the
# two variances: the output uses the biased one (divide by n), the running variance stores the
# unbiased one (divide by n - 1).

# %% [demo]
torch.manual_seed(0)
x = torch.randn(16, 4, 5, 5, dtype=torch.float64) * 3 + 1
bn = nn.BatchNorm2d(4).double()
with torch.no_grad():
    bn.weight.uniform_(0.5, 2.0)
    bn.bias.normal_()
mean = x.mean(dim=(0, 2, 3), keepdim=True)
var = x.var(dim=(0, 2, 3), keepdim=True, correction=0)
ours = (x - mean) / (var + bn.eps).sqrt() * bn.weight[:, None, None] + bn.bias[:, None, None]
theirs = bn(x)  # training mode: uses (and updates) the batch statistics
print("largest difference of the outputs:", (ours - theirs).abs().max().item())
n = x.numel() / x.shape[1]
expected_running_var = 0.9 * 1 + 0.1 * var.flatten() * n / (n - 1)
print("running_var matches the unbiased update:", torch.allclose(bn.running_var, expected_running_var))

# %% [markdown]
# ## Train the lesson's CNN for 3 epochs (learning rate 1.0)
#
# The lesson reached about 98 % validation accuracy with `nn.BatchNorm2d` in 3 epochs (on a GPU).
# Full MNIST takes a few seconds per epoch on a laptop CPU.

# %% [experiment]
set_seed(42)
learn, run = get_learn_run(nfs, data, 1.0, conv_layer, cbs=cbfs + [Recorder, ProgressCallback],
                           leak=0.1, sub=0.4, maxv=6.)
run.fit(3, learn)
print(f"validation accuracy after 3 epochs: {run.avg_stats.history[-1]['valid_accuracy']:.3f}")
run.recorder.plot_loss()
plt.show()
