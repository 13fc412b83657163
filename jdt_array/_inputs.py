"""The one input preparation of the pixel losses: namespace, kernels, checks and
activation, resolved once per call.

:func:`prepare` is the first step of every JDT loss, its hand gradient, the
cross-entropy parts and the adapters' lean backward passes: it finds the array
namespace ``xp`` of the arguments (refusing mixed libraries and devices), picks the
kernel set of that namespace (which reads the kernel setting of the library once),
checks shapes, dtypes and values, and lets the activation object put the label in the
form the statistics take. Everything after it takes what it returns, a
:class:`Prepared`, and asks nothing of the arguments again.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from . import _checks as checks
from . import _kernels
from ._activation import Activation, activation_of
from ._array import Array, compute_dtype, device, namespace_of

__all__ = ["Prepared", "prepare", "with_probabilities"]


class Prepared(NamedTuple):
    """Checked inputs of a pixel loss, with everything decided about them."""

    xp: Any
    kernels: _kernels.Generic  # the kernel set of ``xp`` for this call
    activation: Activation
    logits: Array  # as given
    label: Array  # class ids (``class_ids``) or a floating label shaped like the logits
    keep_mask: Array | None  # as given
    keep: Array | None  # the kept pixels (or entries): keep_mask and not ignore_index
    class_axis: int  # non-negative
    ignore_index: int | None
    norm: float
    hard: bool  # the label was integer or bool: active_classes_mode_hard applies
    class_ids: bool  # the label holds class ids for the hard-label kernels
    class_weights: Array | None  # (C,) in the accumulation dtype
    prob: Array | None = None  # the activation's probabilities, once computed

    @property
    def num_classes(self) -> int:
        return self.logits.shape[self.class_axis]

    @property
    def loss_shape(self) -> tuple[int, int]:
        """(B, C), the shape of every statistic."""
        return (self.logits.shape[0], self.num_classes)

    @property
    def dtype(self) -> Any:
        """The accumulation dtype: float64 for float64 logits, float32 otherwise."""
        return compute_dtype(self.xp, self.logits.dtype)


def prepare(
    logits: Array,
    label: Array,
    keep_mask: Array | None = None,
    *,
    class_axis: int = 1,
    ignore_index: int | None = None,
    activation: str | None = "softmax",
    norm: float = 1,
    class_weights: Any = None,
    check_values: bool = True,
    hard_only: str | None = None,
) -> Prepared:
    """Check the inputs of a pixel loss and decide everything about them once.

    ``check_values=False`` skips reading the label and the probabilities (for a
    backward pass, whose forward pass checked the same arrays). Probabilities are
    not computed here: a fused kernel takes the logits as they are (see
    :func:`with_probabilities`). ``hard_only``, the name of a loss defined for hard
    labels only, refuses a floating label.
    """
    xp = namespace_of(logits=logits, label=label, keep_mask=keep_mask)
    if hard_only is not None:
        checks.refuse_soft_label(xp, label, hard_only)
    checks.check_logits(xp, logits)
    axis = checks.normalize_class_axis(class_axis, logits.ndim, tuple(logits.shape))
    ignore_index = checks.check_ignore_index(ignore_index)
    if keep_mask is not None:
        checks.check_keep_mask(xp, keep_mask, logits, axis)
    act = activation_of(activation)
    kernels = _kernels.kernels_for(xp)
    labels = act.labels(
        xp, kernels, logits, label, keep_mask, axis, ignore_index,
        check_values=check_values,
    )  # fmt: skip
    if check_values:
        act.check_input(xp, logits, labels.keep, axis)
    dtype = compute_dtype(xp, logits.dtype)
    weights = checks.class_weights_array(
        xp, class_weights, logits.shape[axis], dtype, device(logits)
    )
    return Prepared(
        xp, kernels, act, logits, labels.label, keep_mask, labels.keep,
        axis, ignore_index, norm, labels.hard, labels.class_ids, weights,
    )  # fmt: skip


def with_probabilities(inputs: Prepared) -> Prepared:
    """``inputs`` with the activation's probabilities computed (once)."""
    if inputs.prob is not None:
        return inputs
    prob = inputs.activation.probabilities(
        inputs.xp, inputs.kernels, inputs.logits, inputs.class_axis, inputs.keep
    )
    return inputs._replace(prob=prob)
