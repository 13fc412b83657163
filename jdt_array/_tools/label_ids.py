"""Ids for ``jdt-array evaluate``: from raw ids to the class ids the metric counts.

The metric core receives ids in one encoding: class ids 0 .. C - 1, :data:`IGNORED`
for label pixels that are dropped, and C for predicted pixels of no class (ids that
``--id-map`` maps to no class), which count as wrong predictions. ``--id-map`` and
``--class-names`` files are read here.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .label_files import LabelFileError

__all__ = ["IGNORED", "IdTable", "load_class_names", "load_id_map", "lookup"]

IGNORED = -1  # the label value of dropped pixels, in the encoding given to the metric
_TABLE_SPAN = 1 << 20  # ids spanning at most this many values map through a table


@dataclass(frozen=True)
class IdTable:
    """How raw ids become the class ids the metric counts.

    Without an id map, labels hold class ids 0 .. C - 1 or ``ignore_index``, and
    predictions class ids; anything else is an error naming the file. With an id map
    (raw id -> class id), a raw label id that maps to no class id (absent, or mapped
    to ``ignore_index``) is dropped, and a raw predicted id that maps to no class id
    is a prediction of no class, :attr:`void`: wrong wherever the label has a class
    (a false negative of that class, a false positive of none), as the Cityscapes
    evaluation counts it.
    """

    num_classes: int
    ignore_index: int | None = None
    id_map: Mapping[int, int] | None = None

    @property
    def void(self) -> int | None:
        """The encoded id of predictions of no class (C), or None without an id map."""
        return None if self.id_map is None else self.num_classes

    def labels(self, path: str, raw: np.ndarray) -> np.ndarray:
        """Encoded label ids: class ids, :data:`IGNORED` for dropped pixels."""
        if self.id_map is None:
            table = {c: c for c in range(self.num_classes)}
            if self.ignore_index is not None:
                table[self.ignore_index] = IGNORED
            return self._encode(path, "label", raw, table, None)
        return self._encode(path, "label", raw, self._class_map(), IGNORED)

    def predictions(self, path: str, raw: np.ndarray) -> np.ndarray:
        """Encoded predicted ids: class ids, :attr:`void` for no class."""
        if self.id_map is None:
            return self._encode(
                path, "prediction", raw, {c: c for c in range(self.num_classes)}, None
            )
        return self._encode(path, "prediction", raw, self._class_map(), self.void)

    def byte_values(self, role: str) -> np.ndarray | None:
        """The encoded id of each value 0 .. 255 of an 8-bit raw map (``role``:
        "label" or "prediction"), as int32, where an id map is given: a table that
        maps an 8-bit image without a pass over its pixels. None without an id map,
        where an id outside the classes is an error found pixel by pixel."""
        if self.id_map is None:
            return None
        fill = IGNORED if role == "label" else self.void
        raw = np.arange(256, dtype=np.uint8)
        return lookup(raw, self._class_map(), fill, np.int32)

    def _class_map(self) -> dict[int, int]:
        return {raw: c for raw, c in self.id_map.items() if 0 <= c < self.num_classes}

    def _encode(self, path, role, raw, table, fill: int | None) -> np.ndarray:
        """``table[raw]`` per pixel; ids outside the table become ``fill``, or an
        error if ``fill`` is None."""
        dtype = _narrowest(self.num_classes)
        missing = np.iinfo(dtype).min  # no encoded value: marks ids outside the table
        encoded = lookup(raw, table, missing if fill is None else fill, dtype)
        if fill is None and np.any(encoded == missing):
            self._raise_unknown(path, role, np.unique(raw[encoded == missing]))
        return encoded

    def _raise_unknown(self, path, role, values: np.ndarray) -> None:
        shown = ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")
        allowed = f"class ids 0 .. {self.num_classes - 1}"
        hint = "--id-map maps other ids to classes"
        if role == "label" and self.ignore_index is not None:
            allowed += f" or --ignore-index {self.ignore_index}"
        elif role == "label":
            hint = f"--ignore-index drops the pixels of a label id; {hint}"
        raise LabelFileError(
            f"{path}: the {role} holds ids {shown}, but {role}s hold {allowed} ({hint})"
        )


def _narrowest(num_classes: int):
    """The narrowest signed dtype of ids -1 .. C: the metric core reads narrow ids
    faster (int8 instead of int16 saves a sixth of its time on a 19-class image)."""
    for dtype in (np.int8, np.int16, np.int32):
        if num_classes <= np.iinfo(dtype).max:
            return dtype
    return np.int64


def lookup(ids: np.ndarray, table: Mapping[int, int], fill: int, dtype) -> np.ndarray:
    """``table[id]`` for each element of ``ids`` (``fill`` for ids not in the table).

    Through an array indexed by id where the ids span at most a million values (8- and
    16-bit maps always), else through the distinct ids.
    """
    if ids.size == 0:
        return np.zeros(ids.shape, dtype=dtype)
    low, high = int(ids.min()), int(ids.max())
    offset = 0 if low >= 0 and high < _TABLE_SPAN else low
    if high - offset < _TABLE_SPAN:
        array = np.full(high - offset + 1, fill, dtype=dtype)
        for raw, value in table.items():
            if offset <= raw <= high:
                array[raw - offset] = value
        # (the shift in int64: in the ids' own dtype it could wrap around; "clip"
        # skips the bounds check of indices that lie in the array by construction)
        index = np.subtract(ids, offset, dtype=np.int64) if offset else ids
        return np.take(array, index, mode="clip")
    distinct, inverse = np.unique(ids, return_inverse=True)
    values = np.array([table.get(int(v), fill) for v in distinct], dtype=dtype)
    return values[inverse].reshape(ids.shape)


def load_id_map(path: str | os.PathLike) -> dict[int, int]:
    """Raw id -> class id, from JSON (an object ``{"7": 0, ...}`` or a list of
    ``[raw, class]`` pairs) or a CSV file of two integer columns (a header row is
    allowed).

    Raises:
        LabelFileError: an unreadable file, a value that is no integer, a raw id
            given twice.
    """
    path = Path(path)
    try:
        text = path.read_text()
        if path.name.lower().endswith(".json"):
            data = json.loads(text)
            rows = list(data.items()) if isinstance(data, dict) else list(data)
        else:
            rows = [row for row in csv.reader(text.splitlines()) if any(row)]
            if rows and not _is_integer(rows[0][0]):
                rows = rows[1:]  # a header
    except (OSError, ValueError) as error:
        raise LabelFileError(f"--id-map {path}: cannot be read ({error})") from error
    mapping: dict[int, int] = {}
    for number, row in enumerate(rows, 1):
        if not isinstance(row, Sequence) or isinstance(row, str) or len(row) != 2:
            raise LabelFileError(
                f"--id-map {path}: entry {number} is {row!r}, not a pair raw id, class id"
            )
        if not all(_is_integer(v) for v in row):
            raise LabelFileError(
                f"--id-map {path}: entry {number} maps {row[0]!r} to {row[1]!r}; both "
                "must be integers"
            )
        raw, class_id = (int(v) for v in row)
        if raw in mapping:
            raise LabelFileError(f"--id-map {path}: raw id {raw} is mapped twice")
        mapping[raw] = class_id
    if not mapping:
        raise LabelFileError(f"--id-map {path}: maps no id")
    return mapping


def _is_integer(value) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return True
    try:
        int(str(value).strip())
    except ValueError:
        return False
    return True


def load_class_names(path: str | os.PathLike, num_classes: int) -> list[str]:
    """C class names: a JSON list, or a text file with one name per line.

    Raises:
        LabelFileError: an unreadable file, or not exactly ``num_classes`` names.
    """
    path = Path(path)
    try:
        text = path.read_text()
        if path.name.lower().endswith(".json"):
            names = [str(name) for name in json.loads(text)]
        else:
            names = [line.strip() for line in text.strip().splitlines()]
    except (OSError, ValueError, TypeError) as error:
        raise LabelFileError(f"--class-names {path}: cannot be read ({error})") from error
    if len(names) != num_classes:
        raise LabelFileError(
            f"--class-names {path}: holds {len(names)} names, --num-classes is "
            f"{num_classes}"
        )
    return names
