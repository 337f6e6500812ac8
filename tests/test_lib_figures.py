"""The axes figure (course_lib/figures.py): each shaded set is exactly what PyTorch's own norm reduces over, and the
figure draws; the drawing is saved to test-artifacts/norm_axes.png for a person to look at."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from course_lib import draw_norm_axes, reduction_set

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"

# PyTorch's functions as the oracle: the output at example 0, channel 0, position 0 depends on x through the
# statistics of the set it was normalised with (and through its own value).
ORACLE = {
    "batch": lambda x, g: F.batch_norm(x, None, None, training=True),
    "layer": lambda x, g: F.layer_norm(x, x.shape[1:]),
    "instance": lambda x, g: F.instance_norm(x),
    "group": lambda x, g: F.group_norm(x, g),
}


@pytest.mark.parametrize("kind", sorted(ORACLE))
@pytest.mark.parametrize("groups", [1, 2, 3, 6])
def test_shaded_set_is_what_torch_reduces_over(kind, groups):
    n, c, hw = 4, 6, 5
    x = torch.randn(n, c, hw, 1, dtype=torch.float64, generator=torch.Generator().manual_seed(groups), requires_grad=True)
    ORACLE[kind](x, groups)[0, 0, 0, 0].backward()
    depends = (x.grad[..., 0].abs() > 1e-12).numpy()
    assert np.array_equal(depends, reduction_set(kind, n, c, hw, groups)), f"{kind} (groups={groups})"


def test_unknown_kind_and_indivisible_groups_are_clear_errors():
    with pytest.raises(ValueError, match="unknown kind"):
        reduction_set("weight")
    with pytest.raises(ValueError, match="divide"):
        reduction_set("group", groups=4)
    with pytest.raises(ValueError, match="unknown kind"):
        draw_norm_axes("batch", "rms")


def test_the_figure_draws_one_panel_per_kind_and_is_saved():
    import matplotlib.pyplot as plt

    fig = draw_norm_axes(groups=2)
    try:
        titles = [ax.get_title() for ax in fig.axes]
        assert titles == ["BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm (2 groups)"]
        ARTIFACTS.mkdir(exist_ok=True)
        out = ARTIFACTS / "norm_axes.png"
        fig.savefig(out, dpi=80)
        image = plt.imread(out)
        # Something is drawn in every panel: each quarter of the picture holds the shading colour.
        blue = (image[..., 2] > 0.6) & (image[..., 0] < 0.4)
        quarters = np.array_split(blue, 4, axis=1)
        assert all(q.sum() > 50 for q in quarters), [int(q.sum()) for q in quarters]
    finally:
        plt.close(fig)
    one = draw_norm_axes("instance")
    assert [ax.get_title() for ax in one.axes] == ["InstanceNorm"]
    plt.close(one)
