"""``jdt-array evaluate``: against the Cityscapes evaluation scripts and a float64 NumPy
reference written here, pairing, reading, id maps, every error case, the outputs, and
the same result on any number of workers, threads, processes or a Dask cluster."""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from jdt_array.__main__ import main
from jdt_array._tools import evaluate as ev
from jdt_array._tools.evaluate_command import add_arguments
from jdt_array._tools.label_files import LabelFileError, find_pairs, read_ids
from jdt_array._tools.label_ids import IdTable, load_id_map, lookup
from jdt_array.metrics import FineGrainedMetrics

Image = pytest.importorskip("PIL.Image")
pytest.importorskip("dask")

NO_CLASS = -2  # in the reference: a prediction of no class
ROOT = Path(__file__).resolve().parent.parent


# -- helpers ---------------------------------------------------------------------------


def save(path: Path, ids: np.ndarray) -> Path:
    """Write a label map in the format of the path's extension."""
    path.parent.mkdir(parents=True, exist_ok=True)
    name = path.name
    if name.endswith(".npy"):
        np.save(path, ids)
    elif name.endswith(".npz"):
        np.savez(path, ids=ids)
    elif name.endswith((".nii", ".nii.gz")):
        nibabel = pytest.importorskip("nibabel")
        nibabel.save(nibabel.Nifti1Image(ids, np.eye(4)), path)
    else:
        Image.fromarray(ids).save(path)
    return path


