"""Bad input gets a clear error that names the argument and the shapes."""

import numpy as np
import pytest

import jdt_array

torch = pytest.importorskip("torch")

LOGITS = np.zeros((2, 3, 4, 5))
LABEL = np.zeros((2, 4, 5), dtype=np.int64)


def raises(exc, match, *args, **kwargs):
    with pytest.raises(exc, match=match):
        jdt_array.jdt_loss(*args, **kwargs)


def test_label_shape_mismatch():
    raises(ValueError, r"label.*\(2, 4, 5\).*\(2, 4, 4\)", LOGITS, LABEL[:, :, :4])
    raises(ValueError, r"soft.*\(2, 3, 4, 5\).*\(2, 2, 4, 5\)", LOGITS, LOGITS[:, :2])


def test_channels_last_needs_matching_label():
    raises(ValueError, r"class_axis=3", LOGITS, LABEL, class_axis=-1)


def test_non_floating_logits():
    raises(TypeError, "logits must be a floating array", LOGITS.astype(int), LABEL)


def test_label_of_wrong_dtype():
    raises(TypeError, "label must be an integer array", LOGITS, LABEL.astype(bool))


def test_class_axis_out_of_range():
    raises(ValueError, "class_axis=0", LOGITS, LABEL, class_axis=0)
    raises(ValueError, "class_axis=4", LOGITS, LABEL, class_axis=4)


def test_keep_mask_checked():
    raises(TypeError, "keep_mask must be a boolean", LOGITS, LABEL, keep_mask=LABEL)
    bad = np.ones((2, 4), dtype=bool)
    raises(ValueError, r"keep_mask.*\(2, 4, 5\).*\(2, 4\)", LOGITS, LABEL, keep_mask=bad)


def test_class_weights_length():
    raises(
        ValueError, r"class_weights.*\(3,\).*\(2,\)", LOGITS, LABEL, class_weights=[1, 2]
    )
    raises(ValueError, "non-negative", LOGITS, LABEL, class_weights=[1.0, -1.0, 1.0])


@pytest.mark.parametrize(
    ("option", "value", "exc"),
    [
        ("active_classes_mode_hard", "present", ValueError),
        ("active_classes_mode_soft", "SOME", ValueError),
        ("norm", 0.5, ValueError),
        ("alpha", -0.1, ValueError),
        ("beta", -1, ValueError),
        ("smooth", -1e-3, ValueError),
        ("gamma", 0.5, ValueError),
        ("threshold", -0.1, ValueError),
        ("mIoUD", -1.0, ValueError),
        ("alpha", float("nan"), ValueError),
        ("log_loss", 1, TypeError),
        ("ignore_index", 2.5, TypeError),
        ("norm", True, TypeError),
    ],
)
def test_option_out_of_range(option, value, exc):
    raises(exc, option, LOGITS, LABEL, **{option: value})


def test_all_level_weights_zero():
    raises(ValueError, "mIoUD, mIoUI and mIoUC", LOGITS, LABEL, mIoUD=0.0)


def test_hard_label_out_of_range_is_not_clamped():
    label = LABEL.copy()
    label[0, 0, 0] = 255
    raises(ValueError, r"outside \[0, 3\).*max 255", LOGITS, label)
    label[0, 0, 0] = -1
    raises(ValueError, r"outside \[0, 3\).*min -1", LOGITS, label)


def test_out_of_range_allowed_where_ignored_or_masked():
    label = LABEL.copy()
    label[0, 0, 0] = 255
    keep = np.ones(label.shape, dtype=bool)
    keep[0, 0, 0] = False
    a = jdt_array.jdt_loss(LOGITS, label, ignore_index=255)
    b = jdt_array.jdt_loss(LOGITS, label, keep_mask=keep)
    assert float(a) == pytest.approx(float(b))


def test_soft_label_outside_unit_interval():
    raises(ValueError, r"\[0, 1\]", LOGITS, np.full(LOGITS.shape, 1.5))


def test_mixed_libraries():
    with pytest.raises(TypeError, match="label is a numpy array"):
        jdt_array.jdt_loss(torch.zeros(2, 3, 4, 5), LABEL)
    with pytest.raises(TypeError, match="keep_mask is a torch array"):
        jdt_array.jdt_loss(LOGITS, LABEL, keep_mask=torch.ones(2, 4, 5, dtype=torch.bool))


def test_different_devices():
    logits = torch.zeros(2, 3, 4, 5)
    label = torch.zeros(2, 4, 5, dtype=torch.long, device="meta")
    with pytest.raises(ValueError, match="label is on device meta"):
        jdt_array.jdt_loss(logits, label)


def test_named_losses_fix_alpha_and_beta():
    with pytest.raises(TypeError):
        jdt_array.jaccard_loss(LOGITS, LABEL, alpha=0.5)
    with pytest.raises(TypeError):
        jdt_array.tversky_loss(LOGITS, LABEL)  # alpha and beta are required
