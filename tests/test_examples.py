"""The runnable examples in examples/: each is run on small sizes and must do what it
says (losses fall, metrics rise, gradients match), not merely run."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def load(name: str):
    """Import examples/<name>.py as a module (the folder is not a package)."""
    module_name = f"example_{name}"
    spec = importlib.util.spec_from_file_location(module_name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def one_torch_thread():
    """One intra-op thread: on a small shared CPU, torch's thread pool mostly waits."""
    torch = pytest.importorskip("torch")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def falls(losses: list[float], window: int = 5) -> bool:
    return np.mean(losses[-window:]) < 0.8 * np.mean(losses[:window])


def test_every_example_is_tested():
    tested = {"gradient_check", "torch_training", "torch_soft_labels", "jax_prototyping",
              "lightning_training"}  # fmt: skip
    assert {p.stem for p in EXAMPLES.glob("*.py")} == tested


def test_gradient_check_passes_for_every_hand_gradient(capsys):
    example = load("gradient_check")
    result = example.main(["--library", "numpy", "--shape", "2", "3", "3", "3"])
    assert result["passed"]
    checked = result["errors"]["numpy"]
    assert set(checked) == {case.name for case in example.cases()}
    assert max(checked.values()) < 1e-6
    assert "gradient check passed" in capsys.readouterr().out


def test_gradient_check_covers_every_hand_gradient():
    from jdt_array.grad import HAND_GRADIENTS

    example = load("gradient_check")
    assert {case.loss_fn for case in example.cases()} == set(HAND_GRADIENTS)


def test_gradient_check_catches_a_wrong_gradient(monkeypatch):
    import jdt_array
    from jdt_array.grad import HAND_GRADIENTS

    right = HAND_GRADIENTS[jdt_array.jaccard_loss]

    def off_by_one_percent(*args, **kwargs):
        loss, grad = right(*args, **kwargs)
        return loss, grad * 1.01

    monkeypatch.setitem(HAND_GRADIENTS, jdt_array.jaccard_loss, off_by_one_percent)
    result = load("gradient_check").main(
        ["--library", "numpy", "--shape", "1", "3", "3", "3"]
    )
    assert not result["passed"]
    errors = result["errors"]["numpy"]
    assert errors["jaccard, hard label"] > 1e-3
    assert errors["dice, soft label, per image"] < 1e-6  # dice has its own entry


def test_gradient_check_runs_as_a_script():
    script = EXAMPLES / "gradient_check.py"
    done = subprocess.run(
        [sys.executable, str(script), "--library", "numpy", "--shape", "1", "2", "3"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "gradient check passed" in done.stdout


def test_torch_training_lowers_the_loss_and_raises_miou(one_torch_thread, capsys):
    result = load("torch_training").main(["--steps", "40"])
    assert falls(result["losses"])
    assert result["after"]["mIoUD"] > result["before"]["mIoUD"] + 20
    assert result["after"]["mIoUI"] > result["before"]["mIoUI"] + 20
    assert "mIoUD" in capsys.readouterr().out


def test_torch_training_rejects_a_weight_outside_0_1():
    pytest.importorskip("torch")
    with pytest.raises(SystemExit):
        load("torch_training").main(["--ce-weight", "1.5"])


def test_torch_soft_labels_teacher_learns_and_student_moves_towards_it(one_torch_thread):
    result = load("torch_soft_labels").main(["--steps", "30"])
    assert falls(result["teacher_losses"])
    assert falls(result["student_losses"])
    assert result["teacher_gap"] < result["teacher_gap_before"] - 0.1
    assert result["student"]["mIoUD"] > result["student_before"]["mIoUD"] + 10
    assert result["teacher"]["mIoUD"] > 30


def test_jax_example_trains_and_vmap_gives_the_image_level_loss(capsys):
    pytest.importorskip("jax")
    result = load("jax_prototyping").main(["--steps", "30", "--optimizer", "adam"])
    assert result["optimizer"] == "hand-written Adam"
    assert falls(result["losses"])
    assert result["after"]["mIoUD"] > result["before"]["mIoUD"] + 20
    assert result["grad_gap"] < 1e-4  # custom_vjp backward == autodiff
    per_image = result["per_image"]
    assert per_image.shape == (32,) and np.all((per_image >= 0) & (per_image <= 1))
    np.testing.assert_allclose(per_image.mean(), result["image_level"], rtol=1e-5)
    assert "hardest test images" in capsys.readouterr().out


def test_jax_example_with_optax():
    pytest.importorskip("jax")
    pytest.importorskip("optax")
    result = load("jax_prototyping").main(["--steps", "20", "--optimizer", "optax"])
    assert result["optimizer"] == "optax.adam"
    assert falls(result["losses"])


def test_lightning_training_lowers_the_loss_and_logs_a_rising_miou(one_torch_thread):
    pytest.importorskip("lightning")
    pytest.importorskip("torchmetrics")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = load("lightning_training").main(["--epochs", "4"])
    # The validation loop has its loader (Lightning warns when a step has none).
    assert not [w for w in caught if "val_dataloader" in str(w.message)]
    assert falls(result["losses"])
    # Logged with self.log_dict from the torchmetrics metric's compute().
    for key in ("mIoUD", "mIoUI", "mIoUC"):
        assert result["after"][key] > result["before"][key] + 20, key