def blocky(rng, values, shape=(24, 40), block=8) -> np.ndarray:
    """A label map of constant blocks (compressible, like real segmentations)."""
    grid = rng.choice(values, (-(-shape[0] // block), -(-shape[1] // block)))
    return grid.repeat(block, 0).repeat(block, 1)[: shape[0], : shape[1]]


def noisy(rng, label, values, keep=0.7) -> np.ndarray:
    return np.where(rng.random(label.shape) < keep, label, rng.choice(values, label.shape))


def run_json(tmp_path, *args, name="out.json") -> dict:
    out = tmp_path / name
    assert main(["evaluate", *map(str, args), "--workers", "1", "--json", str(out)]) == 0
    return json.loads(out.read_text())


def reference(pairs, num_classes: int) -> dict[str, float]:
    """Acc, mAccD, mIoUD, mDiceD, mIoUI, mDiceI, mIoUC from the formulas, in float64.

    ``pairs`` of (prediction, label) hold class ids, -1 in the label for dropped
    pixels and NO_CLASS in the prediction for a prediction of no class.
    """
    C = num_classes
    tp, pred, lab = (np.zeros((len(pairs), C)) for _ in range(3))
    for n, (p, y) in enumerate(pairs):
        kept = y >= 0
        for c in range(C):
            tp[n, c] = np.sum((p == c) & (y == c) & kept)
            pred[n, c] = np.sum((p == c) & kept)
            lab[n, c] = np.sum((y == c) & kept)
    T, P, L = tp.sum(0), pred.sum(0), lab.sum(0)
    seen = P + L > 0
    iou = tp / np.where(pred + lab - tp > 0, pred + lab - tp, 1)
    dice = 2 * tp / np.where(pred + lab > 0, pred + lab, 1)
    present = lab > 0
    per_image = [(iou[n][present[n]], dice[n][present[n]]) for n in range(len(pairs))]
    per_image = [scores for scores in per_image if scores[0].size]
    per_class = [iou[present[:, c], c] for c in range(C) if present[:, c].any()]
    return {
        "Acc": 100 * T.sum() / L.sum(),
        "mAccD": 100 * np.mean(T[L > 0] / L[L > 0]),
        "mIoUD": 100 * np.mean(T[seen] / (P + L - T)[seen]),
        "mDiceD": 100 * np.mean(2 * T[seen] / (P + L)[seen]),
        "mIoUI": 100 * np.mean([i.mean() for i, _ in per_image]),
        "mDiceI": 100 * np.mean([d.mean() for _, d in per_image]),
        "mIoUC": 100 * np.mean([i.mean() for i in per_class]),
    }


def image_miou(pred, label, num_classes) -> float:
    return reference([(pred, label)], num_classes)["mIoUI"]


# -- Cityscapes ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cityscapes(tmp_path_factory):
    """Cityscapes-style folders (official label ids 0 .. 33, ignored ids in labels
    and predictions), our report and the official script's on the same files."""
    labels_module = pytest.importorskip("cityscapesscripts.helpers.labels")
    official = pytest.importorskip(
        "cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling"
    )
    root = tmp_path_factory.mktemp("cityscapes")
    rng = np.random.default_rng(27)
    ids = np.array([label.id for label in labels_module.labels if label.id >= 0])
    preds, gts, raw = [], [], []
    for i in range(6):
        city = ("aachen", "bochum")[i % 2]
        stem = f"{city}/{city}_000000_{i:06d}"
        gt = blocky(rng, ids, (32, 64)).astype(np.uint8)
        pred = noisy(rng, gt, ids).astype(np.uint8)
        preds.append(str(save(root / "results" / f"{stem}_leftImg8bit.png", pred)))
        gts.append(str(save(root / "gtFine" / f"{stem}_gtFine_labelIds.png", gt)))
        raw.append((pred, gt))
    id_map = {
        label.id: label.trainId
        for label in labels_module.labels
        if not label.ignoreInEval and label.id >= 0
    }
    (root / "map.json").write_text(json.dumps(id_map))
    ours = run_json(
        root, root / "results", root / "gtFine", "--num-classes", 19,
        "--id-map", root / "map.json", "--pred-suffix", "_leftImg8bit",
        "--label-suffix", "_gtFine_labelIds",
    )  # fmt: skip
    args = official.args
    args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
    theirs = official.evaluateImgLists(preds, gts, args)
    return ours, theirs, raw, id_map, labels_module


def test_cityscapes_mean_iou_agrees_with_the_official_script(cityscapes):
    ours, theirs, raw, id_map, _ = cityscapes
    # The official script sums the 19 class scores one after the other, the core with
    # NumPy's pairwise sum: the means may differ in the last bit, never more.
    assert ours["metrics"]["mIoUD"] == pytest.approx(
        100 * theirs["averageScoreClasses"], rel=1e-15, abs=0
    )
    # The case the id map exists for is in the data: predictions of ignored ids
    # (no class) on pixels whose label is one of the 19 classes.
    assert any(np.any(~np.isin(p, list(id_map)) & np.isin(y, list(id_map))) for p, y in raw)


def test_cityscapes_class_ious_agree_exactly_with_the_official_script(cityscapes):
    ours, theirs, _, _, labels_module = cityscapes
    names = [labels_module.trainId2label[c].name for c in range(19)]
    expected = [100 * theirs["classScores"][name] for name in names]
    got = [np.nan if v is None else v for v in ours["per_class"]["IoUD"]]
    np.testing.assert_array_equal(got, expected)


def test_cityscapes_counts_equal_the_numpy_reference(cityscapes):
    ours, _, raw, id_map, _ = cityscapes
    encoded = [
        (
            np.vectorize(lambda v: id_map.get(int(v), NO_CLASS))(p),
            np.vectorize(lambda v: id_map.get(int(v), -1))(y),
        )
        for p, y in raw
    ]
    want = reference(encoded, 19)
    for key, value in want.items():
        assert ours["metrics"][key] == pytest.approx(value, rel=1e-12), key


# -- NIfTI volumes and the other formats against the reference -------------------------


@pytest.mark.parametrize("extension", [".nii.gz", ".nii"])
def test_nifti_volumes_with_an_id_map_match_the_numpy_reference(tmp_path, extension):
    pytest.importorskip("nibabel")
    rng = np.random.default_rng(5)
    raw_ids = np.array([0, 10, 20, 99])  # 99: not in the map (ignored / no class)
    id_map = {0: 0, 10: 1, 20: 2}
    encoded = []
    for i in range(3):
        label = rng.choice(raw_ids, (6, 7, 5)).astype(np.int16)
        pred = noisy(rng, label, raw_ids, keep=0.6).astype(np.float32)  # whole floats
        save(tmp_path / "pred" / f"case{i}{extension}", pred)
        save(tmp_path / "label" / f"case{i}{extension}", label)
        lookup_ = np.vectorize(lambda v, fill: id_map.get(int(v), fill))
        encoded.append((lookup_(pred, NO_CLASS), lookup_(label, -1)))
    (tmp_path / "map.csv").write_text("raw,class\n0,0\n10,1\n20,2\n")
    got = run_json(
        tmp_path, tmp_path / "pred", tmp_path / "label", "--num-classes", 3,
        "--id-map", tmp_path / "map.csv", "--worst", 1,
    )  # fmt: skip
    for key, value in reference(encoded, 3).items():
        assert got["metrics"][key] == pytest.approx(value, rel=1e-12), key
    assert [image["shape"] for image in got["images"]] == [[6, 7, 5]] * 3
    for image, (p, y) in zip(got["images"], encoded, strict=True):
        assert image["mIoU"] == pytest.approx(image_miou(p, y, 3), rel=1e-12)
        assert image["pixels"] == np.count_nonzero(y >= 0)


@pytest.mark.parametrize("extension", [".png", ".npy", ".npz", ".tif"])
def test_each_format_gives_the_metric_cores_result(tmp_path, extension):
    rng = np.random.default_rng(1)
    metric = FineGrainedMetrics(4, ignore_index=255)
    for i in range(3):
        label = blocky(rng, [0, 1, 2, 3, 255]).astype(np.uint8)
        pred = noisy(rng, label, [0, 1, 2, 3])
        pred = np.where(label == 255, 0, pred).astype(np.uint8)
        save(tmp_path / "p" / f"{i}{extension}", pred)
        save(tmp_path / "l" / f"{i}{extension}", label)
        metric.update(pred[None], label[None])
    got = run_json(tmp_path, tmp_path / "p", tmp_path / "l", "--num-classes", 4,
                   "--ignore-index", 255)  # fmt: skip
    assert got["metrics"] == pytest.approx(metric.compute(), rel=1e-15)


def test_a_palette_png_is_read_as_its_indices_not_its_colours(tmp_path):
    ids = np.array([[0, 1, 2], [2, 1, 0]], dtype=np.uint8)
    image = Image.fromarray(ids, mode="P")
    image.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255] + [0] * 759)
    image.save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    np.testing.assert_array_equal(read_ids(tmp_path / "palette.png"), ids)


def test_a_16_bit_png_keeps_ids_above_255(tmp_path):
    ids = np.array([[0, 300], [1000, 65535]], dtype=np.uint16)
    save(tmp_path / "wide.png", ids)
    np.testing.assert_array_equal(read_ids(tmp_path / "wide.png"), ids)


@pytest.mark.parametrize(
    "ids",
    [
        np.array([[-5, 3], [1_000_000_000, 7]], dtype=np.int64),  # through np.unique
        np.array([[-40, 3], [100, -40]], dtype=np.int8),  # a shifted table
        np.array([[0, 255], [7, 3]], dtype=np.uint8),  # a table indexed by id
        np.array([[-32768, 32767], [0, 3]], dtype=np.int16),  # the shift in int64
    ],
)
def test_lookup_maps_every_id_like_a_dictionary(ids):
    table = {3: 0, 7: 1, -40: 2, 1_000_000_000: 3, 32767: 4}
    want = np.vectorize(lambda v: table.get(int(v), -9))(ids)
    np.testing.assert_array_equal(lookup(ids, table, -9, np.int32), want)


# -- ids -------------------------------------------------------------------------------


def test_a_predicted_id_of_no_class_is_a_false_negative_and_no_false_positive():
    ids = IdTable(2, id_map={10: 0, 20: 1})
    label = ids.labels("l", np.array([[10, 10, 20, 20]]))
    pred = ids.predictions("p", np.array([[10, 77, 20, 77]]))  # 77 maps to no class
    stats = ev.image_statistics(ids, pred, label)
    np.testing.assert_array_equal(stats.intersection, [[1, 1]])
    np.testing.assert_array_equal(stats.pred_count, [[1, 1]])  # no false positive
    np.testing.assert_array_equal(stats.label_count, [[2, 2]])  # a false negative each
    metric = FineGrainedMetrics(2)
    metric.update_statistics(stats)
    assert metric.compute()["mIoUD"] == pytest.approx(50.0)  # never a dropped pixel


@pytest.mark.parametrize("seed", [0, 1])
def test_an_8_bit_pair_through_byte_tables_counts_what_the_pixel_path_counts(seed):
    # 512 x 640: large enough for the table of byte pairs. Raw ids 0 .. 255: mapped
    # ones, unmapped ones (dropped in labels, no class in predictions), 255.
    rng = np.random.default_rng(seed)
    id_map = {int(raw): c for c, raw in enumerate(rng.choice(256, 19, replace=False))}
    ids = IdTable(19, id_map=id_map)
    values = np.concatenate([list(id_map), rng.choice(256, 12), [255]])
    label = blocky(rng, values, (512, 640), block=16).astype(np.uint8)
    pred = noisy(rng, label, values).astype(np.uint8)
    got = ev.raw_byte_statistics(ids, pred, label)
    assert got is not None
    want = ev.image_statistics(ids, ids.predictions("p", pred), ids.labels("l", label))
    for name, value in want._asdict().items():
        if value is None:
            assert getattr(got, name) is None, name
        else:
            np.testing.assert_array_equal(getattr(got, name), value, err_msg=name)
    # some counted pixels are predicted as no class: in no class's predicted count
    assert 0 < int(got.pred_count.sum()) < int(got.kept_count[0])


def test_byte_tables_are_not_used_without_an_id_map_or_for_small_images():
    # Without an id map an unknown id is an error found pixel by pixel; small images
    # count faster pixel by pixel.
    big = np.zeros((512, 512), dtype=np.uint8)
    assert ev.raw_byte_statistics(IdTable(2), big, big) is None
    small = np.zeros((8, 8), dtype=np.uint8)
    assert ev.raw_byte_statistics(IdTable(2, id_map={0: 0}), small, small) is None


def test_a_value_table_of_the_wrong_shape_is_an_error_naming_it():
    from jdt_array.metrics._byte_table import byte_map_statistics
    from jdt_array.metrics._options import MetricOptions

    pixels = np.zeros((1, 512 * 512), dtype=np.uint8)
    with pytest.raises(ValueError, match=r"label_values must be a \(256,\).*\(255,\)"):
        byte_map_statistics(
            pixels, pixels, MetricOptions(2), label_values=np.zeros(255, np.int32)
        )


def test_raw_label_ids_outside_the_map_are_ignored(tmp_path):
    save(tmp_path / "p" / "a.png", np.array([[1, 2, 1, 2]], dtype=np.uint8))
    save(tmp_path / "l" / "a.png", np.array([[1, 2, 9, 255]], dtype=np.uint8))
    (tmp_path / "map.json").write_text('{"1": 0, "2": 1, "255": 255}')
    got = run_json(tmp_path, tmp_path / "p", tmp_path / "l", "--num-classes", 2,
                   "--id-map", tmp_path / "map.json", "--ignore-index", 255)  # fmt: skip
    assert got["metrics"]["Acc"] == 100.0 and got["images"][0]["pixels"] == 2


@pytest.mark.parametrize(
    ("name", "text", "expected"),
    [
        ("map.json", '{"7": 0, "8": 1}', {7: 0, 8: 1}),
        ("map.json", "[[7, 0], [8, 1]]", {7: 0, 8: 1}),
        ("map.csv", "7,0\n8,1\n", {7: 0, 8: 1}),
        ("map.csv", "id,trainId\n7, 0\n\n8, 1\n", {7: 0, 8: 1}),
    ],
)
def test_id_maps_load_from_json_and_csv(tmp_path, name, text, expected):
    (tmp_path / name).write_text(text)
    assert load_id_map(tmp_path / name) == expected


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("map.json", '{"7": 0, "8": "road"}', "maps '8' to 'road'"),
        ("map.json", "[[7, 0, 1]]", "not a pair"),
        ("map.csv", "7,0\n7,1\n", "raw id 7 is mapped twice"),
        ("map.json", "{", "cannot be read"),
        ("map.json", "{}", "maps no id"),
    ],
)
def test_a_bad_id_map_is_an_error_naming_it(tmp_path, name, text, message):
    (tmp_path / name).write_text(text)
    with pytest.raises(LabelFileError, match=message) as err:
        load_id_map(tmp_path / name)
    assert str(tmp_path / name) in str(err.value)


