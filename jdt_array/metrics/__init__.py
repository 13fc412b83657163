"""Fine-grained evaluation metrics for semantic segmentation, on any array library.

mIoU, mDice and mAcc at dataset (D), image (I) and class (C) level, their worst-case
variants and calibration errors, as defined by Wang et al., "Revisiting Evaluation
Metrics for Semantic Segmentation: Optimization and Evaluation of Fine-grained
Intersection over Union", NeurIPS 2023: the metrics the JDT losses are aligned with.
"""

from ._batch import BatchStatistics, batch_statistics
from ._fine_grained import FineGrainedMetrics
from ._state import CompactStatistics

__all__ = ["BatchStatistics", "CompactStatistics", "FineGrainedMetrics", "batch_statistics"]
