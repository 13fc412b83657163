"""The reports of ``jdt-array evaluate``: Markdown on stdout, JSON, CSV tables."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .. import __version__
from .evaluate import IMAGE_SCORES, Evaluation, ImageResult

__all__ = ["as_json", "markdown", "worst_images", "write_csv"]


def markdown(result: Evaluation, class_names: Sequence[str], worst: int) -> str:
    """The report: metrics, per-class table, the worst images, skipped files."""
    C = len(class_names)
    unscored = sum(1 for image in result.images if image.scores is None)
    lines = [
        f"{len(result.images)} image pairs, {C} classes, in percent"
        + (f" ({unscored} without a labelled pixel, not scored)" if unscored else "")
        + ":",
        "",
        *_table(["metric", "value"], [[k, _number(v)] for k, v in result.metrics.items()]),
    ]
    keys = list(result.per_class)
    rows = [
        [class_names[c], *(_number(result.per_class[k][c]) for k in keys)] for c in range(C)
    ]
    lines += ["", "Per class:", "", *_table(["class", *keys], rows)]
    ranked = worst_images(result.images, worst)
    if ranked:
        rows = [[image.pair.name, *map(_number, image.scores.values())] for image in ranked]
        lines += [
            "",
            f"The {len(ranked)} worst images by image-level mIoU:",
            "",
            *_table(["image", *IMAGE_SCORES], rows),
        ]
    if result.skipped:
        lines += ["", f"Skipped ({len(result.skipped)}, --skip-bad):", ""]
        lines += [f"- {problem}" for problem in result.skipped]
    return "\n".join(lines)


def worst_images(images: Sequence[ImageResult], k: int) -> list[ImageResult]:
    """The k scored images of lowest image-level mIoU (ties by name)."""
    scored = [image for image in images if image.scores is not None]
    return sorted(scored, key=lambda image: (image.scores["mIoU"], image.pair.name))[:k]


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _number(value: float) -> str:
    return "n/a" if math.isnan(value) else f"{value:.2f}"


def as_json(result: Evaluation, options: dict[str, Any]) -> dict[str, Any]:
    """Every number of the evaluation; NaN becomes null."""
    return {
        "metrics": _finite(result.metrics),
        "per_class": _finite(result.per_class),
        "images": [_image_entry(image) for image in result.images],
        "skipped": list(result.skipped),
        "options": options,
        "version": __version__,
    }


def _image_entry(image: ImageResult) -> dict[str, Any]:
    scores = image.scores or dict.fromkeys(IMAGE_SCORES)
    return {
        "name": image.pair.name,
        "pred": image.pair.pred,
        "label": image.pair.label,
        "shape": list(image.shape),
        "pixels": image.pixels,
        **_finite(scores),
    }


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def write_csv(folder: Path, result: Evaluation, class_names: Sequence[str]) -> list[Path]:
    """``images.csv`` (one row per image) and ``per_class.csv`` (one row per class)."""
    folder.mkdir(parents=True, exist_ok=True)
    written = [folder / "images.csv"]
    # the scores of each image: IMAGE_SCORES, and mBIoU with --boundary
    names = next((list(i.scores) for i in result.images if i.scores), list(IMAGE_SCORES))
    with written[0].open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["name", "pred", "label", "pixels", *names])
        for image in result.images:
            scores = image.scores or dict.fromkeys(names, "")
            writer.writerow(
                [image.pair.name, image.pair.pred, image.pair.label, image.pixels,
                 *scores.values()]
            )  # fmt: skip
    written.append(folder / "per_class.csv")
    with written[1].open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["class_id", "class", *result.per_class])
        for c, name in enumerate(class_names):
            writer.writerow([c, name, *(v[c] for v in result.per_class.values())])
    return written
