"""Which values one normalisation statistic is computed over: the N x C x (H*W) block of Wu & He (2018), Figure 2.

An activation of shape (N, C, H, W) is drawn as a block with the batch (N) on one axis, the channels (C) on
another and the H*W positions of a feature map flattened onto the third. Each panel shades the set of values that
ONE mean and ONE variance are computed from, for the norm it is titled with; every other set of the same norm is
the same shape, moved along the axes the norm does not reduce over:

    batch     one channel, over every example and every position   (N, H, W)    -> C statistics
    layer     one example, over every channel and every position   (C, H, W)    -> N statistics
    instance  one example's one channel, over its positions        (H, W)       -> N*C statistics
    group     one example's group of C/G channels, over positions  (C/G, H, W)  -> N*G statistics

The picture is about shapes only; it holds no layer. `reduction_set` gives the shaded set as a boolean array so
that the course's tests can check the picture against PyTorch's own functions.
"""

from __future__ import annotations

import numpy as np

KINDS = {
    "batch": "BatchNorm",
    "layer": "LayerNorm",
    "instance": "InstanceNorm",
    "group": "GroupNorm",
}

# The block's size in the picture: enough cells to see the pattern, few enough to read.
N, C, HW = 4, 6, 5


def reduction_set(kind: str, n: int = N, c: int = C, hw: int = HW, groups: int = 2) -> np.ndarray:
    """The boolean (n, c, hw) mask of the values the first statistic of `kind` is computed over.

    The first statistic is the one for example 0 and/or channel 0 (whichever the norm keeps apart).
    Raises ValueError for an unknown kind or, for "group", a channel count that `groups` does not divide.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}: choose among {', '.join(KINDS)}")
    mask = np.zeros((n, c, hw), dtype=bool)
    if kind == "batch":
        mask[:, 0, :] = True
    elif kind == "layer":
        mask[0, :, :] = True
    elif kind == "instance":
        mask[0, 0, :] = True
    else:
        if groups < 1 or c % groups:
            raise ValueError(f"groups={groups} must divide the {c} channels into equal groups")
        mask[0, : c // groups, :] = True
    return mask


def draw_norm_axes(*kinds: str, groups: int = 2, color: str = "tab:blue"):
    """Draw one panel per kind (default: all four) and return the matplotlib Figure.

    Each panel is the N x C x (H*W) block; the shaded cells are the values one mean and one variance are
    computed from. `groups` is GroupNorm's number of groups in the picture (it must divide its 6 channels).
    Show it with `plt.show()` in a notebook.
    """
    import matplotlib.pyplot as plt  # imported here so that `import course_lib` does not need a backend

    kinds = kinds or tuple(KINDS)
    masks = [reduction_set(kind, groups=groups) for kind in kinds]  # checks every kind before drawing
    fig = plt.figure(figsize=(3.4 * len(kinds), 3.8))
    for i, (kind, mask) in enumerate(zip(kinds, masks)):
        ax = fig.add_subplot(1, len(kinds), i + 1, projection="3d")
        # voxels() takes the array's axes as (x, y, z): H*W across, C into the page, N upwards.
        # Two calls: voxels() draws only the outer faces of what it fills, so one call over the whole block would
        # hide the shaded set's faces where it touches the rest.
        shaded = mask.transpose(2, 1, 0)
        ax.voxels(~shaded, facecolors=(0.85, 0.85, 0.85, 0.05), edgecolor=(0.3, 0.3, 0.3, 0.3), linewidth=0.4)
        ax.voxels(shaded, facecolors=(*_rgb(color), 0.9), edgecolor=(0.1, 0.1, 0.1, 0.5), linewidth=0.4)
        ax.set_xlabel("H, W", labelpad=-12)
        ax.set_ylabel("C", labelpad=-12)
        ax.set_zlabel("N", labelpad=-12)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        ax.set_box_aspect((HW, C, N))
        ax.view_init(elev=20, azim=-60)
        title = KINDS[kind] + (f" ({groups} groups)" if kind == "group" else "")
        ax.set_title(title, fontsize=11)
    fig.suptitle("shaded: the values one mean and one variance are computed over", fontsize=10)
    return fig


def _rgb(color: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(color)
