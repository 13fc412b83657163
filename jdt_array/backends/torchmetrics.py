"""torchmetrics adapter: the fine-grained metrics as a ``torchmetrics.Metric``, for
PyTorch Lightning's ``self.log_dict`` and for DDP evaluation.

The state is what :func:`jdt_array.metrics.batch_statistics` returns, registered with
``add_state``: the per-image counts (and calibration gaps) as lists that
synchronisation concatenates over the processes (``dist_reduce_fx="cat"``), the
per-class calibration sums added (``"sum"``). torchmetrics then does the DDP
gathering, and ``compute()`` hands the gathered images to
:class:`jdt_array.metrics.FineGrainedMetrics`, so the values are those of one process on
the whole data.

Examples:
    >>> import torch
    >>> from jdt_array.backends.torchmetrics import FineGrainedMetrics
    >>> metric = FineGrainedMetrics(3, ignore_index=255)
    >>> metric.update(torch.tensor([[[0, 1], [2, 2]]]), torch.tensor([[[0, 1], [2, 1]]]))
    >>> round(metric.compute()["mIoUD"].item(), 2)  # classes 0, 1, 2: IoU 1, 0.5, 0.5
    66.67

In a ``LightningModule``::

    class Segmenter(lightning.LightningModule):
        def __init__(self):
            super().__init__()
            self.metrics = FineGrainedMetrics(19, ignore_index=255)

        def validation_step(self, batch, _):
            images, labels = batch
            self.metrics.update(self(images), labels)

        def on_validation_epoch_end(self):
            self.log_dict(self.metrics.compute())
            self.metrics.reset()
"""

from __future__ import annotations

from typing import Any

try:
    import torch
    import torchmetrics
    from torchmetrics.utilities import dim_zero_cat
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jdt_array.backends.torchmetrics needs torchmetrics: pip install "
        "'jdt-array[torchmetrics]'",
        name=err.name,
    ) from err

from ..metrics import BatchStatistics
from ..metrics import FineGrainedMetrics as _CoreMetrics

__all__ = ["FineGrainedMetrics"]

# The per-image fields of BatchStatistics, concatenated over batches and processes.
_PER_IMAGE = ("intersection", "pred_count", "label_count", "bad_label", "bad_prediction")
_CALIBRATION_PER_IMAGE = ("ece_gap", "sce_image")


class FineGrainedMetrics(torchmetrics.Metric):
    """:class:`jdt_array.metrics.FineGrainedMetrics` as a ``torchmetrics.Metric``.

    The constructor of the core class (``num_classes``, ``ignore_index``, ``binary``,
    ``q``, ``num_bins``, ``calibration``, ``eager_checks``), plus ``class_axis`` of the
    probabilities given to ``update`` and torchmetrics' own keyword arguments.
    ``update(prob_or_pred, label)`` takes probabilities or logits (B, C, *spatial)
    (their argmax is the prediction; calibration needs probabilities) or integer
    predictions (B, *spatial), and integer labels (B, *spatial). ``compute()``
    returns the core's keys (``mIoUD``, ``mIoUI``, ``mIoUC``, ``mIoUI1``, ...) with
    0-d float64 tensors as values, in percent, over the images of every process.

    Raises (in ``compute``):
        ValueError: as the core class: invalid labels or predictions were seen, or no
            pixel was kept.
    """

    is_differentiable = False
    higher_is_better = True
    full_state_update = False

    def __init__(
        self,
        num_classes: int,
        *,
        ignore_index: int | None = None,
        binary: bool = False,
        q: float = 1,
        num_bins: int = 10,
        calibration: bool = False,
        eager_checks: bool = False,
        class_axis: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._arguments = dict(
            ignore_index=ignore_index, binary=binary, q=q, num_bins=num_bins,
            calibration=calibration, eager_checks=eager_checks,
        )  # fmt: skip
        self.num_classes, self.class_axis = num_classes, class_axis
        core = self._core()  # checks the options now
        fields = _PER_IMAGE + (_CALIBRATION_PER_IMAGE if calibration else ())
        for name in fields:
            self.add_state(name, default=[], dist_reduce_fx="cat")
        if calibration:
            shape = (core.options.calibration_classes, num_bins)
            self.add_state(
                "sce_gap", default=torch.zeros(shape, dtype=torch.float64),
                dist_reduce_fx="sum",
            )  # fmt: skip

    def _core(self) -> _CoreMetrics:
        return _CoreMetrics(self.num_classes, **self._arguments)

    def update(self, prob_or_pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add a batch: probabilities (classes on ``class_axis``) or class ids."""
        core = self._core()
        stats = core.statistics(prob_or_pred.detach(), label, class_axis=self.class_axis)
        if self._arguments["eager_checks"]:
            core.update_statistics(stats)  # raises on invalid values
        for name in _PER_IMAGE + _CALIBRATION_PER_IMAGE:
            value = getattr(stats, name)
            if value is not None:
                getattr(self, name).append(value)
        if stats.sce_gap is not None:
            self.sce_gap += stats.sce_gap.to(torch.float64)

    def compute(self) -> dict[str, torch.Tensor]:
        """The metrics of the core ``FineGrainedMetrics.compute``, as tensors."""
        core = self._core()
        fields = {name: self._gathered(name) for name in _PER_IMAGE}
        if self._arguments["calibration"]:
            fields.update({name: self._gathered(name) for name in _CALIBRATION_PER_IMAGE})
            fields["sce_gap"] = self.sce_gap
        core.update_statistics(BatchStatistics(**fields))
        return {
            key: torch.tensor(value, dtype=torch.float64, device=self.device)
            for key, value in core.compute().items()
        }

    def _gathered(self, name: str) -> torch.Tensor:
        value = getattr(self, name)
        if isinstance(value, list) and not value:  # no update: no image
            width = {"bad_label": 0, "bad_prediction": 0, "sce_image": 0}.get(name)
            shape = (0,) if width == 0 else (0, self._width(name))
            dtype = torch.float64 if name in _CALIBRATION_PER_IMAGE else torch.int64
            return torch.zeros(shape, dtype=dtype, device=self.device)
        return dim_zero_cat(value)

    def _width(self, name: str) -> int:
        return self._arguments["num_bins"] if name == "ece_gap" else self.num_classes
