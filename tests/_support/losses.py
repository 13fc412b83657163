"""The test side of the loss table (``jdt_array._loss_table.LOSSES``): the float64
reference of each row, by the row's ``reference`` name, and the option names that are
an adapter's own rather than the loss's."""

from __future__ import annotations

import functools
import inspect

import jdt_array
from _support.family_reference import (
    cross_entropy_reference,
    generalized_dice_reference,
    kl_div_reference,
    lovasz_hinge_reference,
    lovasz_softmax_reference,
)
from _support.reference import jdt_loss_reference
from jdt_array._loss_table import LOSSES, LossEntry


def ce_jdt_reference(logits, label, *, ce_weight=0.25, jdt_weight=0.75, **options):
    shared = {k: options[k] for k in ("ignore_index", "keep_mask", "class_axis")
              if k in options}  # fmt: skip
    return ce_weight * cross_entropy_reference(logits, label, **shared) + (
        jdt_weight * jdt_loss_reference(logits, label, **options)
    )


REFERENCES = {
    "jdt": jdt_loss_reference,
    "jaccard": functools.partial(jdt_loss_reference, alpha=1.0, beta=1.0),
    "dice": functools.partial(jdt_loss_reference, alpha=0.5, beta=0.5),
    "lovasz_softmax": lovasz_softmax_reference,
    "lovasz_hinge": lovasz_hinge_reference,
    "cross_entropy": cross_entropy_reference,
    "kl_div": kl_div_reference,
    "ce_jdt": ce_jdt_reference,
    "generalized_dice": generalized_dice_reference,
}

# Arguments of a functional form that are arrays or hooks of one call, not options.
PER_CALL = ("logits", "label", "target_prob", "keep_mask", "reduce", "misplaced",
            "jdt_options")  # fmt: skip
# Constructor arguments that are an adapter's own.
TORCH_OWN = ("self", "backward", "sync_stats", "process_group")
KERAS_OWN = ("self", "hard_label", "reduction", "name", "dtype")


def reference_of(entry: LossEntry):
    return REFERENCES[entry.reference]


def options_of(fn) -> dict[str, inspect.Parameter]:
    """The keyword options of a functional form, by name (with ``**jdt_options``, those
    of :func:`jdt_array.jdt_loss` too)."""
    params = inspect.signature(fn).parameters
    keyword = inspect.Parameter.VAR_KEYWORD
    own = {n: p for n, p in params.items() if n not in PER_CALL and p.kind is not keyword}
    if "jdt_options" in params:
        return {**options_of(jdt_array.jdt_loss), **own}
    return own


def check_constructor(
    entry: LossEntry, cls, own: tuple[str, ...], *, defaults=None, absent=()
) -> None:
    """The constructor of ``cls`` lists the options of ``entry.function`` with their
    defaults (``defaults`` overrides, e.g. Keras' channels-last ``class_axis``), all
    but ``absent`` ones; one that takes ``**options`` lists a subset."""
    defaults = defaults or {}
    params = inspect.signature(cls.__init__).parameters
    keyword = inspect.Parameter.VAR_KEYWORD
    explicit = {n: p for n, p in params.items() if n not in own and p.kind is not keyword}
    options = options_of(entry.function)
    for name, p in explicit.items():
        assert name in options, f"{cls.__name__}({name}=...) is no option of {entry.name}"
        want = defaults.get(name, options[name].default)
        assert p.default == want, f"{cls.__name__}({name}={p.default!r}), want {want!r}"
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        missing = sorted(set(options) - set(explicit) - set(absent))
        assert not missing, f"{cls.__name__} lacks the options {missing} of {entry.name}"


__all__ = ["KERAS_OWN", "LOSSES", "PER_CALL", "REFERENCES", "TORCH_OWN",
           "check_constructor", "options_of", "reference_of"]  # fmt: skip
