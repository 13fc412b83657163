"""torchmetrics adapter: the fine-grained metrics as a ``torchmetrics.Metric``, for
PyTorch Lightning's ``self.log_dict`` and for DDP evaluation.

The state is the core metric's (:class:`jdt_array.metrics.FineGrainedMetrics`, built
once), registered field by field from its layout with ``add_state``: the per-image
fields as lists that synchronisation concatenates over the processes
(``dist_reduce_fx="cat"``), each starting from the core's empty field (a (0, C) int64
tensor, say), so a process that never saw an image syncs like the others; the summed
fields (``sce_gap``; every field with ``compact=True``) as tensors that synchronisation
adds (``"sum"``). ``update`` adds what the core's ``batch_state`` gives for the batch,
``compute`` hands the state back to the core's ``compute``: the values are those of one
process on the whole data, and no score is computed here.

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

from collections.abc import Iterable
from typing import Any

try:
    import torch
    import torchmetrics
    from torchmetrics.utilities import dim_zero_cat
    from torchmetrics.utilities.distributed import gather_all_tensors
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "jdt_array.backends.torchmetrics needs torchmetrics: pip install "
        "'jdt-array[torchmetrics]'",
        name=err.name,
    ) from err

from .. import _checks as checks
from ..metrics import FineGrainedMetrics as _CoreMetrics
from ..metrics._fine_grained import check_mergeable
from ..metrics._state import append_part

__all__ = ["FineGrainedMetrics"]


class FineGrainedMetrics(torchmetrics.Metric):
    """:class:`jdt_array.metrics.FineGrainedMetrics` as a ``torchmetrics.Metric``.

    The constructor of the core class (``num_classes``, ``ignore_index``, ``binary``,
    ``q``, ``num_bins``, ``calibration``, ``eager_checks``, ``classes``,
    ``multilabel``, ``threshold``, ``activation``, ``compact``, ``boundary``,
    ``dilation_ratio``, ``boundary_width``), plus ``class_axis`` of
    the probabilities given to ``update`` and torchmetrics' own keyword arguments.
    ``update(prob_or_pred, label)`` takes probabilities or logits (B, C, *spatial)
    (their argmax is the prediction; calibration needs probabilities) or integer
    predictions (B, *spatial), and integer labels (B, *spatial); multi-label,
    (B, C, *spatial) predictions and 0/1 labels. ``compute()`` returns the core's
    keys (``mIoUD``, ``mIoUI``, ``mIoUC``, ``mIoUI1``, ...) with 0-d float64 tensors as
    values, in percent, over the images of every process; ``per_class()`` the core's
    per-class (C,) scores, synced the same way.

    ``forward(prob_or_pred, label)`` (``metric(prob_or_pred, label)``) returns the
    metrics of this batch alone and adds it to the state; if the batch cannot be
    summarized (every pixel ignored, invalid values) it raises and adds nothing, so
    what was accumulated before stays. With ``dist_sync_on_step=True`` the batch's
    values are those of every process's batch.

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
        classes: Iterable[int] | None = None,
        multilabel: bool = False,
        threshold: float = 0.5,
        activation: str | None = None,
        compact: bool = False,
        boundary: bool = False,
        dilation_ratio: float | None = 0.02,
        boundary_width: int | None = None,
        class_axis: int = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._core = _CoreMetrics(
            num_classes, ignore_index=ignore_index, binary=binary, q=q,
            num_bins=num_bins, calibration=calibration, eager_checks=eager_checks,
            classes=classes, multilabel=multilabel, threshold=threshold,
            activation=activation, compact=compact, boundary=boundary,
            dilation_ratio=dilation_ratio, boundary_width=boundary_width,
        )  # fmt: skip
        self.num_classes = num_classes
        self.class_axis = checks.check_class_axis(class_axis)
        self._forward_part: tuple | None = None
        empty = self._core.layout.empty()
        for name, field in self._core.layout.fields.items():
            if field.per_image:
                self.add_state(name, default=[], dist_reduce_fx="cat")
            else:
                default = torch.asarray(getattr(empty, name))
                self.add_state(name, default=default, dist_reduce_fx="sum")
        self._start_lists()

    def _start_lists(self) -> None:
        """Put the core's empty field, e.g. a (0, C) int64 tensor, first in each
        per-image list: a process without images then syncs arrays of the right shape
        and dtype (torchmetrics would send an empty float list)."""
        empty = self._core.layout.empty()
        for name, field in self._core.layout.fields.items():
            if field.per_image:
                value = torch.asarray(getattr(empty, name), device=self.device)
                getattr(self, name).append(value)

    def reset(self) -> None:
        """Forget every image seen so far (on every process)."""
        super().reset()
        self._start_lists()

    def update(self, prob_or_pred: torch.Tensor, label: torch.Tensor) -> None:
        """Add a batch: probabilities (classes on ``class_axis``) or class ids."""
        cached, self._forward_part = self._forward_part, None
        if cached is not None and cached[0] is prob_or_pred and cached[1] is label:
            part = cached[2]  # forward() computed this batch's part already
        else:
            part = self._core.batch_state(prob_or_pred, label, class_axis=self.class_axis)
        for name, field in self._core.layout.fields.items():
            value = getattr(part, name)
            if field.per_image:
                append_part(getattr(self, name), value, _rows, torch.cat)
            else:
                setattr(self, name, getattr(self, name) + value)

    def forward(self, prob_or_pred: torch.Tensor, label: torch.Tensor) -> Any:
        """Add the batch to the state and return its metrics alone (see the class
        docstring); nothing is added when they raise."""
        part = self._core.batch_state(prob_or_pred, label, class_axis=self.class_axis)
        batch = self._synced_part(part) if self.dist_sync_on_step else part
        value = self._as_tensors(self._core.compute(batch))  # raises before any change
        self._forward_part = (prob_or_pred, label, part)
        self.update(prob_or_pred, label)
        self._forward_cache = value
        return value

    def compute(self) -> dict[str, torch.Tensor]:
        """The metrics of the core ``FineGrainedMetrics.compute``, as tensors."""
        return self._as_tensors(self._core.compute(self._state()))

    def per_class(self) -> dict[str, torch.Tensor]:
        """The core's :meth:`~jdt_array.metrics.FineGrainedMetrics.per_class` of the
        images of every process, as (C,) float64 tensors in percent."""
        with self.sync_context(should_sync=self.sync_on_compute):
            table = self._core.per_class(self._state())
        return {
            key: torch.asarray(value, dtype=torch.float64, device=self.device)
            for key, value in table.items()
        }

    def merge_state(self, incoming_state: dict[str, Any] | torchmetrics.Metric) -> None:
        """torchmetrics' ``merge_state``, refusing the state of other options with the
        core's message instead of failing later (or merging silently)."""
        if isinstance(incoming_state, FineGrainedMetrics):
            check_mergeable(self._core, incoming_state._core)
        elif isinstance(incoming_state, dict):
            layout = self._core.layout
            values = {
                name: _gathered(incoming_state[name]) if field.per_image else
                incoming_state[name]
                for name, field in layout.fields.items() if name in incoming_state
            }  # fmt: skip
            layout.check(layout.type(**values), "incoming state")
        super().merge_state(incoming_state)

    def _state(self) -> Any:
        """The torchmetrics state as one core state (per-image lists concatenated)."""
        layout = self._core.layout
        return layout.type(
            **{
                name: _gathered(getattr(self, name)) if field.per_image else
                getattr(self, name)
                for name, field in layout.fields.items()
            }
        )  # fmt: skip

    def _synced_part(self, part: Any) -> Any:
        """A batch's part gathered over the processes: per-image fields concatenated,
        the others added."""
        if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return part
        values = {}
        for name, field in self._core.layout.fields.items():
            parts = gather_all_tensors(getattr(part, name), group=self.process_group)
            values[name] = torch.cat(parts) if field.per_image else sum(parts)
        return self._core.layout.type(**values)

    def _as_tensors(self, results: dict[str, float]) -> dict[str, torch.Tensor]:
        return {
            key: torch.tensor(value, dtype=torch.float64, device=self.device)
            for key, value in results.items()
        }


def _rows(value: torch.Tensor) -> int:
    return value.shape[0]


def _gathered(value: Any) -> torch.Tensor:
    """A per-image state field, a list of parts (or one tensor after a sync), as one
    tensor."""
    return dim_zero_cat(value) if isinstance(value, list) else value
