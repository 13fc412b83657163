"""The jdt-array command: check, demo, bench, and its errors."""

import json

import numpy as np
import pytest

from jdt_array.__main__ import main
from jdt_array._tools.check import CASES, run_checks
from jdt_array._tools.demo import make_dataset, run_demo


def test_check_passes_and_reports_every_backend(capsys):
    assert (
        main(
            [
                "--backends",
                "numpy",
                "torch",
                "--dtypes",
                "float64",
                "--shape",
                "2",
                "3",
                "4",
                "4",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert "0 failed" in out
    assert "torch" in out and "numpy" in out


def test_check_json(capsys):
    assert main(["check", "--backends", "numpy", "--json", "--seed", "3"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert {r["case"] for r in results} == {c.name for c in CASES}
    assert all(r["passed"] and r["rel_diff"] < 1e-4 for r in results)


def test_check_fails_on_disagreement():
    from jdt_array._tools.libraries import ArrayLibrary

    class Perturbed(ArrayLibrary):
        """NumPy whose float32 logits arrive shifted: the report must catch it."""

        def from_numpy(self, a, dtype=None):
            out = super().from_numpy(a, dtype)
            return out * 1.5 if dtype == "float32" and out.dtype.kind == "f" else out

    results = run_checks([Perturbed("numpy")], ("float32", "float64"), cases=CASES[:1])
    assert [r.passed for r in results] == [False, True]
    assert results[0].rel_diff > 1e-3


def test_bad_arguments_exit_with_usage(capsys):
    with pytest.raises(SystemExit) as err:
        main(["check", "--shape", "3"])
    assert err.value.code == 2
    assert "--shape" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["check", "--backends", "tensorflow"])
    with pytest.raises(SystemExit):
        main(["demo", "--steps", "0"])


def test_synthetic_data_has_every_class():
    images, labels = make_dataset(16, 32, seed=0)
    assert images.shape == (16, 32, 32, 3) and labels.shape == (16, 32, 32)
    counts = np.bincount(labels.ravel(), minlength=4)
    assert np.all(counts > 0)
    assert counts[2] < counts[1] and counts[3] < counts[1]  # thin and small objects


@pytest.mark.parametrize("framework", ["jax", "numpy"])
def test_demo_trains_and_compares(framework, tmp_path):
    pytest.importorskip(framework)
    plot = tmp_path / "demo.png"
    runs = run_demo(framework, steps=40, plot=str(plot), progress=lambda *a: None)
    assert len(runs) == 2
    for run in runs.values():
        assert np.mean(run.losses[-10:]) < np.mean(run.losses[:10])
        assert 0 <= run.metrics["mIoUI"] <= 100
    pytest.importorskip("matplotlib")
    assert plot.stat().st_size > 1000
