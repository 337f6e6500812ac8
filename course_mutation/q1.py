"""Q1 (what BatchNorm learns and measures): known mistakes and correct alternatives of channel_stats and
output_in_batch."""

from course_mutation import Variant

NOTEBOOK = "Q1"

_S, _O = "channel_stats", "output_in_batch"
_VAR = "var = ((x - mean[None, :, None, None]) ** 2).mean(dim=(0, 2, 3))"
_CHECK = '''    if x.dim() != 4:
        raise ValueError(f"channel_stats expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
'''

VARIANTS = [
    Variant("unbiased_variance", _S, "x.var() with its default (unbiased) correction",
            fails=("test_channel_stats_values",), names="q1.unbiased_variance",
            edits=((_VAR, "var = x.var(dim=(0, 2, 3))"),)),
    Variant("std_not_var", _S, "the standard deviation instead of the variance",
            fails=("test_channel_stats_values",), names="q1.standard_deviation",
            edits=((_VAR, "var = x.std(dim=(0, 2, 3), correction=0)"),)),
    Variant("uncentred", _S, "mean of squares without subtracting the mean",
            fails=("test_channel_stats_values",), names="q1.mean_not_subtracted",
            edits=((_VAR, "var = (x ** 2).mean(dim=(0, 2, 3))"),)),
    Variant("per_example_variance_averaged", _S, "each example's own variance, averaged over the batch",
            fails=("test_channel_stats_values",), names="q1.within_example_variance",
            edits=((_VAR, "var = x.var(dim=(2, 3), correction=0).mean(0)"),)),
    Variant("keepdim", _S, "keepdim=True: shape (1, C, 1, 1)",
            fails=("test_channel_stats_values", "test_channel_stats_contract"), says="keepdim",
            code='''
def channel_stats(x):
    if x.dim() != 4:
        raise ValueError("expected (N, C, H, W)")
    return x.mean((0, 2, 3), keepdim=True), x.var((0, 2, 3), keepdim=True, correction=0)
'''),
    Variant("spatial_axes_only", _S, "statistics over H and W only (per example and channel)",
            fails=("test_channel_stats_values", "test_channel_stats_contract"), says="the statistics of a channel also run over the batch",
            code='''
def channel_stats(x):
    if x.dim() != 4:
        raise ValueError("expected (N, C, H, W)")
    return x.mean((2, 3)), x.var((2, 3), correction=0)
'''),
    Variant("per_example_axes", _S, "statistics per example (over C, H, W), LayerNorm's grouping",
            fails=("test_channel_stats_values",), says="per-example statistics",
            code='''
def channel_stats(x):
    if x.dim() != 4:
        raise ValueError("expected (N, C, H, W)")
    return x.mean((1, 2, 3)), x.var((1, 2, 3), correction=0)
'''),
    Variant("no_value_error", _S, "no check of the input's dimensions",
            fails=("test_channel_stats_contract",), says="ValueError",
            edits=((_CHECK, ""),)),
    Variant("float64_always", _S, "the result is cast to float64 whatever the input",
            fails=("test_channel_stats_contract",), says="dtype",
            edits=(("    return mean, var", "    return mean.double(), var.double()"),)),
    Variant("view_needs_contiguous", _S, "flattens the positions with .view, which fails on a non-contiguous input",
            fails=("test_channel_stats_contract",), names="layout.view",
            code='''
def channel_stats(x):
    if x.dim() != 4:
        raise ValueError(f"channel_stats expects an (N, C, H, W) tensor, got shape {tuple(x.shape)}")
    flat = x.view(x.shape[0], x.shape[1], -1)  # (N, C, H*W)
    return flat.mean((0, 2)), flat.var((0, 2), correction=0)
'''),
    Variant("flatten_positions", _S, None, code='''
def channel_stats(x):
    """Positions flattened with .flatten, which copies when it has to."""
    if x.dim() != 4:
        raise ValueError(f"expected 4 dims (N, C, H, W), got {x.dim()}")
    flat = x.flatten(2)
    mean = flat.mean((0, 2))
    return mean, ((flat - mean[:, None]) ** 2).mean((0, 2))
'''),
    Variant("flatten_channels", _S, None, code='''
def channel_stats(x):
    """Move channels first and flatten the rest: one row per channel."""
    if x.ndim != 4:
        raise ValueError(f"need a 4-D (N, C, H, W) input, not {x.ndim}-D")
    rows = x.transpose(0, 1).reshape(x.shape[1], -1)
    return rows.mean(1), rows.var(1, unbiased=False)
'''),
    Variant("moments", _S, None, code='''
def channel_stats(x):
    if len(x.shape) != 4:
        raise ValueError("x must have shape (N, C, H, W)")
    n = x.shape[0] * x.shape[2] * x.shape[3]
    s1 = x.sum(dim=(0, 2, 3))
    s2 = (x * x).sum(dim=(0, 2, 3))
    mean = s1 / n
    return mean, s2 / n - mean ** 2
'''),
    Variant("torch_var_mean", _S, None, code='''
def channel_stats(x):
    if x.dim() != 4:
        raise ValueError("channel_stats needs an (N, C, H, W) tensor")
    var, mean = torch.var_mean(x, dim=[0, 2, 3], correction=0)
    return mean, var
'''),
    # output_in_batch
    Variant("flag_ignored_always_train", _O, "the train argument is ignored (always training mode)",
            fails=("test_output_in_batch_eval",), names="q1.batch_statistics_in_eval", says="batch mates",
            edits=(("layer.train(train)", "layer.train(True)"),)),
    Variant("flag_ignored_always_eval", _O, "the train argument is ignored (always eval mode)",
            fails=("test_output_in_batch_train",), names="q1.running_statistics_in_train",
            edits=(("layer.train(train)", "layer.eval()"),)),
    Variant("flag_ignored_layer_mode", _O, "uses whatever mode the layer is in",
            fails=("test_output_in_batch_eval",), names="q1.batch_statistics_in_eval",
            edits=(("    layer.train(train)\n", ""),)),
    Variant("updates_running_stats", _O, "the forward runs on the layer itself, updating its running statistics",
            fails=("test_output_in_batch_leaves_layer",), says="changed bn.running_mean",
            code='''
def output_in_batch(bn, example, mates, train):
    mode = bn.training
    bn.train(train)
    with torch.no_grad():
        out = bn(torch.cat([example[None], mates]))[0]
    bn.train(mode)
    return out
'''),
    Variant("mode_not_restored", _O, "the layer is left in the mode asked for",
            fails=("test_output_in_batch_leaves_layer",), says="mode",
            code='''
def output_in_batch(bn, example, mates, train):
    saved = [b.clone() for b in bn.buffers()]
    bn.train(train)
    with torch.no_grad():
        out = bn(torch.cat([example[None], mates]))[0]
        for b, s in zip(bn.buffers(), saved):
            b.copy_(s)
    return out
'''),
    Variant("example_alone", _O, "the example is normalised on its own (a batch of one)",
            fails=("test_output_in_batch_train",), names="q1.example_alone",
            edits=(("layer(torch.cat([example[None], mates]))[0]", "layer(example[None])[0]"),)),
    Variant("mates_only_statistics", _O, "the batch statistics are computed from the mates only",
            fails=("test_output_in_batch_train",), names="q1.example_left_out",
            code='''
def output_in_batch(bn, example, mates, train):
    if not train:
        return F.batch_norm(example[None], bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)[0].detach()
    mean = mates.mean((0, 2, 3))[:, None, None]
    var = mates.var((0, 2, 3), correction=0)[:, None, None]
    return ((example - mean) / (var + bn.eps).sqrt() * bn.weight[:, None, None] + bn.bias[:, None, None]).detach()
'''),
    Variant("returns_whole_batch", _O, "the whole batch's output is returned",
            fails=("test_output_in_batch_train",), says="returned the whole batch's output",
            edits=(("layer(torch.cat([example[None], mates]))[0]", "layer(torch.cat([example[None], mates]))"),)),
    Variant("example_last_index_first", _O, "the example is put last but the first output is returned",
            fails=("test_output_in_batch_train",), names="q1.first_mate_output",
            edits=(("layer(torch.cat([example[None], mates]))[0]", "layer(torch.cat([mates, example[None]]))[0]"),)),
    Variant("no_mates_unnormalised", _O, "without batch mates the example is returned as it is",
            fails=("test_output_in_batch_train", "test_output_in_batch_eval"), names="q1.returned_example",
            edits=(("    layer = copy.deepcopy(bn)", "    if len(mates) == 0:\n        return example.clone()\n    layer = copy.deepcopy(bn)"),)),
    Variant("identity", _O, "returns the example unchanged: nothing normalised, the layer left alone",
            fails=("test_output_in_batch_train", "test_output_in_batch_eval", "test_output_in_batch_leaves_layer"),
            names="q1.returned_example",
            code="def output_in_batch(bn, example, mates, train):\n    return example.clone()\n"),
    Variant("affine_only", _O, "scales and shifts the example by gamma and beta without normalising it",
            fails=("test_output_in_batch_train", "test_output_in_batch_eval", "test_output_in_batch_leaves_layer"),
            names="q1.returned_example_scaled",
            code='''
def output_in_batch(bn, example, mates, train):
    return (example * bn.weight[:, None, None] + bn.bias[:, None, None]).detach()
'''),
    Variant("save_and_restore", _O, None, code='''
def output_in_batch(bn, example, mates, train):
    """Save the state, run, restore: no copy of the parameters needed."""
    state = {k: v.clone() for k, v in bn.state_dict().items()}
    was_training = bn.training
    bn.train(train)
    try:
        with torch.no_grad():
            out = bn(torch.cat((example.unsqueeze(0), mates), dim=0))
    finally:
        bn.load_state_dict(state)
        bn.train(was_training)
    return out[0]
'''),
    Variant("functional", _O, None, code='''
def output_in_batch(bn, example, mates, train):
    batch = torch.cat([example[None], mates])
    if train:
        # running stats None: batch statistics, nothing stored
        out = F.batch_norm(batch, None, None, bn.weight, bn.bias, training=True, eps=bn.eps)
    else:
        out = F.batch_norm(batch, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
    return out[0].detach()
'''),
    Variant("by_hand", _O, None, code='''
def output_in_batch(bn, example, mates, train):
    batch = torch.cat([example[None], mates])
    if train:
        mean = batch.mean((0, 2, 3))
        var = batch.var((0, 2, 3), correction=0)
    else:
        mean, var = bn.running_mean, bn.running_var
    shape = (-1, 1, 1)
    x = (example - mean.view(shape)) / torch.sqrt(var.view(shape) + bn.eps)
    return (x * bn.weight.view(shape) + bn.bias.view(shape)).detach()
'''),
]