def test_an_id_map_to_no_class_id_is_an_error(tmp_path, capsys):
    folders = two_pngs(tmp_path)
    (tmp_path / "map.json").write_text('{"1": 0, "2": 5}')
    code = main(["evaluate", *folders, "--num-classes", "3", "--workers", "1",
                 "--id-map", str(tmp_path / "map.json")])  # fmt: skip
    assert code == 1
    assert "maps raw id 2 to 5, which is no class id 0 .. 2" in capsys.readouterr().err


# -- pairing ---------------------------------------------------------------------------


def two_pngs(tmp_path, pred=None, label=None) -> list[str]:
    pred = np.array([[0, 1], [1, 2]], dtype=np.uint8) if pred is None else pred
    label = np.array([[0, 1], [2, 2]], dtype=np.uint8) if label is None else label
    save(tmp_path / "p" / "a.png", pred)
    save(tmp_path / "l" / "a.png", label)
    return [str(tmp_path / "p"), str(tmp_path / "l")]


def test_pairs_by_relative_path_without_extension_and_suffixes(tmp_path):
    for stem in ("x/1", "x/2", "y/1"):
        save(tmp_path / "p" / f"{stem}_pred.png", np.zeros((2, 2), np.uint8))
        save(tmp_path / "l" / f"{stem}_gt.npy", np.zeros((2, 2), np.uint8))
    save(tmp_path / "l" / "x" / "1_color.png", np.zeros((2, 2), np.uint8))  # not a label
    (tmp_path / "l" / "notes.txt").write_text("not a label map")
    pairs, problems = find_pairs(
        tmp_path / "p", tmp_path / "l", pred_suffix="_pred", label_suffix="_gt"
    )
    assert problems == []
    assert [(p.name, Path(p.pred).name, Path(p.label).name) for p in pairs] == [
        ("x/1", "1_pred.png", "1_gt.npy"),
        ("x/2", "2_pred.png", "2_gt.npy"),
        ("y/1", "1_pred.png", "1_gt.npy"),
    ]


