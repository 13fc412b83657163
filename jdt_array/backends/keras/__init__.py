"""Keras 3 adapter: the losses as ``keras.losses.Loss`` and the fine-grained metrics as
``keras.metrics.Metric``, for Keras' JAX and PyTorch backends.

On those backends Keras' tensors are JAX arrays and torch tensors, which the core
handles directly: a loss here is the functional form called on them (the JDT losses
through the lean backward of :mod:`jdt_array.backends.jax` / ``.torch``), so it runs
inside ``model.fit``, compiled or not. The TensorFlow backend has no array-API
namespace; there the constructors raise.

Keras conventions: ``call(y_true, y_pred)`` with ``y_pred`` the logits (or
probabilities with ``activation=None``), channels last (``class_axis=-1``), hard labels
(B, *spatial) or (B, *spatial, 1) as ``SparseCategoricalCrossentropy`` takes them. Keras'
``Loss.__call__`` converts the labels to floats; the losses turn class ids and 0/1
masks back into integers (``keras_label``), so they keep the meaning of a hard label.

Example::

    import keras
    from jdt_array.backends.keras import CEJDTLoss, FineGrainedMeanIoU

    model.compile(optimizer="adam", loss=CEJDTLoss(ignore_index=255),
                  metrics=[FineGrainedMeanIoU(19, level="I", ignore_index=255)])
    model.fit(images, labels, epochs=2)      # images (B, H, W, 3), labels (B, H, W)
"""

from .losses import (
    CEJDTLoss,
    DiceLoss,
    GeneralizedDiceLoss,
    JaccardLoss,
    JDTLoss,
    LovaszHingeLoss,
    LovaszSoftmaxLoss,
    TverskyLoss,
)
from .metrics import (
    FineGrainedMeanAccuracy,
    FineGrainedMeanDice,
    FineGrainedMeanIoU,
    FineGrainedMetric,
)

__all__ = [
    "CEJDTLoss",
    "DiceLoss",
    "FineGrainedMeanAccuracy",
    "FineGrainedMeanDice",
    "FineGrainedMeanIoU",
    "FineGrainedMetric",
    "GeneralizedDiceLoss",
    "JDTLoss",
    "JaccardLoss",
    "LovaszHingeLoss",
    "LovaszSoftmaxLoss",
    "TverskyLoss",
]
