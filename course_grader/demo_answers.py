"""What the demo students write in the written-answer cells: realistic text of three qualities, never the mark scheme.

The demo class is built from the release (demo.py): a written-answer cell starts as the release has it ("YOUR
ANSWER HERE") and gets the text of its student's quality here. An answer cell with no text here (a question added
later) gets FALLBACK, so the catalogue of questions can grow without changing the class.
"""

from __future__ import annotations

# Which quality each demo student writes (the crasher, looper, deleter and paster are the reference's copies).
QUALITY = {"reference": "good", "alice": "partial", "bob": "good", "carol": "weak", "dave": "partial",
           "crasher": "good", "looper": "good", "deleter": "good", "paster": "good"}

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
    "answer_why_not_classify": {
        "good": "InstanceNorm removes each image's per-channel mean and contrast, which is what style transfer "
                "wants gone but is exactly the evidence a classifier uses. On the last 1x1 map every channel "
                "has one value, so after normalising it is always zero and the output no longer depends on "
                "the input. With the biased variance of a single value being 0, dividing by sqrt(0 + eps) of "
                "0 - 0 gave the NaN loss (Ulyanov et al., 2016).",
        "partial": "It removes the contrast of the image, which we need for classification. The NaN probably "
                   "comes from dividing by a variance of zero.",
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
}


def answer(grade_id: str, student: str) -> str:
    """The text `student` writes in the answer cell `grade_id`."""
    quality = QUALITY.get(student, "good")
    return ANSWERS.get(grade_id, FALLBACK)[quality]