def test_an_unpaired_file_is_an_error_naming_it(tmp_path, capsys):
    folders = two_pngs(tmp_path)
    save(tmp_path / "p" / "sub" / "extra.png", np.zeros((2, 2), np.uint8))
    save(tmp_path / "l" / "lonely.png", np.zeros((2, 2), np.uint8))
    assert main(["evaluate", *folders, "--num-classes", "3", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "2 files have no partner" in err
    assert f"{tmp_path / 'p' / 'sub' / 'extra.png'}: no label file" in err
    assert f"{tmp_path / 'l' / 'lonely.png'}: no prediction file" in err


def test_two_files_under_one_pair_name_are_an_error(tmp_path):
    two_pngs(tmp_path)
    save(tmp_path / "p" / "a.npy", np.zeros((2, 2), np.uint8))
    with pytest.raises(LabelFileError, match="same pair name 'a'"):
        find_pairs(tmp_path / "p", tmp_path / "l")


def test_lists_pair_line_by_line(tmp_path):
    rng = np.random.default_rng(2)
    arrays = [(rng.integers(0, 3, (4, 4)), rng.integers(0, 3, (4, 4))) for _ in range(3)]
    for i, (p, y) in enumerate(arrays):
        save(tmp_path / "preds" / f"{i}.npy", p)
        save(tmp_path / "gts" / f"gt{i}.npy", y)
    (tmp_path / "p.txt").write_text("".join(f"preds/{i}.npy\n" for i in range(3)))
    (tmp_path / "l.txt").write_text("".join(f"gts/gt{i}.npy\n" for i in range(3)))
    got = run_json(tmp_path, tmp_path / "p.txt", tmp_path / "l.txt", "--num-classes", 3)
    assert [image["name"] for image in got["images"]] == [
        f"{tmp_path}/gts/gt{i}" for i in range(3)
    ]
    assert got["metrics"]["mIoUD"] == pytest.approx(reference(arrays, 3)["mIoUD"])
    (tmp_path / "short.txt").write_text("gts/gt0.npy\n")
    with pytest.raises(LabelFileError, match=r"names 3 files and .* names 1"):
        find_pairs(tmp_path / "p.txt", tmp_path / "short.txt")


def test_a_folder_beside_a_list_and_a_missing_path_are_errors(tmp_path):
    two_pngs(tmp_path)
    (tmp_path / "l.txt").write_text("l/a.png\n")
    with pytest.raises(LabelFileError, match="both be folders or both be lists"):
        find_pairs(tmp_path / "p", tmp_path / "l.txt")
    with pytest.raises(LabelFileError, match="no such file or folder"):
        find_pairs(tmp_path / "p", tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(LabelFileError, match="no label-map files"):
        find_pairs(tmp_path / "empty", tmp_path / "empty")


# -- bad files -------------------------------------------------------------------------


def write_rgb(path: Path) -> None:
    Image.fromarray(np.zeros((2, 2, 3), np.uint8)).save(path)


BAD_FILES = {
    "several channels": (write_rgb, "a RGB image with 3 channels"),
    "unreadable": (lambda path: path.write_bytes(b"not a png"), "cannot be read"),
    "a size mismatch": (
        lambda path: save(path, np.zeros((3, 2), np.uint8)),
        "the prediction has shape (3, 2), its label",
    ),
    "an id out of range": (
        lambda path: save(path, np.array([[0, 1], [1, 7]], np.uint8)),
        "the prediction holds ids 7, but predictions hold class ids 0 .. 2",
    ),
    "a probability map": (
        lambda path: np.save(path.with_suffix(".npy"), np.full((2, 2), 0.3)),
        "probability maps are out of scope",
    ),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_a_bad_prediction_file_is_an_error_naming_it(tmp_path, capsys, case):
    folders = two_pngs(tmp_path)
    write, message = BAD_FILES[case]
    bad = tmp_path / "p" / "a.png"
    bad.unlink()
    write(bad)
    assert main(["evaluate", *folders, "--num-classes", "3", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert message in err
    assert f"error: {tmp_path / 'p' / 'a.'}" in err  # the file is named
    assert "(--skip-bad skips and lists the pairs that cannot be evaluated)" in err


def test_a_bad_file_in_a_worker_process_stops_the_run_naming_it(tmp_path, capsys):
    folders = two_pngs(tmp_path)
    save(tmp_path / "p" / "b.png", np.zeros((2, 2), np.uint8))
    (tmp_path / "l" / "b.png").write_bytes(b"broken")
    assert main(["evaluate", *folders, "--num-classes", "3", "--workers", "2"]) == 1
    err = capsys.readouterr().err
    assert f"error: {tmp_path / 'l' / 'b.png'}: cannot be read" in err


def test_a_label_id_that_is_no_class_nor_ignored_is_an_error(tmp_path, capsys):
    folders = two_pngs(tmp_path, label=np.array([[0, 1], [200, 255]], np.uint8))
    args = ["evaluate", *folders, "--num-classes", "3", "--workers", "1"]
    assert main([*args, "--ignore-index", "255"]) == 1
    err = capsys.readouterr().err
    assert f"{tmp_path / 'l' / 'a.png'}: the label holds ids 200, but labels hold " in err
    assert "or --ignore-index 255" in err


def test_a_bad_npz_nifti_and_axes_are_errors_naming_the_file(tmp_path):
    np.savez(tmp_path / "two.npz", a=np.zeros((2, 2)), b=np.zeros((2, 2)))
    with pytest.raises(LabelFileError, match=r"two.npz: holds 2 arrays"):
        read_ids(tmp_path / "two.npz")
    np.save(tmp_path / "flat.npy", np.zeros(4, np.uint8))
    with pytest.raises(LabelFileError, match=r"flat.npy: a label map has 2 or 3 axes"):
        read_ids(tmp_path / "flat.npy")
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(LabelFileError, match=r"x.jpg: unknown format"):
        read_ids(tmp_path / "x.jpg")
    pytest.importorskip("nibabel")
    save(tmp_path / "four.nii.gz", np.zeros((2, 2, 2, 3), np.int16))
    with pytest.raises(LabelFileError, match=r"four.nii.gz: a volume of shape"):
        read_ids(tmp_path / "four.nii.gz")
    save(tmp_path / "padded.nii.gz", np.ones((2, 3, 4, 1), np.int16))
    assert read_ids(tmp_path / "padded.nii.gz").shape == (2, 3, 4)


def test_skip_bad_lists_what_it_skipped_and_scores_the_rest(tmp_path, capsys):
    rng = np.random.default_rng(3)
    good = []
    for i in range(3):
        y = blocky(rng, [0, 1, 2]).astype(np.uint8)
        p = noisy(rng, y, [0, 1, 2]).astype(np.uint8)
        save(tmp_path / "p" / f"{i}.png", p)
        save(tmp_path / "l" / f"{i}.png", y)
        good.append((p, y))
    write_rgb(tmp_path / "p" / "rgb.png")
    save(tmp_path / "l" / "rgb.png", np.zeros((2, 2), np.uint8))
    save(tmp_path / "p" / "unpaired.png", np.zeros((2, 2), np.uint8))
    got = run_json(
        tmp_path, tmp_path / "p", tmp_path / "l", "--num-classes", 3, "--skip-bad"
    )
    out = capsys.readouterr().out
    assert len(got["skipped"]) == 2
    assert any("rgb.png: a RGB image" in line for line in got["skipped"])
    assert any("unpaired.png: no label file" in line for line in got["skipped"])
    assert "Skipped (2, --skip-bad):" in out and "rgb.png" in out
    assert [image["name"] for image in got["images"]] == ["0", "1", "2"]
    for key, value in reference(good, 3).items():
        assert got["metrics"][key] == pytest.approx(value, rel=1e-12), key


def test_an_image_without_labelled_pixels_is_listed_but_not_scored(tmp_path):
    save(tmp_path / "p" / "a.png", np.array([[0, 1]], np.uint8))
    save(tmp_path / "l" / "a.png", np.array([[0, 0]], np.uint8))
    save(tmp_path / "p" / "b.png", np.array([[1, 1]], np.uint8))
    save(tmp_path / "l" / "b.png", np.array([[255, 255]], np.uint8))
    got = run_json(tmp_path, tmp_path / "p", tmp_path / "l", "--num-classes", 2,
                   "--ignore-index", 255)  # fmt: skip
    assert got["images"][1] == {
        "name": "b", "pred": str(tmp_path / "p" / "b.png"),
        "label": str(tmp_path / "l" / "b.png"), "shape": [1, 2], "pixels": 0,
        "mIoU": None, "mDice": None, "mAcc": None, "Acc": None,
    }  # fmt: skip
    assert got["metrics"]["Acc"] == 50.0  # b counts nowhere


@pytest.mark.parametrize(
    ("module", "message"),
    [("PIL.Image", "reading label maps needs Pillow"), ("dask", "needs Dask")],
)
def test_a_missing_package_says_how_to_install_it(tmp_path, capsys, monkeypatch, module,
                                                  message):  # fmt: skip
    folders = two_pngs(tmp_path)
    monkeypatch.setitem(sys.modules, module, None)  # import raises ImportError
    args = ["evaluate", *folders, "--num-classes", "3", "--workers", "1"]
    assert main([*args, "--skip-bad"]) == 1  # not a bad file to skip
    err = capsys.readouterr().err
    assert message in err and 'pip install "jdt-array[evaluate]"' in err


def test_no_labelled_pixel_at_all_is_an_error(tmp_path, capsys):
    folders = two_pngs(tmp_path, label=np.full((2, 2), 255, np.uint8))
    args = ["evaluate", *folders, "--num-classes", "3", "--ignore-index", "255"]
    assert main([*args, "--workers", "1"]) == 1
    assert "no image has a labelled pixel" in capsys.readouterr().err


# -- output ----------------------------------------------------------------------------


@pytest.fixture
def folder(tmp_path):
    """Five random pairs of three classes with ignored pixels, and their arrays."""
    rng = np.random.default_rng(11)
    arrays = []
    for i in range(5):
        y = blocky(rng, [0, 1, 2, 255]).astype(np.uint8)
        p = noisy(rng, y, [0, 1, 2], keep=0.3 + 0.1 * i).astype(np.uint8)
        p = np.where(y == 255, 0, p).astype(np.uint8)
        save(tmp_path / "p" / f"img{i}.png", p)
        save(tmp_path / "l" / f"img{i}.png", y)
        arrays.append((p, np.where(y == 255, -1, y.astype(np.int16))))
    (tmp_path / "names.txt").write_text("sky\nroad\ncar\n")
    return tmp_path, arrays


def test_the_json_holds_every_number_of_the_core(folder):
    tmp_path, arrays = folder
    got = run_json(tmp_path, tmp_path / "p", tmp_path / "l", "--num-classes", 3,
                   "--ignore-index", 255, "--q", 20)  # fmt: skip
    metric = FineGrainedMetrics(3, ignore_index=-1, q=20)
    for p, y in arrays:
        metric.update(p[None], y[None])
    assert got["metrics"] == pytest.approx(metric.compute(), rel=1e-15)
    assert "mIoUI20" in got["metrics"]
    assert set(got) == {"metrics", "per_class", "images", "skipped", "options", "version"}
    assert got["options"]["num_classes"] == 3 and got["options"]["q"] == 20
    import jdt_array

    assert got["version"] == jdt_array.__version__
    for image, (p, y) in zip(got["images"], arrays, strict=True):
        assert image["mIoU"] == pytest.approx(image_miou(p, y, 3), rel=1e-12)
        alone = FineGrainedMetrics(3, ignore_index=-1)  # the image's own scores
        alone.update(p[None], y[None])
        want = alone.compute()
        for name, key in (("mIoU", "mIoUI"), ("mDice", "mDiceI"), ("mAcc", "mAccI"),
                          ("Acc", "Acc")):  # fmt: skip
            assert image[name] == pytest.approx(want[key], rel=1e-15), name


def test_worst_lists_the_k_lowest_images_by_image_level_miou(folder, capsys):
    tmp_path, arrays = folder
    args = [tmp_path / "p", tmp_path / "l", "--num-classes", 3, "--ignore-index", 255]
    run_json(tmp_path, *args, "--worst", 2)
    out = capsys.readouterr().out
    mious = [image_miou(p, y, 3) for p, y in arrays]
    order = np.argsort(mious)[:2]
    section = out.split("The 2 worst images by image-level mIoU:")[1].splitlines()
    rows = [line for line in section if line.startswith("| img")]
    assert [row.split(" | ")[0] for row in rows] == [f"| img{i}" for i in order]
    assert rows[0].split(" | ")[1] == f"{mious[order[0]]:.2f}"


def test_the_markdown_table_has_the_readme_format(folder, capsys):
    tmp_path, _ = folder
    data = run_json(tmp_path, tmp_path / "p", tmp_path / "l", "--num-classes", 3,
                    "--ignore-index", 255)  # fmt: skip
    lines = capsys.readouterr().out.splitlines()
    start = lines.index("| metric | value |")
    assert lines[start + 1] == "|---|---|"
    rows = lines[start + 2 : start + 2 + len(data["metrics"])]
    assert rows == [f"| {k} | {v:.2f} |" for k, v in data["metrics"].items()]


def test_csv_holds_one_row_per_image(folder):
    tmp_path, _ = folder
    args = [tmp_path / "p", tmp_path / "l", "--num-classes", 3, "--ignore-index", 255]
    got = run_json(tmp_path, *args, "--csv", tmp_path / "tables")
    with (tmp_path / "tables" / "images.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["name"] for row in rows] == [f"img{i}" for i in range(5)]
    for row, image in zip(rows, got["images"], strict=True):
        assert float(row["mIoU"]) == image["mIoU"] and int(row["pixels"]) == image["pixels"]
    assert (tmp_path / "tables" / "per_class.csv").exists()


def test_boundary_rows_are_the_cores_boundary_iou(folder, capsys):
    from _support.metrics_reference import fine_grained_reference

    tmp_path, arrays = folder
    got = run_json(tmp_path, tmp_path / "p", tmp_path / "l", "--num-classes", 3,
                   "--ignore-index", 255, "--boundary", "--boundary-width", 2,
                   "--csv", tmp_path / "tables")  # fmt: skip
    preds = np.stack([p for p, _ in arrays])
    labels = np.stack([np.where(y == -1, 255, y) for _, y in arrays])
    want = fine_grained_reference(preds, labels, num_classes=3, ignore_index=255,
                                  boundary=True, boundary_width=2)  # fmt: skip
    for key in ("mBIoUD", "mBIoUI", "mBIoUC", "mBIoUI1", "mBIoUCQ"):
        assert got["metrics"][key] == pytest.approx(want[key], rel=1e-12), key
    assert all("mBIoU" in image for image in got["images"])
    assert {"BIoUD", "BIoUI", "BIoUC"} <= set(got["per_class"])
    assert "| mBIoUD |" in capsys.readouterr().out
    with (tmp_path / "tables" / "images.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [float(row["mBIoU"]) for row in rows] == [i["mBIoU"] for i in got["images"]]


def test_per_class_scores_are_the_cores_with_the_class_names(folder, capsys):
    tmp_path, arrays = folder
    got = run_json(tmp_path, tmp_path / "p", tmp_path / "l", "--num-classes", 3,
                   "--ignore-index", 255, "--class-names", tmp_path / "names.txt",
                   "--csv", tmp_path / "tables")  # fmt: skip
    metric = FineGrainedMetrics(3, ignore_index=-1)
    for p, y in arrays:
        metric.update(p[None], y[None])
    want = metric.per_class()
    assert list(got["per_class"]) == list(want)
    for key, values in got["per_class"].items():  # JSON has null for NaN
        values = np.array([np.nan if v is None else v for v in values])
        np.testing.assert_allclose(values, want[key], rtol=1e-15, err_msg=key)
    out = capsys.readouterr().out
    assert "| sky |" in out and "| car |" in out
    with (tmp_path / "tables" / "per_class.csv").open() as file:
        rows = list(csv.DictReader(file))
    assert [row["class"] for row in rows] == ["sky", "road", "car"]


def test_an_unwritable_report_is_an_error_after_the_table(folder, capsys):
    tmp_path, _ = folder
    (tmp_path / "file").write_text("")
    args = ["evaluate", str(tmp_path / "p"), str(tmp_path / "l"), "--num-classes", "3",
            "--ignore-index", "255", "--workers", "1"]  # fmt: skip
    assert main([*args, "--json", str(tmp_path / "file" / "out.json")]) == 1
    out, err = capsys.readouterr()
    assert "| mIoUD |" in out and "error: cannot write a report" in err


def test_class_names_must_name_every_class(folder, capsys):
    tmp_path, _ = folder
    args = ["evaluate", str(tmp_path / "p"), str(tmp_path / "l"), "--num-classes", "4"]
    assert main([*args, "--class-names", str(tmp_path / "names.txt")]) == 1
    assert "holds 3 names, --num-classes is 4" in capsys.readouterr().err


def test_progress_in_a_log_is_a_line_every_tenth_of_the_way(folder, capsys):
    tmp_path, _ = folder
    run_json(tmp_path, tmp_path / "p", tmp_path / "l", "--num-classes", 3,
             "--ignore-index", 255)  # fmt: skip
    err = capsys.readouterr().err.splitlines()
    assert err[-1] == "[5/5] 100 % image pairs" and len(err) == 5


# -- workers, order, cluster -----------------------------------------------------------


def test_the_result_is_independent_of_workers_threads_and_file_order(folder):
    tmp_path, _ = folder
    base = ["--num-classes", "3", "--ignore-index", "255"]
    one = run_json(tmp_path, tmp_path / "p", tmp_path / "l", *base, name="one.json")
    out = tmp_path / "threads.json"
    argv = ["evaluate", str(tmp_path / "p"), str(tmp_path / "l"), *base]
    assert main([*argv, "--workers", "2", "--threads", "--json", str(out)]) == 0
    threads = json.loads(out.read_text())
    # Lists in reverse order: the same pairs, evaluated in another order.
    names = [f"img{i}.png" for i in reversed(range(5))]
    (tmp_path / "p.txt").write_text("".join(f"p/{n}\n" for n in names))
    (tmp_path / "l.txt").write_text("".join(f"l/{n}\n" for n in names))
    listed = run_json(tmp_path, tmp_path / "p.txt", tmp_path / "l.txt", *base,
                      name="listed.json")  # fmt: skip
    assert threads["metrics"] == one["metrics"] == listed["metrics"]
    assert [i["mIoU"] for i in threads["images"]] == [i["mIoU"] for i in one["images"]]


@pytest.mark.slow
def test_a_local_dask_cluster_of_processes_gives_the_single_process_result(folder):
    distributed = pytest.importorskip("distributed")
    tmp_path, _ = folder
    pairs, _ = find_pairs(tmp_path / "p", tmp_path / "l")
    ids = IdTable(3, 255)
    alone = ev.evaluate(pairs, ids)
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        address = cluster.scheduler_address
        shared = ev.evaluate(pairs[::-1], ids, scheduler=address)
        (tmp_path / "l" / "img3.png").write_bytes(b"broken")
        with pytest.raises(ev.EvaluationError, match=r"img3\.png: cannot be read"):
            ev.evaluate(pairs, ids, scheduler=address)
        skipped = ev.evaluate(pairs, ids, skip_bad=True, scheduler=address)
    assert shared.metrics == alone.metrics
    assert [i.scores for i in shared.images] == [i.scores for i in alone.images]
    assert [i.pair.name for i in skipped.images] == ["img0", "img1", "img2", "img4"]
    assert len(skipped.skipped) == 1 and "img3.png: cannot be read" in skipped.skipped[0]


# -- the command -----------------------------------------------------------------------


def test_the_command_runs_as_a_subprocess(folder):
    tmp_path, _ = folder
    done = subprocess.run(
        [sys.executable, "-m", "jdt_array", "evaluate", str(tmp_path / "p"),
         str(tmp_path / "l"), "--num-classes", "3", "--ignore-index", "255",
         "--workers", "2", "--class-names", str(tmp_path / "names.txt")],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("5 image pairs, 3 classes, in percent:")
    assert "| mIoUD |" in done.stdout and "[5/5] 100 % image pairs" in done.stderr


def test_the_help_lists_every_option_and_rules_out_probability_maps(capsys):
    with pytest.raises(SystemExit) as err:
        main(["evaluate", "--help"])
    assert err.value.code == 0
    text = capsys.readouterr().out
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = [o for a in parser._actions for o in a.option_strings if o.startswith("--")]
    assert set(options) == {
        "--help", "--num-classes", "--ignore-index", "--id-map", "--class-names",
        "--pred-suffix", "--label-suffix", "--q", "--worst", "--boundary",
        "--dilation-ratio", "--boundary-width", "--json", "--csv", "--skip-bad",
        "--workers", "--threads", "--scheduler",
    }  # fmt: skip
    assert all(option in text for option in options)
    assert "Probability maps are out of scope" in " ".join(text.split())


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--boundary-width", "2"], "--boundary-width is the band width of --boundary"),
        (["--boundary", "--boundary-width", "2", "--dilation-ratio", "0.1"], "not both"),
        (["--scheduler", "tcp://x:1", "--workers", "2"], "--workers and --threads are"),
    ],
)
def test_options_that_cannot_run_are_usage_errors(tmp_path, capsys, extra, message):
    folders = two_pngs(tmp_path)
    assert main(["evaluate", *folders, "--num-classes", "3", *extra]) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--q", "0"], "argument --q: must be in (0, 100], got 0"),
        (["--workers", "0"], "argument --workers: must be >= 1, got 0"),
        (["--worst", "-1"], "argument --worst: must be >= 0, got -1"),
    ],
)
def test_bad_numbers_are_argument_errors(tmp_path, capsys, extra, message):
    folders = two_pngs(tmp_path)
    with pytest.raises(SystemExit) as err:
        main(["evaluate", *folders, "--num-classes", "3", *extra])
    assert err.value.code == 2 and message in capsys.readouterr().err
