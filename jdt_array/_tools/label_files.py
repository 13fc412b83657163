"""Label-map files for ``jdt-array evaluate``: finding, pairing and reading them.

A prediction and its label are maps of integer class ids of the same shape: 2-D images
(PNG and other formats Pillow reads, 8- or 16-bit single channel; palette images read
as their indices), NumPy ``.npy`` / ``.npz`` arrays, or NIfTI volumes (``.nii``,
``.nii.gz``, read with ``nibabel``). Every problem is a :class:`LabelFileError` that
names the file; nothing is converted silently (no RGB to grey, no rounding, no
clamping). What the ids mean is :mod:`.label_ids`' business.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["FORMATS", "LabelFileError", "Pair", "find_pairs", "read_ids"]

IMAGE_FORMATS = (".png", ".tif", ".tiff", ".bmp", ".pgm")
ARRAY_FORMATS = (".npy", ".npz")
VOLUME_FORMATS = (".nii.gz", ".nii")
FORMATS = IMAGE_FORMATS + ARRAY_FORMATS + VOLUME_FORMATS
LIST_FORMATS = (".txt", ".lst")  # a text file naming one label-map file per line
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
    except (LabelFileError, MemoryError, ImportError):
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
    Image = _optional("PIL.Image", "Pillow")

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
    nibabel = _optional("nibabel", "nibabel")

    data = np.asanyarray(nibabel.load(path).dataobj)
    while data.ndim > 3 and data.shape[-1] == 1:  # NIfTI pads volumes to (X, Y, Z, 1)
        data = data[..., 0]
    if data.ndim > 3:
        raise LabelFileError(
            f"{path}: a volume of shape {data.shape}; a label map has one channel"
        )
    return data


def _optional(module: str, package: str):
    """An import of the ``evaluate`` extra, or an ImportError saying how to install it
    (not an unreadable file: a missing package is not a file's fault)."""
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f'reading label maps needs {package}: pip install "jdt-array[evaluate]"'
        ) from error


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
