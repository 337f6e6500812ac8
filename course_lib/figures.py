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
        # The axes of the picture are (x, y, z) = (H*W across, C into the page, N upwards). Each shaded set is a
        # box of whole cells, so the block and the set are drawn as two boxes with their cells' lines on their
        # faces: a handful of polygons, where voxels() would draw six per cell (several times slower).
        cells = np.argwhere(mask.transpose(2, 1, 0))
        lo, hi = cells.min(0), cells.max(0) + 1
        # Drawn in this order (not by mplot3d's depth sort, which orders whole collections): the see-through block,
        # then the opaque set, which always holds the front corner, with the lines of the faces this view shows.
        ax.computed_zorder = False
        _box(ax, (0, 0, 0), (HW, C, N), face=(0.85, 0.85, 0.85, 0.08), edge=(0.3, 0.3, 0.3, 0.3), zorder=1)
        _box(ax, lo, hi, face=(*_rgb(color), 1.0), edge=(0.1, 0.1, 0.1, 0.6), zorder=2, seen=True)
        ax.set(xlim=(0, HW), ylim=(0, C), zlim=(0, N))
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


def _box(ax, lo, hi, face, edge, zorder: int, seen: bool = False) -> None:
    """Draw the box [lo, hi] (x, y, z corners, whole cells) with its faces and the lines between its cells.

    seen: only the lines of the three faces the view shows (front y = lo, right x = hi, top z = hi)."""
    from mpl_toolkits.mplot3d.art3d import Line3DCollection, Poly3DCollection

    (x0, y0, z0), (x1, y1, z1) = lo, hi
    corners = np.array([[x, y, z] for x in (x0, x1) for y in (y0, y1) for z in (z0, z1)], dtype=float)
    faces = [corners[list(f)] for f in ((0, 1, 3, 2), (4, 5, 7, 6), (0, 1, 5, 4), (2, 3, 7, 6), (0, 2, 6, 4),
                                          (1, 3, 7, 5))]
    ax.add_collection3d(Poly3DCollection(faces, facecolors=face, edgecolors="none", zorder=zorder))
    shown = {(1, lo[1]), (0, hi[0]), (2, hi[2])}
    lines = []
    # Lines parallel to each axis, one per cell boundary along a second axis, on the two faces the third axis bounds.
    for axis, a, b in ((0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)):
        for pos_a in range(int(lo[a]), int(hi[a]) + 1):
            for pos_b in (lo[b], hi[b]):
                if seen and (b, pos_b) not in shown:
                    continue
                start, stop = np.zeros(3), np.zeros(3)
                start[axis], stop[axis] = lo[axis], hi[axis]
                start[a] = stop[a] = pos_a
                start[b] = stop[b] = pos_b
                lines.append([start, stop])
    ax.add_collection3d(Line3DCollection(lines, colors=[edge], linewidths=0.5, zorder=zorder))


def _rgb(color: str) -> tuple[float, float, float]:
    from matplotlib.colors import to_rgb

    return to_rgb(color)
