"""Hook/Hooks: registration, removal, list behaviour, statistics recorded only in training."""
import torch
from torch import nn

from course_lib import Hook, Hooks, append_stats, append_stats_hist, get_min, plot_hists, plot_layer_stats


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3))


def test_append_stats_records_only_in_training():
    m = _model()
    x = torch.randn(16, 5)
    with Hooks(m, append_stats) as hooks:
        m.train(); m(x); m(x * 2)
        m.eval(); m(x)
        means, stds = hooks[0].stats
        assert len(means) == len(stds) == 2
        expected = m[0](x * 2)
        assert abs(means[1] - expected.mean().item()) < 1e-6
        assert abs(stds[1] - expected.std().item()) < 1e-6


def test_hooks_removed_on_exit_and_by_remove():
    m = _model()
    m.train()
    with Hooks(m, append_stats) as hooks:
        assert all(len(layer._forward_hooks) == 1 for layer in m)
        m(torch.randn(4, 5))
    assert all(len(layer._forward_hooks) == 0 for layer in m)
    m(torch.randn(4, 5))
    assert len(hooks[0].stats[0]) == 1  # nothing recorded after exit
    h = Hook(m[0], append_stats)
    assert len(m[0]._forward_hooks) == 1
    h.remove(); h.remove()  # second remove is harmless
    assert len(m[0]._forward_hooks) == 0


def test_hooks_is_list_like():
    m = _model()
    with Hooks(m, append_stats) as hooks:
        assert len(hooks) == 3
        assert isinstance(hooks[0], Hook) and hooks[-1] is hooks[2]
        sl = hooks[1:]
        assert len(sl) == 2 and sl[0] is hooks[1]
        assert [h.module for h in hooks] == list(m)
    with Hooks([m[0], m[2]], append_stats) as hooks:
        assert [h.module for h in hooks] == [m[0], m[2]]


def test_histograms_and_plots():
    m = _model()
    with Hooks(m, append_stats_hist) as hooks:
        m.train()
        for _ in range(3):
            m(torch.randn(16, 5))
        means, stds, hists = hooks[1].stats
        assert len(hists) == 3 and hists[0].shape == (40,)
        frac = get_min(hooks[1])
        assert frac.shape == (3,) and bool(((frac >= 0) & (frac <= 1)).all())
        # ReLU output: at least the negative half is exactly zero, in the first bin.
        assert float(frac.min()) > 0.3
        fig, axes = plot_layer_stats(hooks, n_batches=2)
        assert len(axes[0].lines) == 3 and len(axes[0].lines[0].get_ydata()) == 2
        fig2, axes2 = plot_hists(hooks)
        assert axes2.size >= 3
    import matplotlib.pyplot as plt
    plt.close("all")
