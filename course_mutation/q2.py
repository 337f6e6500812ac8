"""Q2 (BatchNorm's dependence on the batch): known mistakes and correct alternatives of spread_across_batches."""

from course_mutation import Variant

NOTEBOOK = "Q2"

_S = "spread_across_batches"
_VAR = "var = batches.var(dim=(1, 3, 4), keepdim=True, correction=0)"
_NORM = "outputs = ((batches - mean) / (var + eps).sqrt())[:, 0]"
_RET = "return outputs.std(dim=0, correction=0).mean(dim=(1, 2))"

VARIANTS = [
    Variant("unbiased_variance", _S, "normalising with the unbiased variance",
            fails=("test_spread_values",), names="q2.unbiased_variance",
            edits=((_VAR, "var = batches.var(dim=(1, 3, 4), keepdim=True)"),)),
    Variant("eps_outside_sqrt", _S, "eps added to the standard deviation",
            fails=("test_spread_values",), names="q2.eps_outside_sqrt",
            edits=((_NORM, "outputs = ((batches - mean) / (var.sqrt() + eps))[:, 0]"),)),
    Variant("unbiased_std_over_trials", _S, "sample standard deviation over the trials",
            fails=("test_spread_values",), names="q2.unbiased_std",
            edits=((_RET, "return outputs.std(dim=0).mean(dim=(1, 2))"),)),
    Variant("variance_over_trials", _S, "the variance over the trials instead of the standard deviation",
            fails=("test_spread_values",), names="q2.variance_not_std",
            edits=((_RET, "return outputs.var(dim=0, correction=0).mean(dim=(1, 2))"),)),
    Variant("std_over_trials_and_positions", _S, "one std over trials and positions together",
            fails=("test_spread_values",), names="q2.std_over_trials_and_positions",
            edits=((_RET, "return outputs.std(dim=(0, 2, 3), correction=0)"),)),
    Variant("max_over_positions", _S, "the largest spread over H and W",
            fails=("test_spread_values",), names="q2.max_spread",
            edits=((_RET, "return outputs.std(dim=0, correction=0).amax(dim=(1, 2))"),)),
    Variant("example_left_out", _S, "statistics from the mates only",
            fails=("test_spread_values",), names="q2.example_left_out",
            edits=(("mean = batches.mean(dim=(1, 3, 4), keepdim=True)",
                    "mean = batches[:, 1:].mean(dim=(1, 3, 4), keepdim=True)"),
                   (_VAR, "var = batches[:, 1:].var(dim=(1, 3, 4), keepdim=True, correction=0)"))),
    Variant("per_position_statistics", _S, "statistics over the batch only, per position",
            fails=("test_spread_values",), names="q2.per_position_statistics",
            edits=(("mean = batches.mean(dim=(1, 3, 4), keepdim=True)", "mean = batches.mean(dim=1, keepdim=True)"),
                   (_VAR, "var = batches.var(dim=1, keepdim=True, correction=0)"))),
    Variant("per_example_statistics", _S, "each example normalised with its own statistics (InstanceNorm)",
            fails=("test_spread_values",), names="q2.zero_spread",
            edits=(("mean = batches.mean(dim=(1, 3, 4), keepdim=True)", "mean = batches.mean(dim=(3, 4), keepdim=True)"),
                   (_VAR, "var = batches.var(dim=(3, 4), keepdim=True, correction=0)"))),
    Variant("trials_pooled", _S, "all trials normalised as one big batch",
            fails=("test_spread_values",), names="q2.zero_spread",
            edits=(("mean = batches.mean(dim=(1, 3, 4), keepdim=True)", "mean = batches.mean(dim=(0, 1, 3, 4), keepdim=True)"),
                   (_VAR, "var = batches.var(dim=(0, 1, 3, 4), keepdim=True, correction=0)"))),
    Variant("no_shape_checks", _S, "no ValueError for shapes that do not fit",
            fails=("test_spread_contract",), says="ValueError",
            edits=(("    if mate_batches.shape[2:] != example.shape:\n", "    if False:\n"),)),
    Variant("variance_averaged_then_sqrt", _S, "the variance over the trials averaged over H and W, then its square root",
            fails=("test_spread_values",), names="q2.sqrt_of_mean_variance",
            edits=((_RET, "return outputs.var(dim=0, correction=0).mean(dim=(1, 2)).sqrt()"),)),
    Variant("eps_argument_ignored", _S, "normalises with eps=1e-5 whatever eps is given",
            fails=("test_spread_values",), names="q2.default_eps",
            edits=((_NORM, "outputs = ((batches - mean) / (var + 1e-5).sqrt())[:, 0]"),)),
    Variant("view_needs_contiguous", _S, "flattens the mates' positions with .view, which fails on a non-contiguous input",
            fails=("test_spread_contract",), names="layout.view",
            code='''
def spread_across_batches(example, mate_batches, eps=1e-5):
    if example.dim() != 3 or mate_batches.dim() != 5 or mate_batches.shape[2:] != example.shape:
        raise ValueError(f"shapes do not fit: {tuple(example.shape)} and {tuple(mate_batches.shape)}")
    t, m, c, h, w = mate_batches.shape
    flat = mate_batches.view(t, m, c, h * w)
    mine = example.reshape(1, 1, c, h * w).expand(t, 1, c, h * w)
    batches = torch.cat([mine, flat], dim=1)
    mean = batches.mean(dim=(1, 3), keepdim=True)
    var = batches.var(dim=(1, 3), keepdim=True, correction=0)
    outputs = ((batches - mean) / (var + eps).sqrt())[:, 0]
    return outputs.std(dim=0, correction=0).mean(dim=1)
'''),
    Variant("channel_wrong", _S, "the last channel's spread is left out (a loop over range(C - 1))",
            fails=("test_spread_values",), says="only channel(s)",
            code='''
def spread_across_batches(example, mate_batches, eps=1e-5):
    if example.dim() != 3 or mate_batches.dim() != 5 or mate_batches.shape[2:] != example.shape:
        raise ValueError("the shapes do not fit")
    spreads = torch.zeros(example.shape[0], dtype=example.dtype)
    for c in range(example.shape[0] - 1):
        outs = []
        for mates in mate_batches:
            batch = torch.cat([example[None, c], mates[:, c]])
            outs.append((example[c] - batch.mean()) / (batch.var(correction=0) + eps).sqrt())
        spreads[c] = torch.stack(outs).std(0, correction=0).mean()
    return spreads
'''),
    Variant("functional_loop", _S, None, code='''
def spread_across_batches(example, mate_batches, eps=1e-5):
    """One F.batch_norm call per trial (no running statistics, so nothing is stored)."""
    if example.ndim != 3 or mate_batches.ndim != 5 or tuple(mate_batches.shape[2:]) != tuple(example.shape):
        raise ValueError(f"shapes do not fit: example {tuple(example.shape)}, mate_batches {tuple(mate_batches.shape)}")
    outs = []
    for mates in mate_batches:
        batch = torch.cat([example.unsqueeze(0), mates])
        outs.append(F.batch_norm(batch, None, None, training=True, eps=eps)[0])
    return torch.stack(outs).std(0, unbiased=False).mean((-2, -1))
'''),
    Variant("module_and_moments", _S, None, code='''
from torch import nn

def spread_across_batches(example, mate_batches, eps=1e-5):
    if len(example.shape) != 3:
        raise ValueError("example needs 3 dims")
    if len(mate_batches.shape) != 5:
        raise ValueError("mate_batches needs 5 dims")
    if mate_batches.shape[-3:] != example.shape:
        raise ValueError("channel or spatial sizes differ")
    bn = nn.BatchNorm2d(example.shape[0], eps=eps, affine=False, track_running_stats=False).to(example.dtype)
    outs = torch.stack([bn(torch.cat([example[None], m]))[0] for m in mate_batches])
    mu = outs.mean(0)
    return ((outs - mu) ** 2).mean(0).sqrt().flatten(1).mean(1)
'''),
    Variant("by_hand_loop", _S, None, code='''
def spread_across_batches(example, mate_batches, eps=1e-5):
    if example.dim() != 3 or mate_batches.dim() != 5:
        raise ValueError("expected example (C, H, W) and mate_batches (T, M, C, H, W)")
    if mate_batches.shape[2:] != example.shape:
        raise ValueError("the mates' (C, H, W) differ from the example's")
    rows = []
    for t in range(mate_batches.shape[0]):
        b = torch.cat([example[None], mate_batches[t]])
        n = b.shape[0] * b.shape[2] * b.shape[3]
        m = b.sum((0, 2, 3)) / n
        v = ((b - m[:, None, None]) ** 2).sum((0, 2, 3)) / n
        rows.append((example - m[:, None, None]) / torch.sqrt(v[:, None, None] + eps))
    y = torch.stack(rows)
    return y.var(0, correction=0).sqrt().mean((1, 2))
'''),
]
