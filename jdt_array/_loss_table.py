"""The one table of the package's losses: each loss function with its hand-derived
gradient and the names of its forms in the adapters and the tests.

Everything that lists the losses is built from :data:`LOSSES`: the registry of hand
gradients behind :func:`jdt_array.value_and_grad`, the Keras registrations, and the
test matrix (``tests/_support/losses.py``), which also checks that every form named
here exists with the options of its function. Adding a loss is one row here, its
module and the forms named in the row.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from .compound import (
    ce_jdt_loss,
    ce_jdt_value_and_grad,
    generalized_dice_loss,
    generalized_dice_value_and_grad,
)
from .cross_entropy import (
    cross_entropy,
    cross_entropy_value_and_grad,
    kl_div,
    kl_div_value_and_grad,
)
from .jdt import jdt_loss, jdt_value_and_grad
from .lovasz import (
    lovasz_hinge_loss,
    lovasz_hinge_value_and_grad,
    lovasz_softmax_loss,
    lovasz_softmax_value_and_grad,
)
from .named_losses import (
    dice_loss,
    dice_value_and_grad,
    jaccard_loss,
    jaccard_value_and_grad,
    tversky_loss,
)

__all__ = ["LOSSES", "LossEntry", "entry_of"]


class LossEntry(NamedTuple):
    """One loss and its forms."""

    function: Callable  # the functional form, ``function(logits, label, **options)``
    hand_gradient: Callable  # ``(loss, d loss / d logits)`` by hand, same arguments
    torch_module: str | None  # the ``torch.nn.Module`` in ``jdt_array.backends.torch``
    keras_class: str | None  # the ``keras.losses.Loss`` in ``jdt_array.backends.keras``
    jax_form: str | None  # the custom_vjp / axis_name form in ``jdt_array.backends.jax``
    reference: str  # the float64 reference in ``tests/_support`` (by name)

    @property
    def name(self) -> str:
        return self.function.__name__


LOSSES: tuple[LossEntry, ...] = (
    LossEntry(
        function=jdt_loss,
        hand_gradient=jdt_value_and_grad,
        torch_module="JDTLoss",
        keras_class="JDTLoss",
        jax_form="jdt_loss",
        reference="jdt",
    ),
    LossEntry(
        function=jaccard_loss,
        hand_gradient=jaccard_value_and_grad,
        torch_module="JaccardLoss",
        keras_class="JaccardLoss",
        jax_form="jaccard_loss",
        reference="jaccard",
    ),
    LossEntry(
        function=dice_loss,
        hand_gradient=dice_value_and_grad,
        torch_module="DiceLoss",
        keras_class="DiceLoss",
        jax_form="dice_loss",
        reference="dice",
    ),
    LossEntry(
        function=tversky_loss,
        hand_gradient=jdt_value_and_grad,
        torch_module="TverskyLoss",
        keras_class="TverskyLoss",
        jax_form="tversky_loss",
        reference="jdt",
    ),
    LossEntry(
        function=lovasz_softmax_loss,
        hand_gradient=lovasz_softmax_value_and_grad,
        torch_module="LovaszSoftmaxLoss",
        keras_class="LovaszSoftmaxLoss",
        jax_form="lovasz_softmax_loss",
        reference="lovasz_softmax",
    ),
    LossEntry(
        function=lovasz_hinge_loss,
        hand_gradient=lovasz_hinge_value_and_grad,
        torch_module="LovaszHingeLoss",
        keras_class="LovaszHingeLoss",
        jax_form="lovasz_hinge_loss",
        reference="lovasz_hinge",
    ),
    LossEntry(
        function=cross_entropy,
        hand_gradient=cross_entropy_value_and_grad,
        torch_module="CrossEntropyLoss",
        keras_class=None,
        jax_form=None,
        reference="cross_entropy",
    ),
    LossEntry(
        function=kl_div,
        hand_gradient=kl_div_value_and_grad,
        torch_module="KLDivLoss",
        keras_class=None,
        jax_form=None,
        reference="kl_div",
    ),
    LossEntry(
        function=ce_jdt_loss,
        hand_gradient=ce_jdt_value_and_grad,
        torch_module="CEJDTLoss",
        keras_class="CEJDTLoss",
        jax_form=None,
        reference="ce_jdt",
    ),
    LossEntry(
        function=generalized_dice_loss,
        hand_gradient=generalized_dice_value_and_grad,
        torch_module="GeneralizedDiceLoss",
        keras_class="GeneralizedDiceLoss",
        jax_form=None,
        reference="generalized_dice",
    ),
)


def entry_of(function: Callable) -> LossEntry | None:
    """The row of ``function``, or None for a function that is not a loss here."""
    return _BY_FUNCTION.get(function)


_BY_FUNCTION = {entry.function: entry for entry in LOSSES}
