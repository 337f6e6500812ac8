"""While a probe calls the student's layer, torch's own normalization refuses to run.

This is the in-kernel half of the rule that a layer must do its own math; student code could undo it, so
the judge also reads the solution cell's source (course_judge.audit). Here it turns honest delegation into
a recorded DelegationError, which the judge reports with the reason.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn


class DelegationError(RuntimeError):
    """Raised by torch's normalization functions while a probe runs the student's own implementation."""


_FUNCTIONAL = ("batch_norm", "layer_norm", "instance_norm", "group_norm")
_TORCH = ("batch_norm", "layer_norm", "instance_norm", "group_norm", "native_batch_norm", "native_layer_norm",
          "native_group_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training")
_MODULES = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm, nn.modules.instancenorm._InstanceNorm)


@contextlib.contextmanager
def own_implementation(layer: str) -> Iterator[None]:
    """While active, torch's own normalization raises DelegationError."""

    def refuse(name: str) -> Callable:
        def raiser(*args, **kwargs):
            raise DelegationError(f"{layer} called torch's {name}")

        return raiser

    saved = []
    for owner, names in ((F, _FUNCTIONAL), (torch, _TORCH)):
        for name in names:
            if hasattr(owner, name):
                saved.append((owner, name, getattr(owner, name)))
                setattr(owner, name, refuse(f"{owner.__name__}.{name}"))
    for cls in _MODULES:
        saved.append((cls, "forward", cls.__dict__.get("forward")))
        cls.forward = refuse(f"nn.{cls.__name__}")
    try:
        yield
    finally:
        for owner, name, original in reversed(saved):
            if original is None:
                delattr(owner, name)
            else:
                setattr(owner, name, original)


def call_own(layer: str, fn: Callable, *args: object, **kwargs: object) -> object:
    """fn(*args, **kwargs) with torch's normalization refused (`layer` names the student's layer)."""
    with own_implementation(layer):
        return fn(*args, **kwargs)
