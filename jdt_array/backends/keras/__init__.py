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

Examples:
    >>> import os
    >>> _ = os.environ.setdefault("KERAS_BACKEND", "jax")  # before Keras is imported
    >>> import keras
    >>> import numpy as np
    >>> from jdt_array.backends.keras import CEJDTLoss, FineGrainedMeanIoU
    >>> model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 1)])
    >>> model.compile(optimizer="adam", loss=CEJDTLoss(ignore_index=255),
    ...               metrics=[FineGrainedMeanIoU(4, level="I", ignore_index=255)])
    >>> images = np.ones((2, 8, 8, 3), "float32")  # (B, H, W, 3)
    >>> labels = np.zeros((2, 8, 8), "int64")  # class ids (B, H, W)
    >>> history = model.fit(images, labels, epochs=2, verbose=0)
    >>> sorted(history.history)
    ['loss', 'mIoUI']
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
    FineGrainedMeanBoundaryIoU,
    FineGrainedMeanDice,
    FineGrainedMeanIoU,
    FineGrainedMetric,
)

__all__ = [
    "CEJDTLoss",
    "DiceLoss",
    "FineGrainedMeanAccuracy",
    "FineGrainedMeanBoundaryIoU",
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
