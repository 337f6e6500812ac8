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
}


def answer(grade_id: str, student: str) -> str:
    """The text `student` writes in the answer cell `grade_id`."""
    quality = QUALITY.get(student, "good")
    return ANSWERS.get(grade_id, FALLBACK)[quality]
