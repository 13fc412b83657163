"""The jdt-array command: check, demo, bench, and its errors."""

import io
import json

import numpy as np
import pytest

from jdt_array.__main__ import main
from jdt_array._tools.check import CASES, run_checks
from jdt_array._tools.demo import make_dataset, run_demo
from jdt_array._tools.progress import show_progress


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


def test_check_reports_its_progress_on_stderr(capsys):
    assert main(["check", "--backends", "numpy", "--dtypes", "float64"]) == 0
    err = capsys.readouterr().err  # not a terminal: a line every tenth of the way
    lines = [line for line in err.splitlines() if line.startswith("[")]
    assert 5 <= len(lines) <= 11 and lines[-1].startswith("[") and "100 %" in lines[-1]


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


def test_version_prints_the_package_version(capsys):
    import jdt_array

    with pytest.raises(SystemExit) as err:
        main(["--version"])
    assert err.value.code == 0
    assert capsys.readouterr().out == f"jdt-array {jdt_array.__version__}\n"


def test_an_unknown_command_is_an_error_naming_it(capsys):
    with pytest.raises(SystemExit) as err:
        main(["foo", "--json"])
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert "unknown command 'foo'" in message and "check, demo, bench" in message


def test_options_without_a_command_go_to_check(capsys):
    assert main(["--backends", "numpy", "--dtypes", "float64", "--json"]) == 0
    assert {r["backend"] for r in json.loads(capsys.readouterr().out)} == {"numpy"}


def test_check_names_a_selected_library_that_is_not_installed(monkeypatch, capsys):
    from jdt_array._tools.libraries import ArrayLibrary

    real = ArrayLibrary.installed
    monkeypatch.setattr(
        ArrayLibrary, "installed", lambda lib: lib.module != "jax" and real(lib)
    )
    args = [
        "check",
        "--backends",
        "numpy",
        "jax",
        "--dtypes",
        "float64",
        "--shape",
        "1",
        "2",
        "3",
    ]
    assert main(args) == 1  # a selected library went unchecked
    out, err = capsys.readouterr()
    assert 'not checked: jax is not installed (pip install "jdt-array[jax]")' in err
    assert "numpy" in out and "0 failed" in out  # the rest was still checked


def test_check_says_which_dtypes_the_selected_libraries_support(capsys):
    assert main(["check", "--backends", "numpy", "--dtypes", "bfloat16"]) == 1
    out, err = capsys.readouterr()
    assert out == ""  # no empty table
    assert "no selected library supports the dtypes bfloat16" in err
    assert "numpy: float64 float32 float16" in err


@pytest.mark.parametrize("command", ["check", "demo"])
def test_a_negative_seed_is_an_argument_error(command, capsys):
    with pytest.raises(SystemExit) as err:
        main([command, "--seed", "-1"])
    assert err.value.code == 2
    message = capsys.readouterr().err
    assert "argument --seed: must be >= 0, got -1" in message
    assert "Traceback" not in message


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_progress_in_a_log_is_a_line_every_tenth_of_the_way():
    log = io.StringIO()
    for step in range(1, 301):
        show_progress(step, 300, f"loss {step}", stream=log)
    lines = log.getvalue().splitlines()
    assert "\r" not in log.getvalue()
    assert lines[0] == "[30/300]  10 % loss 30" and lines[-1] == "[300/300] 100 % loss 300"
    assert len(lines) == 10
    short = io.StringIO()
    for step in range(1, 4):  # fewer steps than lines: one line each
        show_progress(step, 3, "x", stream=short)
    assert len(short.getvalue().splitlines()) == 3


def test_progress_on_a_terminal_redraws_one_line():
    terminal = Terminal()
    for step in range(1, 51):
        show_progress(step, 50, "training", stream=terminal)
    text = terminal.getvalue()
    assert text.count("\r") == 50 and text.count("\n") == 1 and text.endswith("\n")
    assert text.rsplit("\r", 1)[1].startswith("[" + "#" * 30 + "] 50/50 training")


def test_bench_help_calls_itself_jdt_array_bench(capsys):
    with pytest.raises(SystemExit) as err:
        main(["bench", "--help"])
    assert err.value.code == 0
    assert capsys.readouterr().out.startswith("usage: jdt-array bench")
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())  # help wraps its lines
    assert "'jdt-array bench --help' lists its options" in help_text


def test_outside_a_checkout_bench_says_where_the_suite_lives(monkeypatch, tmp_path, capsys):
    import jdt_array.__main__ as cli

    monkeypatch.setattr(cli, "SOURCE_ROOT", tmp_path)  # an install without benchmarks/
    with pytest.raises(SystemExit):
        main(["--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "only in a source checkout" in help_text and "bench --help" not in help_text
    assert main(["bench", "--quick"]) == 2
    assert "source checkout" in capsys.readouterr().err


def test_the_demo_plot_has_a_class_legend_the_mious_and_one_axes_per_loss(monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from jdt_array._tools.demo import CLASSES, TRAININGS, Run, save_plot

    images, labels = make_dataset(3, 8, seed=0)
    runs = {
        name: Run(name, list(np.linspace(2, 1, 30) * (i + 1)), {"mIoUD": 40.0 + i,
                  "mIoUI": 50.0 + i}, labels[::-1], loss_name)
        for i, (name, loss_name, _) in enumerate(TRAININGS)
    }  # fmt: skip
    figures = []
    monkeypatch.setattr(plt, "close", figures.append)
    save_plot(runs, images, labels, "/dev/null")
    (fig,) = figures
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == list(CLASSES)
    titles = [ax.get_title() for ax in fig.axes]
    assert "CE\ntest mIoUD 40.0 %, mIoUI 50.0 %" in titles
    assert "CE + JDT (0.25 : 0.75)\ntest mIoUD 41.0 %, mIoUI 51.0 %" in titles
    curves = [ax for ax in fig.axes if ax.get_xlabel() == "step"]
    assert [ax.get_ylabel() for ax in curves] == [loss for _, loss, _ in TRAININGS]
    plt.close(fig)


def test_the_demo_names_a_framework_that_is_not_installed(monkeypatch):
    from jdt_array._tools.libraries import ArrayLibrary

    monkeypatch.setattr(ArrayLibrary, "installed", lambda lib: lib.module != "torch")
    with pytest.raises(
        SystemExit, match=r'torch is not installed \(pip install "jdt-array\[torch\]"\)'
    ):
        main(["demo", "--framework", "torch"])


def test_check_names_an_installed_library_without_a_usable_device(monkeypatch, capsys):
    from jdt_array._tools.libraries import ArrayLibrary

    real = ArrayLibrary.available
    monkeypatch.setattr(ArrayLibrary, "installed", lambda lib: True)
    monkeypatch.setattr(
        ArrayLibrary, "available", lambda lib: lib.module != "cupy" and real(lib)
    )
    assert main(["check", "--backends", "cupy"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "not checked: cupy is installed but finds no device (cuda) here" in err
