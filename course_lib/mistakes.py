"""The catalogue of named mistakes: one stable id for each mistake the course recognises, and the one sentence a
student reads for it.

The visible checks (course_lib.checks), the grader's judge and the class report name a mistake by its id and take
its sentence from here, so the sentence is written once and the report groups students by id, whatever words a
check or a verdict put around it. A failure message names a mistake as NAMED followed by its sentence; the verdict
records the id as data. Each sentence says what was done and what the contract asks instead: no expected values,
nothing of the hidden tests.

An id is `<part>.<mistake>`: `bn.` Q3's BatchNorm, `norm.` shared by every normalisation layer, and so on. Ids are
data the grader has stored in graded notebooks: rename one only with every notebook regraded.
"""

from __future__ import annotations

# How a failure message introduces a named mistake's sentence.
NAMED = "This is what you get if "

MISTAKES: dict[str, str] = {
    # ---- any layer -----------------------------------------------------------------------------------------
    "layout.view":
        "your code calls .view() on a tensor whose memory is not laid out row by row; .view() refuses such a "
        "tensor, and the contract accepts any tensor of the right shape: use .reshape() (or .flatten()), which "
        "copies only when it must.",
    # ---- every normalisation layer (Q3, Q6, Q7, Q8) --------------------------------------------------------
    "norm.eps_outside_sqrt":
        "you put eps outside the square root: divide by sqrt(var + eps), not by sqrt(var) + eps.",
    "norm.no_eps":
        "you left out eps: divide by sqrt(var + eps).",
    "norm.scale_shift_swapped":
        "you swapped the scale and the shift: the output must be x_hat * mults + adds.",
    "norm.no_scale_shift":
        "you left out the scale and shift: multiply by mults and add adds.",
    "norm.eps_outside_sqrt_or_std":
        "you put eps outside the square root (or added it to the standard deviation): divide by sqrt(var + eps), "
        "not by sqrt(var) + eps.",
    "norm.mean_not_subtracted":
        "you did not subtract the mean: the normalised value is (x - mean) / sqrt(var + eps).",
    "norm.input_returned":
        "you returned the input unchanged: the layer must normalise it.",
    "norm.detached":
        "you took the mean and variance out of the autograd graph (.detach(), .data, .item() or torch.no_grad()):"
        " the gradient must flow through them too.",
    "norm.default_eps":
        "you used the default eps although the layer was built with another: store the eps you are given and "
        "use self.eps.",
    # ---- Q1: BatchNorm's statistics and outputs ------------------------------------------------------------
    "q1.returned_example":
        "you returned the example itself, not bn's output: nothing was normalised.",
    "q1.returned_example_scaled":
        "you returned the example scaled and shifted by gamma and beta, not normalised first.",
    "q1.running_statistics_in_train":
        "you used the running statistics: in train mode BatchNorm uses the batch's own mean and variance.",
    "q1.unbiased_variance_output":
        "you used the unbiased variance of the batch; BatchNorm's output uses the biased one.",
    "q1.batch_statistics_in_eval":
        "you used the batch statistics: in eval mode BatchNorm uses its running mean and variance.",
    "q1.unbiased_variance":
        "you used the unbiased variance (divide by n-1); the contract says biased (divide by n).",
    "q1.standard_deviation":
        "you returned the standard deviation, not the variance.",
    "q1.mean_not_subtracted":
        "you returned the mean of the squares without subtracting the mean first.",
    "q1.within_example_variance":
        "you averaged each example's own variance: that misses how the examples differ from each other; take the "
        "variance over batch and positions together.",
    "q1.example_alone":
        "you normalised the example on its own: its batch mates must be part of the batch statistics.",
    "q1.example_left_out":
        "the batch statistics leave the example out: it belongs to the batch (put it first).",
    "q1.first_mate_output":
        "you returned the output of the first batch mate, not the example's.",
    "q1.last_mate_output":
        "you returned the output of the last batch mate, not the example's.",
    # ---- Q2: BatchNorm's pros and cons ---------------------------------------------------------------------
    "q2.unbiased_variance":
        "you normalised with the unbiased variance (divide by n-1); BatchNorm's output uses the biased one "
        "(divide by n).",
    "q2.eps_outside_sqrt":
        "you added eps to the standard deviation; it goes inside the square root: sqrt(var + eps).",
    "q2.unbiased_std":
        "you took the unbiased standard deviation over the trials; the contract says the population one "
        "(correction=0).",
    "q2.variance_not_std":
        "you computed the variance over the trials, not the standard deviation.",
    "q2.std_over_trials_and_positions":
        "you took one standard deviation over trials and positions together; take it over the trials, then "
        "average over H and W.",
    "q2.max_spread":
        "you took the largest spread over H and W; the contract says the mean.",
    "q2.example_left_out":
        "the batch statistics leave the example out: it belongs to its batch (first item).",
    "q2.per_position_statistics":
        "you normalised each position separately (statistics over the batch only); BatchNorm2d's statistics run "
        "over the batch and H and W.",
    "q2.zero_spread":
        "your spread is zero: the statistics you normalise with do not depend on the batch mates (per-example "
        "statistics, or all trials pooled into one batch).",
    "q2.sqrt_of_mean_variance":
        "you averaged the variance over H and W and then took its square root; take the standard deviation at "
        "each position, then average those over H and W.",
    "q2.default_eps":
        "you normalised with eps = 1e-5 (the default), not the eps argument: pass eps on.",
    # ---- Q3: BatchNorm -------------------------------------------------------------------------------------
    "bn.unbiased_variance":
        "you normalised with the UNBIASED variance (divide by n-1); the contract says the biased variance (divide"
        " by n = N*H*W) for the output, as nn.BatchNorm2d does (the unbiased one is only stored).",
    "bn.axes_batch_only":
        "you computed the statistics over the wrong axes: over the batch dimension (0,) only; BatchNorm reduces "
        "over axes (0, 2, 3), one mean and variance per channel.",
    "bn.axes_instancenorm":
        "you computed the statistics over the wrong axes: over (2, 3), per example and channel (that is "
        "InstanceNorm); BatchNorm reduces over axes (0, 2, 3).",
    "bn.axes_layernorm":
        "you computed the statistics over the wrong axes: over (1, 2, 3), per example (that is LayerNorm); "
        "BatchNorm reduces over axes (0, 2, 3).",
    "bn.axes_all":
        "you computed the statistics over the wrong axes: over all of them, one mean for every channel; BatchNorm"
        " reduces over axes (0, 2, 3), per channel.",
    "bn.train_running_before_update":
        "you normalised with the running statistics in training mode (before updating them); training mode "
        "normalises with the batch's own mean and variance.",
    "bn.train_running_after_update":
        "you normalised with the running statistics in training mode (after updating them); training mode "
        "normalises with the batch's own mean and variance.",
    "bn.input_returned":
        "your output is the input itself: nothing was normalised (subtract the mean, divide by sqrt(var + eps), "
        "then scale and shift).",
    "bn.input_scaled_shifted":
        "your output is the input, only multiplied by mults and shifted by adds: nothing was normalised (subtract"
        " the mean and divide by sqrt(var + eps) first).",
    "bn.eval_batch_statistics":
        "you normalised with the batch's own statistics in eval mode; eval mode must use the running statistics "
        "(the buffers means and vars).",
    "bn.eval_batch_unbiased_statistics":
        "you normalised with the batch's own (unbiased) statistics in eval mode; eval mode must use the running "
        "statistics (the buffers means and vars).",
    "bn.eval_updates_first":
        "you updated the running statistics with this eval-mode batch before using them: in eval mode the buffers "
        "stay as they are.",
    "bn.eval_eps_outside_sqrt":
        "you put eps outside the square root: divide by sqrt(vars + eps), not by sqrt(vars) + eps.",
    "bn.eval_variance_not_sqrt":
        "you divided by the running variance instead of its square root: divide by sqrt(vars + eps).",
    "bn.running_var_zeros":
        "you initialised the running variance to 0; vars must start as ones (and means as zeros), so an untrained"
        " layer in eval mode returns x / sqrt(1 + eps) * mults + adds.",
    "bn.momentum_flipped":
        "you flipped the momentum: mom is the weight of the NEW batch, running = (1 - mom) * running + mom * "
        "batch (PyTorch's rule), not mom * running + (1 - mom) * batch.",
    "bn.biased_variance_stored":
        "you stored the biased variance in the running variance; the contract (and nn.BatchNorm2d) stores the "
        "unbiased one (divide by n-1), while normalising with the biased one.",
    "bn.std_stored":
        "you stored the standard deviation, not the variance, in the running variance.",
    "bn.running_not_updated":
        "you did not update the running statistics in training mode.",
    "bn.detached_mean_and_var":
        "you detached the batch mean and variance (or computed them under torch.no_grad()): keep the batch "
        "statistics inside the autograd graph; only the update of the running statistics is free of history.",
    "bn.detached_mean":
        "you detached the batch mean (or computed it under torch.no_grad()): keep the batch statistics inside the"
        " autograd graph; only the update of the running statistics is free of history.",
    "bn.detached_var":
        "you detached the batch variance (or computed it under torch.no_grad()): keep the batch statistics inside"
        " the autograd graph; only the update of the running statistics is free of history.",
    # ---- Q4: fold_bn ---------------------------------------------------------------------------------------
    "fold.eps_outside_sqrt":
        "you put eps outside the square root (running_var.sqrt() + eps): eval mode divides by sqrt(running_var + "
        "eps).",
    "fold.no_eps":
        "you forgot eps: the scale is weight / sqrt(running_var + eps), with bn.eps inside the root.",
    "fold.conv_bias_forgotten":
        "you forgot the conv's bias: it passes through the norm too, so the folded bias is (conv.bias - "
        "running_mean) * scale + bn.bias.",
    "fold.conv_bias_unscaled":
        "you added the conv's bias unscaled: the norm multiplies it like the rest of the conv's output, so the "
        "folded bias is (conv.bias - running_mean) * scale + bn.bias.",
    "fold.bn_bias_forgotten":
        "you forgot bn.bias (the shift beta): the folded bias ends with + bn.bias.",
    "fold.mean_not_subtracted":
        "you did not subtract the running mean: the folded bias holds - running_mean * scale.",
    "fold.wrong_axis":
        "you scaled the weight on the wrong axis (per INPUT channel, e.g. weight * scale.view(1, -1, 1, 1)): the "
        "norm scales each OUTPUT channel, the weight's first axis: weight * scale.view(-1, 1, 1, 1).",
    "fold.variance_rescaled":
        "you rescaled running_var (the biased/unbiased variance mixed up, e.g. var * n / (n - 1)): eval mode uses "
        "bn.running_var as it is stored (the unbiased estimate PyTorch keeps); do not rescale it.",
    # ---- Q5: the schedules ---------------------------------------------------------------------------------
    "sched.boundary_to_earlier":
        "a position exactly on a boundary is given to the earlier segment (at its position 1); the contract gives"
        " it to the later segment (at its position 0).",
    "sched.float32_boundaries":
        "the segment boundaries were computed in float32 (a float32 tensor's cumsum): 0.3 is 0.30000001 in "
        "float32, so positions next to a boundary land in the wrong segment. Work in Python floats.",
    "sched.float32_positions":
        "the segment boundaries were computed in float32 (a float32 tensor of the percentages), and positions are"
        " compared with them in float32: 0.3 is 0.30000001 there, so positions next to a boundary land in the "
        "wrong segment. Work in Python floats.",
    "sched.not_rescaled":
        "the position is not rescaled inside its segment: use (pos - start) / pct, not pos - start.",
    "sched.not_shifted":
        "the segment's start is not subtracted: use (pos - start) / pct, not pos / pct.",
    "sched.global_position":
        "each schedule gets the overall position instead of its own position 0..1 within its segment.",
    "sched.wrong_order":
        "the schedules are used in the wrong order (scheds[i] belongs to pcts[i]).",
    "sched.interpolated":
        "each segment is a straight line from scheds[i](0) to scheds[i](1); the contract calls scheds[i] itself "
        "at the position within its segment, whatever its shape (a schedule need not be linear: here a cosine and"
        " a parabola).",
    "sched.lesson_cosine":
        "cosine segments were used; the lesson's schedule is linear (sched_lin) in both segments.",
    "sched.lesson_pcts_swapped":
        "the percentages are swapped: warm up over the first 30 % ([0.3, 0.7]), then anneal over 70 %.",
    "sched.lesson_scheds_swapped":
        "the two schedules are swapped: first sched_lin(0.6, 2.), then sched_lin(2., 0.1) (warm up first).",
    # ---- Q6: LayerNorm -------------------------------------------------------------------------------------
    "ln.unbiased_variance":
        "you normalised with the UNBIASED variance (divide by n-1); the contract says the biased variance (divide"
        " by n = C*H*W).",
    "ln.affine_before_normalising":
        "you applied mult and add BEFORE normalising: normalise x first, then multiply by mult and add add.",
    "ln.no_scale_shift":
        "you left out the scale and shift: multiply by mult and add add.",
    "ln.scale_shift_swapped":
        "you swapped the scale and the shift: the output must be x_hat * mult + add.",
    "ln.no_keepdim":
        "you reduced without keepdim=True, so the per-example mean and variance (shape (N,)) broadcast against "
        "the last dimension (W) instead of the examples: use keepdim=True (shape (N, 1, 1, 1)).",
    "ln.input_scaled_shifted":
        "you only scaled and shifted the input (x * mult + add): normalise it first, (x - mean) / sqrt(var + "
        "eps).",
    "ln.input_returned_or_scaled":
        "you returned the input unchanged or only scaled and shifted it (x * mult + add; with this test's mult "
        "and add the two are the same): normalise it first, (x - mean) / sqrt(var + eps).",
    "ln.axes_instancenorm":
        "you computed the statistics over the wrong axes: over (2, 3), per example AND channel (that is "
        "InstanceNorm). LayerNorm uses one mean and variance per example, over dims (1, 2, 3) = (C, H, W).",
    "ln.axes_batchnorm":
        "you computed the statistics over the wrong axes: over (0, 2, 3), per channel across the batch (that is "
        "BatchNorm). LayerNorm uses one mean and variance per example, over dims (1, 2, 3) = (C, H, W).",
    "ln.axes_all":
        "you computed the statistics over the wrong axes: over the whole batch (0, 1, 2, 3). LayerNorm uses one "
        "mean and variance per example, over dims (1, 2, 3) = (C, H, W).",
    "ln.axes_channels":
        "you computed the statistics over the wrong axes: over (1,), the channels only. LayerNorm uses one mean "
        "and variance per example, over dims (1, 2, 3) = (C, H, W).",
    # ---- Q6: RMSNorm ---------------------------------------------------------------------------------------
    "rms.mean_subtracted":
        "you subtracted the mean (x - mean) / sqrt(var + eps): that is LayerNorm. RMSNorm divides x itself by "
        "sqrt(mean(x**2) + eps), with no mean subtracted.",
    "rms.std_not_rms":
        "you divided by the standard deviation (the variance subtracts the mean): RMSNorm uses mean(x**2), not "
        "the variance.",
    "rms.eps_outside_sqrt":
        "you put eps outside the square root: divide by sqrt(mean(x**2) + eps), not by sqrt(mean(x**2)) + eps.",
    "rms.no_eps":
        "you left out eps: divide by sqrt(mean(x**2) + eps).",
    "rms.sum_not_mean":
        "you used the SUM of x**2 over the normalised dimensions instead of its mean: divide by sqrt(mean(x**2) +"
        " eps).",
    "rms.input_times_weight":
        "you only multiplied the input by the weight: divide it by sqrt(mean(x**2) + eps) first.",
    "rms.no_weight":
        "you did not multiply by the weight: the output is x / sqrt(mean(x**2) + eps) * weight.",
    "rms.last_dim_only":
        "you reduced over the LAST dimension only: the mean of x**2 runs over all the trailing normalized_shape "
        "dimensions (dims (-2, -1) for a normalized_shape of two).",
    "rms.all_but_batch":
        "you reduced over every dimension but the first: RMSNorm reduces over the trailing normalized_shape "
        "dimensions only.",
    "rms.scalar_weight":
        "you gave RMSNorm a single scalar weight: its gain has one value per feature, shape normalized_shape.",
    # ---- Q7: InstanceNorm ----------------------------------------------------------------------------------
    "in.unbiased_variance":
        "you normalised with the UNBIASED variance (divide by n-1); the contract says the biased variance (divide"
        " by n = H*W).",
    "in.affine_before_normalising":
        "you applied mults and adds BEFORE normalising: normalise x first, then multiply by mults and add adds.",
    "in.lesson_instancenorm":
        "you wrote the lesson's InstanceNorm: the unbiased variance and eps=1.0 by default; the contract says the"
        " biased variance (divide by H*W) and eps=1e-5.",
    "in.no_keepdim":
        "you reduced without keepdim=True, so the (N, C) means and variances broadcast against (H, W) instead of "
        "the examples and channels: use keepdim=True (shape (N, C, 1, 1)).",
    "in.zeros_returned":
        "you returned zeros: the normalised value is 0, and the output is 0 * mults + adds = adds.",
    "in.input_scaled_shifted":
        "you only scaled and shifted the input (x * mults + adds): normalise it first, (x - mean) / sqrt(var + "
        "eps).",
    "in.input_returned_or_scaled":
        "you returned the input unchanged or only scaled and shifted it (x * mults + adds; with this test's mults"
        " and adds the two are the same): normalise it first, (x - mean) / sqrt(var + eps).",
    "in.axes_batchnorm":
        "you computed the statistics over the wrong axes: over (0, 2, 3), per channel across the batch (that is "
        "BatchNorm). InstanceNorm uses one mean and variance per example AND channel, over dims (2, 3) = (H, W).",
    "in.axes_layernorm":
        "you computed the statistics over the wrong axes: over (1, 2, 3), per example across all channels (that "
        "is LayerNorm). InstanceNorm uses one mean and variance per example AND channel, over dims (2, 3) = (H, "
        "W).",
    "in.axes_rows":
        "you computed the statistics over the wrong axes: over (3,), along each row only. InstanceNorm uses one "
        "mean and variance per example AND channel, over dims (2, 3) = (H, W).",
    "in.lesson_eps":
        "your eps is 1.0, the 2019 lesson's default (eps=1e-0); the contract's default is eps=1e-5: with 1.0 "
        "every channel whose variance is small is barely normalised.",
    "in.one_scale_shift":
        "you used one scale and shift for all channels: mults and adds hold one value per channel, shape (nf, 1, "
        "1).",
    # ---- Q8: GroupNorm -------------------------------------------------------------------------------------
    "gn.interleaved_groups":
        "you grouped the channels with a stride (channel c in group c % num_groups, as x.view(N, C // G, G, ...) "
        "does); groups are CONTIGUOUS: channels 0..C/G-1 form group 0, the next C/G group 1, and so on (x.view(N,"
        " G, C // G, ...)).",
    "gn.unbiased_variance":
        "you normalised with the UNBIASED variance (divide by n-1); the contract says the biased variance (divide"
        " by the number of values in the group), as nn.GroupNorm does.",
    "gn.statistics_over_batch":
        "you computed the statistics over the batch too (one mean per group for all examples); GroupNorm's "
        "statistics are per example AND group.",
    "gn.reshape_mixes_examples":
        "your reshape mixes examples (x.view(G, -1) or similar puts values of different examples in one group); "
        "reshape to (N, G, -1) so that every row is one example's group.",
    "gn.scale_shift_swapped":
        "you swapped the scale and the shift: the output must be x_hat * weight + bias.",
    "gn.per_group_scale_shift":
        "you gave each GROUP one scale and shift: weight and bias have one value per channel.",
    "gn.no_scale_shift":
        "you left out the scale and shift: multiply by weight and add bias (per channel).",
    "gn.input_scaled_shifted":
        "you only scaled and shifted the input (x * weight + bias): normalise it first, (x - mean) / sqrt(var + "
        "eps).",
    "gn.input_returned_or_scaled":
        "you returned the input unchanged or only scaled and shifted it (x * weight + bias; with this test's "
        "weight and bias the two are the same): normalise it first, (x - mean) / sqrt(var + eps).",
    # ---- Q9: RunningBatchNorm ------------------------------------------------------------------------------
    "rbn.eval_batch_statistics":
        "you normalised with the batch's own statistics in eval; eval must use the stored averages.",
    "rbn.plain_mom":
        "you used mom itself as the new batch's weight; the contract says mom1 = 1 - (1 - mom) / sqrt(bs - 1).",
    "rbn.one_minus_missing":
        "you used (1 - mom) / sqrt(bs - 1) as the new batch's weight; the contract says mom1 = 1 - (1 - mom) / "
        "sqrt(bs - 1).",
    "rbn.no_clamp":
        "you never clamp the variance; the contract clamps it to at least 0.01 until 20 examples have been seen.",
    "rbn.clamp_forever":
        "you clamp the variance to at least 0.01 forever; the contract stops clamping once 20 examples have been "
        "seen.",
    "rbn.clamp_steps":
        "you stop clamping after 20 steps (batches); the contract counts examples: clamp while fewer than 20 "
        "examples have been seen.",
    "rbn.clamp_le":
        "you clamp while at most 20 examples have been seen; the contract clamps only while fewer than 20 (batch "
        "< 20).",
    "rbn.clamp_before_update":
        "you decide on the clamp with the examples seen before this batch; the contract counts this batch too "
        "(update first, then compare).",
    "rbn.batch_stats":
        "you normalised with the current batch's mean and variance; the contract normalises with the smoothed "
        "(already updated) sums, squares and count.",
    "rbn.raw_count":
        "you stored the current batch's element count instead of smoothing it; count must be lerped with mom1 "
        "like sums and sqrs.",
    "rbn.unbiased":
        "you used the unbiased variance (divide by count - 1); the contract says var = sqrs/count - mean**2 "
        "(biased).",
    "rbn.eps_outside":
        "you added eps to the standard deviation; the contract says divide by sqrt(var + eps).",
    "rbn.stats_detached":
        "you detached the current batch's statistics before normalising; gradients must flow through the batch's "
        "share of the smoothed statistics (as in BatchNorm); only the stored state is detached.",
    "rbn.count_examples":
        "you counted examples (bs) where the contract counts elements per channel: c = bs * H * W, the number of "
        "values each channel's sum adds up.",
    "rbn.count_all_channels":
        "you counted every element of the batch (x.numel(), all channels together) where the contract counts the "
        "elements of one channel: c = bs * H * W.",
    "rbn.count_positions":
        "you counted the positions of one map (H * W) where the contract counts the elements of one channel over "
        "the whole batch: c = bs * H * W.",
    "rbn.identity":
        "you returned the input unchanged: the layer must normalise it, (x - mean) / sqrt(var + eps) * mults + "
        "adds.",
    "rbn.untrained_before_update":
        "you decided whether the layer is untrained (count == 0) before this step's update, so the first training"
        " step normalised with mean 0 and variance 1; update first, then normalise with the updated statistics.",
    # ---- Q9: recalibrate_bn --------------------------------------------------------------------------------
    "recal.momentum_kept":
        "you recalibrated with each layer's own momentum (an exponential average weighted towards the last "
        "batches); set momentum = None while the batches run, for the cumulative average of all of them.",
    "recal.momentum_default":
        "you recalibrated with momentum 0.1 (an exponential average weighted towards the last batches); set "
        "momentum = None while the batches run, for the cumulative average of all of them.",
    "recal.not_reset":
        "you did not reset the running statistics first (reset_running_stats()): with momentum None the old "
        "statistics and num_batches_tracked count as earlier batches.",
    "recal.untouched":
        "this layer kept its old statistics: it was not in training mode while the batches ran (put the whole "
        "model in train mode, model.train(), which sets every submodule), or it was not found (handle every "
        "_BatchNorm in model.modules(), not only the first).",
    "recal.eval_pass":
        "this layer was reset but never updated: it was in eval while the batches ran; put the whole model in "
        "train mode (model.train() sets every submodule) for the pass.",
    "recal.skipped":
        "this layer went on with its old statistics and its own momentum: it was neither reset nor given momentum"
        " None (handle every _BatchNorm in model.modules(), not only the first).",
    "recal.biased":
        "you averaged the biased batch variances; PyTorch's running_var (and the contract) averages the unbiased "
        "ones, n / (n - 1) times larger.",
    "recal.parameters_updated":
        "you updated the parameters.",
    "recal.gradients":
        "you computed gradients (run the batches under torch.no_grad(); no backward, no optimizer).",
    "recal.momentum_changed":
        "you left the momentum changed.",
    "recal.modes":
        "you left the model in train mode, or restored only the model's own flag with model.train(was_training), "
        "which sets every submodule alike: restore each module's own flag.",
}


def sentence(mistake: str) -> str:
    """The sentence a student reads for the catalogued mistake `mistake` (an id)."""
    return MISTAKES[mistake]


def naming(mistake: str) -> str:
    """The line a failure message ends with to name the catalogued mistake `mistake` (an id)."""
    return f"\n{NAMED}{MISTAKES[mistake]}"
