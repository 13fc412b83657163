"""FineGrainedMetrics: streaming dataset-, image- and class-level segmentation metrics."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from .. import _checks as checks
from .._array import eager_any, namespace_of
from ._batch import BatchStatistics, statistics_of
from ._options import MetricOptions
from ._state import CompactStatistics, StateLayout, append_part, compact_of, same_place
from ._summary import per_class_results, summarize

__all__ = ["FineGrainedMetrics", "check_mergeable"]

Array = Any


class FineGrainedMetrics:
    r"""mIoU, mDice and mAcc at dataset, image and class level, worst-case and calibration.

    The fine-grained metrics of Wang et al., "Revisiting Evaluation Metrics for Semantic
    Segmentation: Optimization and Evaluation of Fine-grained Intersection over Union",
    NeurIPS 2023, in percent. With tp, fp, fn the pixel counts of a class, Acc = tp /
    (tp + fn), IoU = tp / (tp + fp + fn) and Dice = 2 tp / (2 tp + fp + fn):

    * D (dataset), keys ``Acc``, ``mAccD``, ``mIoUD``, ``mDiceD``: tp, fp, fn of each class
      summed over the dataset, then the mean over classes. ``Acc`` is pixel accuracy
      (with ``classes``: over the pixels labelled with one of them).
    * I (image), ``mAccI``, ``mIoUI``, ``mDiceI``: per image the mean over the classes in
      its label, then the mean over images.
    * C (class), ``mAccC``, ``mIoUC``, ``mDiceC``: per class the mean over the images whose
      label has it, then the mean over classes.
    * Worst case: ``mIoUI{q}`` is the mean of the worst max(1, floor(q N / 100)) of the N
      image values; ``mIoUC{q}`` takes, per class, the worst q% of the images where it is
      present; ``mIoUIQ`` and ``mIoUCQ`` average q = 10, 20, ..., 100. Same for Acc, Dice.
    * ``calibration=True``: ``ECED``, ``ECEI`` (expected calibration error of the max
      probability, percent) and ``SCED``, ``SCEI`` (static calibration error per class,
      permille) over ``num_bins`` equal-width bins, pooled over the dataset (D) or per
      image then averaged (I). SCED averages all classes; SCEI averages, per image, the
      classes in its label. For class c a pixel is "correct" where label and prediction
      are both c, as in the reference code.
    * ``binary=True`` (two classes): only the foreground class 1 is scored, and it
      counts as present where label or prediction has it; an image without foreground
      in both scores 100 at level I (level C is 100 if no image has any). ``Acc`` is
      then foreground recall, and an image whose prediction has foreground but whose
      label has none scores Acc 0 (the reference divides 0 by 0 there). The same rules
      apply to the pooled counts of level D. Calibration: SCE uses class 1 only.
    * ``classes`` (a sequence of class ids, e.g. ``range(1, C)`` to leave the
      background out): only these classes enter the means (and SCED, SCEI); the
      others still count where predicted, as false positives of the class labelled
      there, as MONAI's ``include_background=False`` does. An image whose label has
      none of them is left out of level I. With ``classes=range(1, C)`` mIoUI and
      mDiceI equal MONAI's ``MeanIoU`` / ``DiceMetric(include_background=False)``.
    * ``multilabel=True``: predictions (probabilities; logits with
      ``activation="sigmoid"``; or 0/1) and 0/1 labels, both (B, C, *spatial), every
      class a binary problem (an entry is positive above ``threshold``). Each class
      follows the binary rules: present where label or prediction has it, a false
      alarm scores 0, an image with no class in label or prediction scores 100 at
      level I; level D leaves out a class in neither label nor prediction anywhere
      (100 if that is every class); ``Acc`` is the recall of all positive entries.
      ``ignore_index`` in the label drops that (pixel, class) entry only. The worst
      cases are those of these image and class values; no calibration. Level D equals
      torchmetrics' ``MultilabelJaccardIndex`` / ``MultilabelF1Score`` (macro) where
      every class occurs (torchmetrics scores an unseen class 0).

    * ``boundary=True``: boundary IoU (Cheng et al., "Boundary IoU: Improving
      Object-Centric Image Segmentation Evaluation", CVPR 2021) at the same levels,
      keys ``mBIoUD``, ``mBIoUI``, ``mBIoUC`` and the worst cases ``mBIoUI{q}``,
      ``mBIoUC{q}``, ``mBIoUIQ``, ``mBIoUCQ`` (``per_class``: ``BIoUD``, ``BIoUI``,
      ``BIoUC``): computed exactly as their ``mIoU*`` counterparts with the counts of
      the classes' boundary bands in place of their masks' (tp = ``|G_d & P_d|``,
      the predicted band ``|P_d|``, the labelled band ``|G_d|``), a class being
      present in an image where its labelled band is not empty. The band of a mask is
      the mask minus its erosion by a cube of side 2d + 1, the image surrounded by
      background, as in the paper's reference code; d = max(1, round(
      ``dilation_ratio`` x the image diagonal)) (0.02, the paper's), or
      ``boundary_width`` pixels. Dropped
      pixels belong to no mask and are counted nowhere (the counted pixels play the
      part of the image, the dropped ones of its outside). Boundary IoU weighs the
      edges of objects: a model that gets large objects right but their outlines
      wrong scores well in mIoU and poorly here. Class-id maps only (not multi-label).

    A mean over nothing (every class of ``classes`` absent from every image, say) is
    NaN, except in the binary and multi-label rules where it is 100 as above.
    :meth:`per_class` gives the per-class scores behind the means.

    Where the reference code (``MetricGroup`` of zifuwanggg/JDTLosses) fails this
    class does the sensible thing: ``ignore_index=None`` works; a class that never
    appears in label or prediction is left out of the mIoUD and mDiceD means (out of
    mAccD if never in a label, out of the level C means if never present) instead of
    making them NaN; out-of-range labels raise instead of being clamped; binary level C
    is the foreground only (the reference also averages the background class in).
    Images whose pixels are all ignored are skipped, as there.

    Memory: per image one row of integer counts, three (C,) and three scalars (plus,
    with calibration, K + 1 floats), on the input's device, O(images x classes); the
    dataset level is their sum and SCED keeps one (C, K) running sum. With
    ``compact=True`` the state is O(C) sums whatever the number of images (see
    :class:`~jdt_array.metrics.CompactStatistics`): every key but the worst cases
    (``m...Q`` and ``m...{q}``), with the same values. Each ``update`` holds a few
    temporaries the size of the batch times C (booleans; with calibration, floats),
    never a one-hot float array, so evaluating thousands of 512 x 512 images with 150
    classes streams in bounded memory.

    Synchronization: ``update`` is vectorized over the batch, keeps its state in the
    namespace and on the device of its input and never reads it back. Invalid values
    (labels outside [0, C) that are not ``ignore_index``, integer predictions out of
    range, probabilities outside [0, 1] with calibration) are counted on the device
    and raised by ``compute``, the only sync point; ``eager_checks=True`` raises them
    in ``update`` instead, at the cost of one scalar read per batch.

    Examples:
        >>> import numpy as np
        >>> from jdt_array.metrics import FineGrainedMetrics
        >>> m = FineGrainedMetrics(3, ignore_index=255)
        >>> pred = np.array([[[0, 1], [2, 2]], [[0, 0], [1, 1]]])  # class ids (B, H, W)
        >>> label = np.array([[[0, 1], [2, 1]], [[0, 0], [1, 255]]])
        >>> m.update(pred, label)  # or probabilities (B, C, H, W); once per batch
        >>> results = m.compute()
        >>> {key: round(results[key], 1) for key in ("Acc", "mIoUD", "mIoUI", "mIoUC")}
        {'Acc': 85.7, 'mIoUD': 72.2, 'mIoUI': 83.3, 'mIoUC': 75.0}
        >>> m.per_class()["IoUD"].round(1)  # the per-class table, (C,) per key
        array([100. ,  66.7,  50. ])

    ``add`` and ``value`` are aliases of ``update`` and ``compute`` for code written for
    the reference ``MetricGroup``. For ``jax.jit``, jit :meth:`statistics` (pure) and
    feed its result to :meth:`update_statistics`.

    Data-parallel evaluation over a sharded dataset: each process updates its own
    metric, then :meth:`synced` with a framework's gather (PyTorch:
    ``jdt_array.backends.torch.sync_metrics``) gives, on every process, the
    metric of all shards, whose ``compute`` equals one pass over the whole dataset.
    Inside ``shard_map``/``pmap``, ``jdt_array.backends.jax.gather_statistics`` turns
    each device's :meth:`statistics` into those of the global batch.

    Args:
        num_classes: C; labels hold class ids 0 .. C - 1 (or ``ignore_index``).
        ignore_index: label value whose pixels are dropped, or None.
        binary: two classes, foreground class 1 only (see above).
        q: the worst-case percentage of ``m...{q}`` keys, 0 < q <= 100 (unused with
            ``compact=True``, which has no worst cases).
        num_bins: K, the number of confidence bins for calibration.
        calibration: also compute ECED, ECEI, SCED, SCEI (needs probabilities).
        eager_checks: raise invalid values in ``update`` (one device sync per batch).
        classes: the class ids whose scores enter the means, or None for all.
        multilabel: (B, C, *spatial) 0/1 labels, every class a binary problem.
        threshold: multi-label: the probability above which an entry is positive.
        activation: multi-label: ``"sigmoid"`` if ``update`` gets logits.
        compact: keep O(C) sums instead of per-image counts (no worst cases).
        boundary: also compute boundary IoU (the ``mBIoU*`` keys, see above).
        dilation_ratio: the band width d as a fraction of the image diagonal.
        boundary_width: d in pixels instead (leave ``dilation_ratio`` at its default).
    """

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
    ) -> None:
        self.options = MetricOptions(
            num_classes, ignore_index, binary, num_bins, calibration, multilabel,
            threshold, activation, classes, boundary, dilation_ratio, boundary_width,
        )  # fmt: skip
        self.q = _check_q(q)
        self.eager_checks = checks.check_bool("eager_checks", eager_checks)
        compact = checks.check_bool("compact", compact)
        #: The state's arrays and how they combine (see ``jdt_array.metrics._state``).
        self.layout = StateLayout(self.options, compact=compact)
        self._batches = StateLayout(self.options, compact=False)  # what update takes
        self.reset()

    def __repr__(self) -> str:
        o = self.options
        extra = "".join(
            f", {name}={value!r}"
            for name, value, default in (
                ("classes", o.classes, None), ("multilabel", o.multilabel, False),
                ("threshold", o.threshold, 0.5), ("activation", o.activation, None),
                ("compact", self.layout.compact, False), ("boundary", o.boundary, False),
                ("dilation_ratio", o.dilation_ratio, 0.02),
                ("boundary_width", o.boundary_width, None),
            )
            if value != default
        )  # fmt: skip
        return (
            f"FineGrainedMetrics({o.num_classes}, ignore_index={o.ignore_index!r}, "
            f"binary={o.binary}, q={self.q!r}, num_bins={o.num_bins}, "
            f"calibration={o.calibration}{extra})"
        )

    def _like(self) -> FineGrainedMetrics:
        """A metric with the same settings and no image."""
        o = self.options
        return FineGrainedMetrics(
            o.num_classes, ignore_index=o.ignore_index, binary=o.binary, q=self.q,
            num_bins=o.num_bins, calibration=o.calibration, eager_checks=self.eager_checks,
            classes=o.classes, multilabel=o.multilabel, threshold=o.threshold,
            activation=o.activation, compact=self.layout.compact, boundary=o.boundary,
            dilation_ratio=o.dilation_ratio, boundary_width=o.boundary_width,
        )  # fmt: skip

    def reset(self) -> None:
        """Forget every image seen so far."""
        self._parts: list = []

    def statistics(
        self, prob_or_pred: Array, label: Array, *, class_axis: int = 1
    ) -> BatchStatistics:
        """The batch's statistics under this metric's options; pure, no state touched.

        See :func:`~jdt_array.metrics.batch_statistics` for the arguments; works under
        ``jax.jit``.
        """
        return statistics_of(prob_or_pred, label, self.options, class_axis)

    def update(self, prob_or_pred: Array, label: Array, *, class_axis: int = 1) -> None:
        """Add a batch: probabilities (B, C, ...) or integer predictions (B, ...) and
        integer labels (B, ...); ``class_axis=-1`` for channels-last probabilities.
        Multi-label: (B, C, ...) predictions and 0/1 labels."""
        self._append(self.batch_state(prob_or_pred, label, class_axis=class_axis))

    def add(self, prob_or_pred: Array, label: Array, image_file: Any = None) -> None:
        """Alias of :meth:`update` for the reference ``MetricGroup.add`` (the image file
        names it takes are not used)."""
        self.update(prob_or_pred, label)

    def update_statistics(self, stats: BatchStatistics | CompactStatistics) -> None:
        """Add the result of :meth:`statistics` (or of ``batch_statistics`` with the same
        options), e.g. computed under ``jax.jit``; or, with ``compact=True``, a
        :class:`~jdt_array.metrics.CompactStatistics` of :meth:`state_of` (jit it too,
        to keep the whole per-batch reduction in the compiled step)."""
        if self.layout.compact and isinstance(stats, CompactStatistics):
            self.layout.check(stats)
            if self.eager_checks:
                _raise_bad_values(stats, self.options)
            self._append(stats)
        else:
            self._append(self.state_of(stats))

    def batch_state(
        self, prob_or_pred: Array, label: Array, *, class_axis: int = 1
    ) -> BatchStatistics | CompactStatistics:
        """What :meth:`update` adds for this batch, on its device; the metric is left
        unchanged. A :class:`~jdt_array.metrics.BatchStatistics` (with
        ``compact=True`` a :class:`~jdt_array.metrics.CompactStatistics`), which the
        adapters keep in their own state (torchmetrics, Keras) and hand back to
        :meth:`compute`."""
        stats = self.statistics(_without_grad(prob_or_pred), label, class_axis=class_axis)
        return self.state_of(stats)

    def state_of(self, stats: BatchStatistics) -> BatchStatistics | CompactStatistics:
        """:meth:`batch_state` from the batch's :meth:`statistics` (pure: runs under
        ``jax.jit``, unless ``eager_checks`` reads the values)."""
        self._batches.check(stats)
        if self.eager_checks:
            _raise_bad_values(stats, self.options)
        return self.layout.of_batch(stats)

    def _append(self, part: Any) -> None:
        append_part(self._parts, part, self.layout.rows, self.layout.combine)

    def merge(self, other: FineGrainedMetrics) -> FineGrainedMetrics:
        """Add the images of ``other`` (e.g. another shard of the dataset); returns self.

        ``other`` must have the same options; it is left unchanged. Shards may live on
        different devices or libraries: they meet only on the host, in ``compute``.
        """
        if not isinstance(other, FineGrainedMetrics):
            raise TypeError(f"merge needs a FineGrainedMetrics, got {type(other).__name__}")
        if other is self:
            raise ValueError("cannot merge a FineGrainedMetrics into itself")
        check_mergeable(self, other)
        for part in other._parts:
            self._append(part)
        return self

    def synced(self, gather: Callable[[Any], Any]) -> FineGrainedMetrics:
        """A new metric holding the images of every replica; self is left unchanged.

        For evaluation over a dataset sharded across processes or devices, each with
        its own metric. ``gather`` is the framework's collective: it takes this
        replica's :meth:`state` (every image seen so far as one
        :class:`~jdt_array.metrics.BatchStatistics`, zero images if none; with
        ``compact=True`` one :class:`~jdt_array.metrics.CompactStatistics`) and returns
        that of all replicas, the same on each: per-image fields concatenated, the
        other fields (``sce_gap``; every compact field) added. Per-image fields are
        needed for the image- and class-level and worst-case metrics; the dataset level
        is their sum. Every replica must call it, as with any collective. The adapters
        supply it: ``jdt_array.backends.torch.sync_metrics`` for ``torch.distributed``.

        Raises:
            TypeError, ValueError: ``gather`` returned statistics of other options.
        """
        result = self._like()
        gathered = gather(self.state())
        result.layout.check(gathered)
        result._append(gathered)
        return result

    def state(self) -> BatchStatistics | CompactStatistics:
        """Every image seen so far as one state: on their device if they share one,
        else in NumPy; with no image, the empty state in NumPy (per-image fields of 0
        rows, int64 counts). Per image a :class:`~jdt_array.metrics.BatchStatistics`,
        with ``compact=True`` a :class:`~jdt_array.metrics.CompactStatistics`."""
        parts = self._parts
        if not parts:
            return self.layout.empty()
        if all(same_place(parts[0], part) for part in parts):
            return self.layout.combine(parts)
        # other libraries or devices: they meet on the host
        return self.layout.combine([self.layout.to_host(part) for part in parts])

    def compute(self, state: Any = None) -> dict[str, float]:
        """All metrics as Python floats (see the class docstring for the keys): of the
        images seen so far, or of ``state`` (a :meth:`state` of these options, e.g. an
        adapter's, or a gathered one).

        The only point that reads device data: the O(images x classes) counts are moved
        to NumPy and the divisions and worst-case sorting are done there in float64.

        Raises:
            ValueError: invalid labels or predictions were seen, or no pixel was kept.
        """
        return summarize(self.layout, self._host_state(state), self.q)

    def per_class(self, state: Any = None) -> dict[str, np.ndarray]:
        """The per-class scores behind the means, (C,) float64 arrays in percent, of the
        images seen so far or of ``state`` (as :meth:`compute`).

        Keys (region scores): ``IoUD``, ``DiceD``, ``AccD`` from the counts pooled over
        the dataset (the values mIoUD, mDiceD, mAccD average; ``IoUD`` equals
        torchmetrics' ``MulticlassJaccardIndex(average="none")``); ``IoUC``, ``DiceC``,
        ``AccC``, per class the mean over the images where it is present (the values
        mIoUC, ... average); ``IoUI``, ``DiceI``, per class the mean over the images
        where label or prediction has it, a false alarm scoring 0 (no ``AccI``: it
        would equal ``AccC``). mIoUI is not their mean: it averages per image first.
        In the binary and multi-label rules "present" is "in label or prediction", so
        level I and C agree.

        NaN marks a class that is not scored (outside ``classes``; class 0 if binary)
        or has nothing to average: at level D (multi-class) a class in neither label
        nor prediction (AccD: not in the label), at level D (binary, multi-label) a
        class in neither; at level I a class in no image's label or prediction; at
        level C a class present in no image.

        Raises:
            ValueError: as :meth:`compute`.
        """
        host = self._host_state(state)
        compact = host if self.layout.compact else compact_of(np, host, self.options)
        return {
            key: np.asarray(value, dtype=np.float64)
            for key, value in per_class_results(np, compact, self.options).items()
        }

    def _host_state(self, state: Any = None) -> BatchStatistics | CompactStatistics:
        """The state on the host, after raising for what cannot be summarized."""
        if state is None:
            parts = [self.layout.to_host(part) for part in self._parts]
            host = self.layout.combine(parts) if parts else self.layout.empty()
        else:
            self.layout.check(state, "state")
            host = self.layout.to_host(state)
        compact = self.layout.compact
        if (int(host.images) if compact else host.kept_count.shape[0]) == 0:
            raise ValueError("compute() needs at least one update() with a kept pixel")
        _raise_bad_values(host, self.options)
        if (int(host.evaluated) if compact else np.count_nonzero(host.kept_count)) == 0:
            what = "entry" if self.options.multilabel else "pixel"
            raise ValueError(
                f"no pixel was evaluated: every label {what} was ignore_index="
                f"{self.options.ignore_index!r}"
            )
        return host

    def value(self) -> dict[str, float]:
        """Alias of :meth:`compute` for the reference ``MetricGroup.value``."""
        return self.compute()


def check_mergeable(a: FineGrainedMetrics, b: FineGrainedMetrics) -> None:
    """Raise unless the states of ``a`` and ``b`` can be merged: the same options."""
    if (a.options, a.q, a.layout.compact) != (b.options, b.q, b.layout.compact):
        raise ValueError(f"cannot merge metrics with other options: {a!r} and {b!r}")


def _check_q(q: Any) -> float:
    """``q`` as given (an int stays an int, for the key), checked to be in (0, 100]."""
    if checks.check_real("q", q, low=0.0, strict=True) > 100:
        raise ValueError(f"q is a percentage of images, 0 < q <= 100, got {q!r}")
    return q


def _without_grad(x: Array) -> Array:
    """``x`` without autograd history, so stored statistics do not keep graphs alive.

    Duck-typed (PyTorch tensors have ``detach`` and ``requires_grad``), so that this
    module imports no framework; other arrays pass through.
    """
    if getattr(x, "requires_grad", False) and callable(getattr(x, "detach", None)):
        return x.detach()
    return x


def _raise_bad_values(stats: Any, options: MetricOptions) -> None:
    """Raise for the invalid pixels that :func:`batch_statistics` counted (in a batch
    or in a state of either layout)."""
    xp = namespace_of(bad_label=stats.bad_label)
    what = "entries" if options.multilabel else "pixels"
    ids = "0 or 1" if options.multilabel else f"class ids in [0, {options.num_classes})"
    bad_label = f"label holds values that are not {ids} or ignore_index"
    if eager_any(xp, stats.bad_label > 0, bad_label):
        if options.multilabel:
            raise ValueError(
                f"label holds {int(xp.sum(stats.bad_label))} {what} that are neither 0, "
                f"1 nor ignore_index={options.ignore_index!r}"
            )
        raise ValueError(
            f"label holds {int(xp.sum(stats.bad_label))} pixels with class ids outside "
            f"[0, {options.num_classes}) that are not ignore_index="
            f"{options.ignore_index!r}; pass ignore_index to drop them"
        )
    if eager_any(xp, stats.bad_prediction > 0, "prob_or_pred holds invalid values"):
        count = int(xp.sum(stats.bad_prediction))
        if options.calibration:
            raise ValueError(
                f"prob_or_pred holds {count} kept pixels with probabilities outside "
                "[0, 1] or NaN; calibration needs probabilities (e.g. a softmax), not "
                "logits"
            )
        if options.multilabel:
            if options.activation == "sigmoid":
                raise ValueError(f"prob_or_pred holds {count} kept entries with NaN logits")
            raise ValueError(
                f"prob_or_pred holds {count} kept entries that are neither probabilities "
                "in [0, 1] nor 0/1 predictions; pass activation='sigmoid' for logits"
            )
        raise ValueError(
            f"prob_or_pred holds {count} kept pixels with integer predictions outside "
            f"[0, {options.num_classes})"
        )
