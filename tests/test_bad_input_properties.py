"""Property: whatever it is given, ``jdt_loss`` either raises ``ValueError`` or
``TypeError`` with a message naming the argument at fault, or returns what the float64
reference returns (NaN for a NaN or +inf logit at a kept pixel), on every backend and
both kernel paths (channels first and last).

The bad inputs are drawn by hypothesis: NaN and inf logits (at kept and at dropped
pixels), labels out of range, NaN or above 1, wrong dtypes and shapes, bad keep masks,
options at and past their bounds. Value checks read the label, so inside ``jax.jit``
they are not made (documented): there the label faults are not drawn.
"""

import numpy as np
import pytest
from _support.reference import jdt_loss_reference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import jdt_array

# Faults of the arrays: name -> the argument the error must name (None: no error).
ARRAY_FAULTS = {
    "none": None,
    "nan-logit": None,
    "inf-logit": None,
    "garbage-at-dropped-pixels": None,
    "label-out-of-range": "label",
    "soft-label-nan": "label",
    "soft-label-above-one": "label",
    "label-shape": "label",
    "label-bool-dtype": "label",
    "integer-logits": "logits",
    "keep-mask-dtype": "keep_mask",
    "keep-mask-shape": "keep_mask",
    "class-axis-batch": "class_axis",
}
VALUE_CHECKS = {"label-out-of-range", "soft-label-nan", "soft-label-above-one"}

# Options at their bounds (valid) and past them (an error naming the option).
AT_BOUNDS = [
    {"gamma": 1.0}, {"smooth": 0.0}, {"threshold": 0.0}, {"norm": 1.0},
    {"alpha": 0.0, "beta": 0.0}, {"mIoUD": 0.0, "mIoUI": 1.0},
    {"mIoUD": 0.0, "mIoUC": 1.0}, {"threshold": 0.999, "mIoUI": 1.0},
    {"class_weights": [0.0, 1.0, 2.0]},
]  # fmt: skip
PAST_BOUNDS = [
    ({"gamma": 0.5}, "gamma"), ({"smooth": -1e-3}, "smooth"),
    ({"threshold": 1.0}, "threshold"), ({"norm": 0.5}, "norm"),
    ({"alpha": -0.1}, "alpha"), ({"mIoUD": 0.0}, "mIoU"),
    ({"gamma": float("nan")}, "gamma"), ({"class_weights": [1.0, -1.0, 1.0]},
                                         "class_weights"),
    ({"active_classes_mode_hard": "SOME"}, "active_classes_mode_hard"),
]  # fmt: skip


@st.composite
def cases(draw, jit):
    faults = [f for f in ARRAY_FAULTS if not (jit and f in VALUE_CHECKS)]
    fault = draw(st.sampled_from(faults))
    soft = fault.startswith("soft") or (
        not fault.startswith("label") and draw(st.booleans())
    )
    shape = (draw(st.integers(1, 2)), 3, draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    class_axis = draw(st.sampled_from([1, -1]))
    option = draw(st.sampled_from([None, *range(len(AT_BOUNDS) + len(PAST_BOUNDS))]))
    masked = draw(st.booleans()) or fault == "garbage-at-dropped-pixels"
    seed = draw(st.integers(0, 2**16))
    return fault, soft, shape, class_axis, option, masked, seed


def make_case(fault, soft, shape, class_axis, option, masked, seed):
    """The NumPy arguments of one call, and the arguments its error may name (a
    fault of the arrays and one of the options may come together: either is named)."""
    rng = np.random.default_rng(seed)
    channels_last = class_axis == -1
    logits = rng.normal(scale=2.0, size=shape)
    pixels = (shape[0], *shape[2:])
    if soft:
        label = rng.random(shape)
        label /= label.sum(axis=1, keepdims=True)
    else:
        label = rng.integers(0, 3, size=pixels)
    keep = rng.random(pixels) < 0.7 if masked else None
    options, names = {}, [ARRAY_FAULTS[fault]] if ARRAY_FAULTS[fault] else []
    if option is not None:
        if option < len(AT_BOUNDS):
            options = dict(AT_BOUNDS[option])
        else:
            options, past = PAST_BOUNDS[option - len(AT_BOUNDS)]
            names.append(past)
    at = (0, 1, 0, 0)  # a pixel that is kept
    if keep is not None:
        keep[0, 0, 0] = True
    if fault == "nan-logit":
        logits[at] = np.nan
    elif fault == "inf-logit":
        logits[at] = np.inf
    elif fault == "garbage-at-dropped-pixels":
        dropped = np.broadcast_to(~keep[:, None], shape)
        logits = np.where(dropped, rng.choice([np.nan, np.inf, -np.inf, 1e30], shape),
                          logits)  # fmt: skip
        if soft:
            label = np.where(dropped, rng.choice([np.nan, 7.0], shape), label)
    elif fault == "label-out-of-range":
        label[0, 0, 0] = rng.choice([3, -1])
    elif fault == "soft-label-nan":
        label[at] = np.nan
    elif fault == "soft-label-above-one":
        label[at] = 1.5
    elif fault == "label-shape":
        label = label[:, :1] if soft else label[..., None]  # one class; an extra axis
    elif fault == "label-bool-dtype":
        label = np.ones(pixels, dtype=bool)
    elif fault == "integer-logits":
        logits = np.round(logits).astype(np.int64)
    elif fault == "keep-mask-dtype":
        keep = np.ones(pixels, dtype=np.int64)
    elif fault == "keep-mask-shape":
        keep = np.ones((shape[0], 1), dtype=bool)
    elif fault == "class-axis-batch":
        class_axis = 0
    if channels_last and fault != "class-axis-batch":
        logits = np.moveaxis(logits, 1, -1)
        if soft and label.ndim == 4:
            label = np.moveaxis(label, 1, -1)
    return logits, label, keep, {**options, "class_axis": class_axis}, names


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_any_input_gives_a_named_error_or_the_reference_value(backend, data):
    fault, soft, shape, class_axis, option, masked, seed = data.draw(cases(backend.jit))
    logits, label, keep, options, names = make_case(
        fault, soft, shape, class_axis, option, masked, seed
    )
    arrays = [backend.asarray(logits), backend.asarray(label)]
    if keep is not None:
        arrays.append(backend.asarray(keep))

    def loss(z, y, *k):
        return jdt_array.jdt_loss(z, y, **({"keep_mask": k[0]} if k else {}), **options)

    if names:
        with pytest.raises((ValueError, TypeError)) as error:
            backend.call(loss, *arrays)
        assert any(name in str(error.value) for name in names), f"{fault}: {error.value}"
        return
    got = backend.to_numpy(backend.call(loss, *arrays))
    want = jdt_loss_reference(logits, label, keep_mask=keep, **options)
    if np.isnan(want):
        assert np.isnan(got), f"{fault}: {got} where the reference gives NaN"
    else:
        np.testing.assert_allclose(got, want, rtol=backend.rtol, atol=backend.atol)
