"""Q3's optional challenge checker (course_lib/backward.py): a right hand-written backward passes, the common wrong
ones are told apart, an unattempted stub is said to be unattempted, and nothing raises for a wrong answer."""

import pytest
import torch

from course_lib.backward import check_batchnorm_function


def _stats(x, eps):
    mean = x.mean((0, 2, 3), keepdim=True)
    var = x.var((0, 2, 3), keepdim=True, correction=0)
    return mean, (var + eps).rsqrt()


class Right(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, eps=1e-5):
        mean, s = _stats(x, eps)
        xhat = (x - mean) * s
        ctx.save_for_backward(xhat, s)
        return xhat

    @staticmethod
    def backward(ctx, g):
        xhat, s = ctx.saved_tensors
        mean_g = g.mean((0, 2, 3), keepdim=True)
        mean_gx = (g * xhat).mean((0, 2, 3), keepdim=True)
        return s * (g - mean_g - xhat * mean_gx), None


class StatisticsAsConstants(Right):
    """The lesson's gradient: through x only, as if the mean and variance were constants."""

    @staticmethod
    def backward(ctx, g):
        _, s = ctx.saved_tensors
        return g * s, None


class UnbiasedForward(Right):
    @staticmethod
    def forward(ctx, x, eps=1e-5):
        mean = x.mean((0, 2, 3), keepdim=True)
        s = (x.var((0, 2, 3), keepdim=True) + eps).rsqrt()
        ctx.save_for_backward((x - mean) * s, s)
        return (x - mean) * s


class Stub(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, eps=1e-5):
        raise NotImplementedError

    @staticmethod
    def backward(ctx, g):
        raise NotImplementedError


class ForwardOnly(Right):
    @staticmethod
    def backward(ctx, g):
        raise NotImplementedError


def test_a_right_backward_passes(capsys):
    assert check_batchnorm_function(Right) is True
    assert "gradcheck passes" in capsys.readouterr().out


def test_the_lessons_gradient_fails_and_the_missing_terms_are_named(capsys):
    assert check_batchnorm_function(StatisticsAsConstants) is False
    out = capsys.readouterr().out
    assert "backward wrong" in out and "sum over each channel is not 0" in out


@pytest.mark.parametrize("fn, says", [(UnbiasedForward, "biased variance"), (Stub, "not attempted"),
                                      (ForwardOnly, "write it next")])
def test_other_states_are_reported_not_raised(fn, says, capsys):
    assert check_batchnorm_function(fn) is False
    assert says in capsys.readouterr().out


def test_a_class_that_is_not_a_function_is_a_clear_error():
    with pytest.raises(TypeError, match="autograd.Function"):
        check_batchnorm_function(object)
