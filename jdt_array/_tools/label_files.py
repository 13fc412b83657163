"""Label-map files for ``jdt-array evaluate``: finding, pairing, reading, id mapping.

A prediction and its label are maps of integer class ids of the same shape: 2-D images
(PNG and other formats Pillow reads, 8- or 16-bit single channel; palette images read
as their indices), NumPy ``.npy`` / ``.npz`` arrays, or NIfTI volumes (``.nii``,
``.nii.gz``, read with ``nibabel``). Every problem is a :class:`LabelFileError` that
names the file; nothing is converted silently (no RGB to grey, no rounding, no
clamping).

The metric core receives ids in one encoding: class ids 0 .. C - 1, :data:`IGNORED`
for label pixels that are dropped, and C for predicted pixels of no class (ids that
``--id-map`` maps to no class), which count as wrong predictions.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "FORMATS",
    "IGNORED",
    "IdTable",
    "LabelFileError",
    "Pair",
    "find_pairs",
    "load_class_names",
    "load_id_map",
    "read_ids",
]

IMAGE_FORMATS = (".png", ".tif", ".tiff", ".bmp", ".pgm")
ARRAY_FORMATS = (".npy", ".npz")
VOLUME_FORMATS = (".nii.gz", ".nii")
FORMATS = IMAGE_FORMATS + ARRAY_FORMATS + VOLUME_FORMATS
LIST_FORMATS = (".txt", ".lst")  # a text file naming one label-map file per line
IGNORED = -1  # the label value of dropped pixels, in the encoding given to the metric
_TABLE_SPAN = 1 << 20  # ids spanning at most this many values map through a table
# Pillow modes of single-channel integer images: 8-bit, palette indices, 16-, 32-bit.
_INTEGER_MODES = {"1", "L", "P", "I", "I;16", "I;16L", "I;16B", "I;16N"}


class LabelFileError(ValueError):
    """A label-map file that cannot be evaluated; the message names it."""


@dataclass(frozen=True)
class Pair:
    """A prediction file and its label file, under the name they are paired by."""

    name: str
    pred: str
    label: str


# -- finding and pairing ---------------------------------------------------------------


def find_pairs(
    pred: str | os.PathLike,
    label: str | os.PathLike,
    *,
    pred_suffix: str = "",
    label_suffix: str = "",
) -> tuple[list[Pair], list[str]]:
    """The pairs of two folders (or two list files), sorted by name, and the problems.

    Folders are searched recursively for files of :data:`FORMATS` whose name, without
    the extension, ends with the suffix (if one is given); a file's pair name is its
    path relative to the folder without extension and suffix. A list file (``.txt``)
    names one file per line (relative paths from the list's folder); two lists are
    paired line by line under the label file's name. A single file of :data:`FORMATS`
    is a list of one.

    Returns:
        The pairs, and one line per file without a partner (naming it).

    Raises:
        LabelFileError: a missing path, a folder beside a list, lists of different
            lengths, two files under one pair name, no file at all.
    """
    pred_path, label_path = Path(pred), Path(label)
    for path in (pred_path, label_path):
        if not path.exists():
            raise LabelFileError(f"{path}: no such file or folder")
    if pred_path.is_dir() != label_path.is_dir():
        raise LabelFileError(
            f"PRED {pred_path} and LABEL {label_path} must both be folders or both "
            "be lists of files"
        )
    if pred_path.is_dir():
        preds = _named_files(pred_path, pred_suffix)
        labels = _named_files(label_path, label_suffix)
        names = sorted(preds.keys() | labels.keys())
        pairs = [Pair(n, preds[n], labels[n]) for n in names if n in preds and n in labels]
        problems = [
            f"{preds.get(n) or labels[n]}: no {'label' if n in preds else 'prediction'}"
            f" file pairs with it (pair name {n!r})"
            for n in names
            if (n in preds) != (n in labels)
        ]
    else:
        pairs, problems = _listed_pairs(pred_path, label_path, label_suffix), []
    if not pairs and not problems:
        raise LabelFileError(
            f"no label-map files ({', '.join(FORMATS)}) in {pred_path} and {label_path}"
            + (" ending with the given suffixes" if pred_suffix or label_suffix else "")
        )
    return pairs, problems


def _named_files(root: Path, suffix: str) -> dict[str, str]:
    """Pair name -> file, for the label-map files under ``root`` ending with ``suffix``."""
    named: dict[str, str] = {}
    for path in sorted(root.rglob("*")):
        stem = _stem(path.name)
        if stem is None or not path.is_file() or not stem.endswith(suffix):
            continue
        relative = path.relative_to(root).parent / stem[: len(stem) - len(suffix)]
        name = relative.as_posix()
        if name in named:
            raise LabelFileError(
                f"{path} and {named[name]} have the same pair name {name!r} (the path "
                "without extension and suffix); keep one"
            )
        named[name] = str(path)
    return named


def _stem(filename: str) -> str | None:
    """The name without its label-map extension, or None for another kind of file."""
    lower = filename.lower()
    for extension in FORMATS:
        if lower.endswith(extension):
            return filename[: len(filename) - len(extension)]
    return None


def _listed_pairs(pred: Path, label: Path, label_suffix: str) -> list[Pair]:
    preds, labels = _listed_files(pred), _listed_files(label)
    if len(preds) != len(labels):
        raise LabelFileError(
            f"the lists pair line by line, but {pred} names {len(preds)} files and "
            f"{label} names {len(labels)}"
        )
    pairs: dict[str, Pair] = {}
    for p, lab in zip(preds, labels, strict=True):
        stem = _stem(Path(lab).name) or Path(lab).name
        if label_suffix and stem.endswith(label_suffix):
            stem = stem[: len(stem) - len(label_suffix)]
        name = (Path(lab).parent / stem).as_posix()
        if name in pairs:
            raise LabelFileError(
                f"{lab} and {pairs[name].label} have the same pair name {name!r}"
            )
        pairs[name] = Pair(name, p, lab)
    return [pairs[name] for name in sorted(pairs)]


def _listed_files(path: Path) -> list[str]:
    """The files a list names (relative to its folder), or the file itself."""
    if _stem(path.name) is not None:
        return [str(path)]
    if not path.name.lower().endswith(LIST_FORMATS):
        raise LabelFileError(
            f"{path}: neither a folder, a list of files ({', '.join(LIST_FORMATS)}) "
            f"nor a label-map file ({', '.join(FORMATS)})"
        )
    lines = [line.strip() for line in path.read_text().splitlines()]
    return [str(path.parent / line) for line in lines if line]


# -- reading ---------------------------------------------------------------------------


def read_ids(path: str | os.PathLike) -> np.ndarray:
    """The 2-D or 3-D integer id map stored in ``path``.

    Integer arrays keep their dtype (booleans become uint8, uint32 / uint64 int64);
    floating arrays (NIfTI stores labels as floats at times) are accepted only where
    every value is an integer.

    Raises:
        LabelFileError: an unreadable file, an unknown extension, several channels,
            other than 2 or 3 axes, or values that are no integers.
    """
    path = Path(path)
    lower = path.name.lower()
    try:
        if lower.endswith(IMAGE_FORMATS):
            ids = _read_image(path)
        elif lower.endswith(ARRAY_FORMATS):
            ids = _read_array(path)
        elif lower.endswith(VOLUME_FORMATS):
            ids = _read_volume(path)
        else:
            raise LabelFileError(
                f"{path}: unknown format; label maps are {', '.join(FORMATS)}"
            )
    except (LabelFileError, MemoryError):
        raise
    # A broken file raises one of a dozen types across Pillow, NumPy, zipfile, gzip and
    # nibabel (OSError, ValueError, EOFError, SyntaxError, BadZipFile, ImageFileError,
    # ...): all of them mean that this file cannot be read.
    except Exception as error:
        raise LabelFileError(f"{path}: cannot be read ({error})") from error
    if ids.ndim not in (2, 3):
        raise LabelFileError(
            f"{path}: a label map has 2 or 3 axes (an image or a volume), got shape "
            f"{ids.shape}"
        )
    return _integer_ids(path, ids)


def _read_image(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as image:
        if getattr(image, "n_frames", 1) > 1:
            raise LabelFileError(
                f"{path}: holds {image.n_frames} frames; a label map is one image"
            )
        bands = image.getbands()
        if len(bands) > 1:
            raise LabelFileError(
                f"{path}: a {image.mode} image with {len(bands)} channels; a label map "
                "is one channel of class ids (8- or 16-bit grey, or a palette image, "
                "whose indices are read)"
            )
        if image.mode not in _INTEGER_MODES:
            raise LabelFileError(
                f"{path}: a {image.mode} image holds no integer class ids (label maps "
                "are 8- or 16-bit grey or palette images)"
            )
        # np.asarray of a palette image gives its indices: no conversion to RGB.
        return np.asarray(image)


def _read_array(path: Path) -> np.ndarray:
    if path.name.lower().endswith(".npy"):
        return np.load(path, allow_pickle=False)
    with np.load(path, allow_pickle=False) as archive:
        if len(archive.files) != 1:
            raise LabelFileError(
                f"{path}: holds {len(archive.files)} arrays ({', '.join(archive.files)})"
                "; a label-map .npz holds one"
            )
        return archive[archive.files[0]]


def _read_volume(path: Path) -> np.ndarray:
    import nibabel

    data = np.asanyarray(nibabel.load(path).dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:  # NIfTI pads volumes to (X, Y, Z, 1)
        data = data[..., 0]
    if data.ndim > 3:
        raise LabelFileError(
            f"{path}: a volume of shape {data.shape}; a label map has one channel"
        )
    return data


def _integer_ids(path: Path, ids: np.ndarray) -> np.ndarray:
    """``ids`` in a dtype the id table indexes: int, uint8/16; floats only if whole."""
    ids = np.asarray(ids)
    kind = ids.dtype.kind
    if kind == "b":
        return ids.astype(np.uint8)
    if kind == "u" and ids.dtype.itemsize > 2:
        if ids.size and int(ids.max()) > np.iinfo(np.int64).max:
            raise LabelFileError(f"{path}: holds ids beyond the int64 range")
        return ids.astype(np.int64)
    if kind in "iu":
        return ids
    if kind == "f":
        whole = np.isfinite(ids) & (ids == np.round(ids))
        if np.all(whole) and (not ids.size or np.max(np.abs(ids)) < 2**53):
            return ids.astype(np.int64)
        example = ids[~whole][0] if not np.all(whole) else np.max(np.abs(ids))
        raise LabelFileError(
            f"{path}: holds {ids.dtype} values that are no class ids (e.g. {example}); "
            "label maps hold integer ids (probability maps are out of scope)"
        )
    raise LabelFileError(f"{path}: holds {ids.dtype} values, not integer class ids")


# -- ids -------------------------------------------------------------------------------


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
        # (the shift in int64: in the ids' own dtype it could wrap around)
        return array[np.subtract(ids, offset, dtype=np.int64) if offset else ids]
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
