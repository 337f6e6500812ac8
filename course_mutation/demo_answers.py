"""What the demo students write in the written-answer cells: realistic text of three qualities, never the mark scheme.

The demo class is built from the release (demo.py): a written-answer cell starts as the release has it ("YOUR
ANSWER HERE") and gets the text of its student's quality here. An answer cell with no text here (a question added
later) gets FALLBACK, so the catalogue of questions can grow without changing the class.
"""

from __future__ import annotations

# Which quality each demo student writes (the crasher, looper, deleter and paster are the reference's copies).
QUALITY = {"reference": "good", "alice": "partial", "bob": "good", "carol": "weak", "dave": "partial",
           "crasher": "good", "looper": "good", "deleter": "good", "paster": "good", "copier": "partial"}

FALLBACK = {
    "good": "I worked through this in the notebook above; my answer follows from the experiment I ran there.",
    "partial": "I think it is because of the batch statistics, but I am not completely sure.",
    "weak": "Not sure.",
}

ANSWERS: dict[str, dict[str, str]] = {
    "q1_parameters_and_statistics": {
        "good": "The weight (gamma) and bias (beta) are parameters: one per channel, they start at 1 and 0 and "
                "are learned by gradient descent with the rest of the network. The running mean and running "
                "variance are buffers, not parameters: they are measured from the batches during training, "
                "with no gradient, and only used in eval mode.",
        "partial": "gamma and beta are parameters and get trained. The mean and variance are statistics that "
                   "are computed from the data.",
        "weak": "All of them are parameters because they are inside the layer and get saved in the state_dict.",
    },
    "q1_why_running_averages": {
        "good": "At inference a prediction should not depend on which other images are in the batch, and a "
                "single image has no useful batch variance. One training batch is also a noisy estimate, so "
                "averaging over many batches gives more stable statistics for the whole dataset.",
        "partial": "Because at test time the batch can be a single image, so we cannot compute the statistics "
                   "from it.",
        "weak": "It is faster than computing the mean again.",
    },
    "q1_running_stats_plot": {
        "good": "With momentum 0.1 the running mean reached the dashed line after roughly 30 batches, with 0.01 it "
                "was still well below it after 100 and only got there near the end. So the momentum is how much "
                "the new batch counts, not the old value. Once there the 0.1 line jumps up and down with the "
                "batches and the 0.01 line is smooth, because it averages many more batches but reacts slowly.",
        "partial": "The 0.1 layer gets to the right mean much faster than the 0.01 one. The 0.01 one is smoother.",
        "weak": "Momentum 0.01 is better because it is more stable.",
    },
    "q2_advantages_disadvantages": {
        "good": "Advantages: we can train with much higher learning rates, the network is less sensitive to "
                "the initialisation, and the noise of the batch statistics regularises a little. "
                "Disadvantages: it depends on the batch size (small batches give bad statistics), it behaves "
                "differently in training and eval mode, and it is awkward for RNNs and for batch size 1.",
        "partial": "Pros: faster training and higher learning rates. Cons: it does not work well with small "
                   "batches.",
        "weak": "It makes the network better. A disadvantage is that it is slower.",
    },
    "q2_hard_cases": {
        "good": "Segmentation: the images are big so only one or two fit on a GPU, and the batch statistics "
                "are noisy; people use synchronised BatchNorm or GroupNorm. RNNs: the statistics would have "
                "to be kept per time step and sequences have different lengths, so LayerNorm is used. Online "
                "learning with batch size 1: there are no batch statistics at all, so LayerNorm or "
                "GroupNorm, or fixed statistics.",
        "partial": "In all three cases the batch is small or there is no real batch. For RNNs people use "
                   "LayerNorm instead.",
        "weak": "Segmentation doesn't use BatchNorm. I don't know about the others.",
    },
    "q2_spread_plot": {
        "good": "On the 28x28 image the spread is about 0.08 at batch size 2 and under 0.01 at 256; on the 1x1 map "
                "it starts near 0.9 and ends around 0.06. Both go down roughly like the dashed 1/sqrt lines. With "
                "one value per image, two images normalise to -1 and +1, so the mate decides the output. At batch "
                "size 1 the spread is zero only because there is no mate: the image is normalised by itself (and "
                "a 1x1 map gives 0), which is not a good thing.",
        "partial": "The spread gets smaller when the batch gets bigger, like 1/sqrt. Batch size 1 has no spread so "
                   "it is the most stable.",
        "weak": "The lines go down.",
    },
    "q3_hooks_reading": {
        "good": "1. Without a norm the blocks all have different stds (block 5 starts near 0.5, block 2 near 1.2), "
                "they jump around in the first batches (block 5 goes from about 0.4 to 1.1) and then drift up "
                "during the epoch, to means of 0.1-0.45. With my BatchNorm every block stays at mean 0 and std 1; "
                "only block 5's std ends a bit above 1. 2. That is built in: the output is mults * x_hat + adds and "
                "x_hat has mean 0 and std 1 per channel, with mults = 1 and adds = 0 at the start, so the next conv "
                "always gets inputs on the same scale. The third run, no norm at lr 1.0, printed nan and 0.099, so "
                "the plain network cannot use that learning rate.",
        "partial": "Without BatchNorm the means and stds move around a lot; with BatchNorm they are flat at 0 and "
                   "1, which shows BatchNorm makes training stable.",
        "weak": "BatchNorm is better because its lines are flat.",
    },
    "q5_schedule_reading": {
        "good": "1. While the learning rate goes up (until about epoch 3) the validation accuracy hardly moves: "
                "0.969, 0.964, 0.969. Once it goes down it gets better every epoch, 0.982 up to 0.989 at the end. "
                "2. A big learning rate makes big noisy steps, good for moving far but it cannot settle, so the "
                "accuracy only improves when the rate gets small. Starting at 0.6 instead of 2.0 avoids huge steps "
                "while the weights are still random.",
        "partial": "The accuracy gets better over time and is best at the end, 0.989. A small learning rate at the "
                   "end is more precise.",
        "weak": "The learning rate goes up and then down like a triangle.",
    },
    "answer_bn_vs_ln": {
        "good": "1. BatchNorm computes a mean and variance per channel over (N, H, W); LayerNorm per example "
                "over (C, H, W). 2. LayerNorm's statistics come from the example itself, so training and "
                "inference are the same and a batch of one works. 3. In RNNs and transformers the batch "
                "statistics change with the time step and the sequence length, and LayerNorm does not care "
                "(Ba, Kiros & Hinton, 2016).",
        "partial": "BatchNorm normalises over the batch and LayerNorm over the layer. LayerNorm doesn't need "
                   "running statistics because it doesn't use the batch.",
        "weak": "LayerNorm is the same as BatchNorm but for transformers.",
    },
    "answer_lr_experiment": {
        "good": "1. At lr 0.8 the loss is around 2 for about ten batches, then shoots up: above 20 at batch 12 "
                "and about 3e9 at the end of the 20 batches, with validation accuracy 0.098. At lr 0.4 it "
                "drops below 0.5 after about 20 batches and ends at 0.096, accuracy 0.96. 2. My layer uses the "
                "biased variance and still blows up at 0.8, so the unbiased variance was not the cause; with "
                "at least 64 values it changes the variance by under 2 % anyway. The step size is too big.",
        "partial": "The 0.8 run explodes and the 0.4 run trains. So it was the learning rate.",
        "weak": "The lesson got NaN because the unbiased variance divides by n - 1.",
    },
    "answer_rmsnorm": {
        "good": "1. RMSNorm does not subtract the mean and has no bias, only a gain per feature: it divides by the "
                "root mean square. So it loses LayerNorm's invariance to shifting the inputs but keeps the invariance "
                "to rescaling them. Zhang & Sennrich (2019) argue the re-centering is not what makes LayerNorm work; "
                "they get the same quality with 7-64 % less running time. 2. Pre-norm puts the norm at the input of "
                "each sub-block, x + F(Norm(x)), instead of after the residual sum. Xiong et al. (2020) show that "
                "the gradients are then well-behaved at initialisation, so no learning-rate warm-up is needed; "
                "LLaMA uses pre-norm with RMSNorm.",
        "partial": "RMSNorm skips the mean so it is faster. Transformers put the norm before the attention.",
        "weak": "RMSNorm is LayerNorm for transformers.",
    },
    "q4_loss_curve": {
        "good": "1. The loss drops from 2.4 to about 0.65 in five batches, has a small bump at batch 6 and is "
                "under 0.5 from about batch 8; after that it goes down slowly to about 0.05 and never jumps back "
                "up. I got 0.979 validation accuracy, the lesson had 0.981. 2. BatchNorm makes each layer's output "
                "the same whatever the scale of the weights, and bigger weights get smaller gradients, so a big "
                "learning rate cannot blow the activations up (paper section 3.3).",
        "partial": "The loss goes down very fast at the start and then slowly. I got about 98 %. It works because "
                   "BatchNorm keeps the activations normalised.",
        "weak": "The loss goes down, so the learning rate is good.",
    },
    "q4_placement_and_bias": {
        "good": "1. The two curves are almost the same; the accuracies were 0.904 (BN first) and 0.908 (lesson), "
                "so neither is clearly better after one epoch. 2. With BN right after the conv the bias is added "
                "to every value of its channel, so the channel mean goes up by the same amount and x - mean does "
                "not change: it cancels (my printout 4.8e-07, rounding), and beta does its job. In the lesson's "
                "order the bias moves the input of the ReLU, so it changes which values are cut or leaked, and "
                "the BN afterwards cannot undo that: the output changed by 1.5. 3. LayerNorm subtracts one mean "
                "over all channels, so only the average of the biases cancels, in both orders (0.81 and 0.99).",
        "partial": "The paper's order trained a bit better. You can drop the bias when BN comes right after the "
                   "conv because the mean is subtracted. In the lesson's order it also does not matter much "
                   "because BN normalises anyway.",
        "weak": "BatchNorm removes the bias in both orders, so the lesson is right to drop it.",
    },
    "answer_groupings": {
        "good": "1. With 6 groups every channel has mean 0 and std 1 (all the bars are the same). With 1 group "
                "the channels keep different means, from about -0.95 for channel 0 to 0.84 for channel 5. "
                "2. With 3 groups each pair of channels has mean 0 and std 1 together (the printout says "
                "[0, 0, 0] and [1, 1, 1]), but inside a pair channel 0 is at -0.55 and channel 1 at 0.55. So "
                "it is in between LayerNorm and InstanceNorm.",
        "partial": "InstanceNorm makes all channels the same. LayerNorm keeps the differences. GroupNorm is "
                   "in between.",
        "weak": "All three give mean 0 and std 1, so they are the same.",
    },
    "answer_in_experiment": {
        "good": "Without normalization the loss goes down from about 2.35 to around 1.1 (with one jump in the "
                "middle) and the validation accuracy is 0.716. With InstanceNorm the loss stays at 2.30 the whole "
                "time and the accuracy is 0.106, about what you get by always guessing the same digit (0.109). "
                "The pooled features have spread 0 across the images and are exactly the adds of the last block, "
                "and the gradient at the first conv is 0, so the convolutions never change: only the last "
                "layer can learn, and only one answer for all images.",
        "partial": "The InstanceNorm loss is flat at 2.3 and the accuracy is only 0.106, while the model without "
                   "normalization learns. The gradient is 0.",
        "weak": "InstanceNorm is worse than no normalization.",
    },
    "answer_why_not_classify": {
        "good": "1. InstanceNorm removes each image's per-channel mean and contrast, which is what style transfer "
                "wants gone (Ulyanov et al., 2016) but is part of the evidence a classifier uses, so it "
                "classifies worse, though it still classifies (Wu & He report a higher ImageNet error for IN than "
                "for BN). 2. In the lesson's model the last block ends with InstanceNorm and average pooling "
                "follows: the mean of a normalised map is 0, so the pooled features are always adds, for any map "
                "size (the 4x4 and 7x7 demo), and the logits are the same for every image. 3. The lesson used "
                "x.var, the unbiased variance, which is 0/0 = NaN for the single value of a 1x1 map; eps does not "
                "fix a NaN. 4. In the variant the last two blocks have no InstanceNorm, so the pooled features "
                "differ between images and the gradient reaches the convs.",
        "partial": "It removes the contrast of the image, which we need for classification. On the last 1x1 map "
                   "everything becomes zero. The NaN probably comes from dividing by a variance of zero. The "
                   "variant works because the norm is before the ReLU.",
        "weak": "Because InstanceNorm is meant for style transfer, not classification.",
    },
    "rbn_written": {
        "good": "1. Averaging each batch's mean and variance weighs every batch the same whatever its size and "
                "misses the variation between batch means; smoothing the sums, squares and counts gives the "
                "statistics of all the activations seen. 2. The debias factor divides sums, squares and "
                "count alike, so it cancels in sums/count and squares/count. 3. With tiny batches the "
                "statistics come from many batches, not from two values, so they are not noisy.",
        "partial": "Because the sums are more accurate than the means. The debias factor cancels out. It helps "
                   "small batches because they have more noise.",
        "weak": "It is the same as BatchNorm but with a different momentum.",
    },
    "rbn_batch_stats": {
        "good": "1. In my plot the batch variance jumps between about 1e-5 and 10 (median 0.02) while running_var "
                "stays between 0.6 and 3 (median 1.2), and the batch means jump between -1.4 and 5.7 while "
                "running_mean stays near 0. 2. So BatchNorm trains with one normalisation and is evaluated with "
                "another, about seven times smaller in scale and around another mean; the next layers never saw "
                "such inputs, which is why its validation loss was huge (81677) while RunningBatchNorm's was 1.33. "
                "My layer uses the same smoothed statistics in training and in eval.",
        "partial": "The batch statistics jump around a lot and the running ones are smooth, so BatchNorm is "
                   "noisy with batches of two.",
        "weak": "The orange line is higher than the green one.",
    },
    "q9_recalibration_reading": {
        "good": "1. I predicted it would land in between, but it did not: before recalibrating my BatchNorm network had "
                "a validation loss of 69252 and accuracy 0.163, afterwards 852961 and 0.194, while RunningBatchNorm had "
                "1.38 and 0.61. 2. So stale running averages were not what broke it. The network was trained on layers "
                "that divided by the statistics of two images, so what the later layers learned depends on that "
                "tiny-batch normalisation, and at inference any fixed statistics, even exact ones, are a different "
                "normalisation. RunningBatchNorm uses its smoothed statistics in training as well, so training and "
                "evaluation match.",
        "partial": "The loss stayed huge after recalibration, so the running statistics were not the main problem; "
                   "batches of two are just too noisy.",
        "weak": "Recalibration fixed the statistics so the network is better now.",
    },
}


def answer(grade_id: str, student: str) -> str:
    """The text `student` writes in the answer cell `grade_id`."""
    quality = QUALITY.get(student, "good")
    return ANSWERS.get(grade_id, FALLBACK)[quality]
