"""The catalogue of known-wrong and correct-alternative implementations, one module per notebook.

Each module `qN.py` defines `NOTEBOOK` (e.g. "Q3") and `VARIANTS`, a list of `Variant`. The mutation
tests (tests/test_mutation.py) run every variant through the harness: a mistake must lose points on the
tests named in `fails` (where `names` is given, a failing test's verdict must record that catalogued mistake, by
its course_lib.mistakes id; where `says` is given, a failing test's message must say that phrase); a correct
alternative (`mistake=None`) must get full marks. The demo class of `make grade` draws its flawed
students from here too.
"""

from __future__ import annotations

import importlib
import pkgutil
from dataclasses import dataclass


@dataclass(frozen=True)
class Variant:
    """One implementation of one solution cell, written out in full (`code`) or as edits of the reference."""

    name: str
    solution: str  # grade_id of the solution cell it replaces
    mistake: str | None = None  # one sentence; None for a correct alternative
    fails: tuple[str, ...] = ()  # test grade_ids that must lose points
    names: str | None = None  # the catalogued mistake (course_lib.mistakes id) a failing test's verdict must record
    says: str | None = None  # a phrase the failing test's message must contain (case-insensitive)
    code: str | None = None
    edits: tuple[tuple[str, str], ...] = ()

    @property
    def correct(self) -> bool:
        return self.mistake is None

    def source(self, reference: str) -> str:
        """The cell's code: `code`, or the reference with each (old, new) edit applied exactly once."""
        if self.code is not None:
            return self.code
        text = reference
        for old, new in self.edits:
            count = text.count(old)
            if count != 1:
                raise ValueError(f"variant {self.name!r}: {old!r} occurs {count} times in the reference solution")
            text = text.replace(old, new)
        if not self.edits:
            raise ValueError(f"variant {self.name!r} has neither code nor edits")
        return text


def catalogue() -> dict[str, list[Variant]]:
    """Every notebook's variants: {"Q3": [...], ...}."""
    found = {}
    for info in pkgutil.iter_modules(__path__):
        module = importlib.import_module(f"{__name__}.{info.name}")
        if hasattr(module, "VARIANTS"):
            found[module.NOTEBOOK] = list(module.VARIANTS)
    return found


def find(notebook: str, name: str) -> Variant:
    """The variant `name` of a notebook ("Q3")."""
    for variant in catalogue().get(notebook, []):
        if variant.name == name:
            return variant
    raise KeyError(f"{notebook} has no variant named {name!r}")
