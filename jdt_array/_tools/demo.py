"""``jdt-array demo``: cross-entropy alone against the CE + JDT mixture, on synthetic data.

A small network (a 3x3 convolution, ReLU, a 1x1 convolution) learns to segment
generated images of four classes: background, large blobs, thin lines and small dots.
It is trained twice from the same start, with cross-entropy alone and with the FAQ's
0.25 : 0.75 mixture of cross-entropy and the Jaccard loss, and evaluated with the
fine-grained metrics, where thin and small objects make the mIoU levels differ.

The whole training step is array-API code: the logits' gradient comes from
:func:`jdt_array.value_and_grad` and the network's from hand-written backprop, so the
same code trains on NumPy, PyTorch or JAX (under ``jax.jit``).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..compound import ce_jdt_loss
from ..cross_entropy import cross_entropy
from ..grad import value_and_grad
from ..metrics import FineGrainedMetrics
from .libraries import INSTALL_HINTS, ArrayLibrary
from .progress import show_progress

CLASSES = ("background", "blob", "line", "dot")
# Mean colour of each class; the noise makes a single pixel ambiguous.
COLOURS = np.array([[0.2, 0.2, 0.2], [0.8, 0.3, 0.3], [0.3, 0.7, 0.3], [0.3, 0.3, 0.9]])
REPORTED = ("Acc", "mIoUD", "mIoUI", "mIoUC", "mIoUI1", "mIoUC1", "mIoUIQ", "mDiceI",
            "mBIoUD", "mBIoUI")  # fmt: skip


def make_dataset(n: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` images (n, size, size, 3) and labels (n, size, size) of the four classes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    labels = np.zeros((n, size, size), dtype=np.int64)
    for label in labels:
        for _ in range(rng.integers(1, 3)):  # blobs: large discs
            cy, cx, r = rng.uniform(0, size, 2).tolist() + [rng.uniform(size / 8, size / 4)]
            label[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = 1
        for _ in range(rng.integers(1, 3)):  # thin lines, one pixel wide
            angle, offset = rng.uniform(0, np.pi), rng.uniform(-size / 3, size / 3)
            dist = (xx - size / 2) * np.sin(angle) - (yy - size / 2) * np.cos(angle)
            label[np.abs(dist - offset) < 0.6] = 2
        for _ in range(rng.integers(0, 4)):  # small dots, 2 x 2
            y, x = rng.integers(0, size - 2, 2)
            label[y : y + 2, x : x + 2] = 3
    images = COLOURS[labels] + rng.normal(scale=0.35, size=(n, size, size, 3))
    return images.astype(np.float32), labels


def patches(xp: Any, images: Any) -> Any:
    """3x3 neighbourhoods (N, H, W, 27) of channels-last images, zero-padded."""
    n, h, w, c = images.shape
    zeros_row = xp.zeros((n, 1, w, c), dtype=images.dtype, device=_device(images))
    padded = xp.concat([zeros_row, images, zeros_row], axis=1)
    zeros_col = xp.zeros((n, h + 2, 1, c), dtype=images.dtype, device=_device(images))
    padded = xp.concat([zeros_col, padded, zeros_col], axis=2)
    shifts = [padded[:, dy : dy + h, dx : dx + w, :] for dy in range(3) for dx in range(3)]
    return xp.concat(shifts, axis=3)


def forward(xp: Any, params: tuple, features: Any) -> tuple[Any, Any]:
    w1, b1, w2, b2 = params
    pre = features @ w1 + b1
    hidden = xp.where(pre > 0, pre, 0.0)
    return hidden @ w2 + b2, pre


def train_step(xp, loss_fn, params, moments, step, features, label, lr):
    """One Adam step; the logits' gradient from value_and_grad, the rest by hand."""
    w2 = params[2]
    logits, pre = forward(xp, params, features)
    loss, g_logits = value_and_grad(loss_fn, logits, label)
    hidden = xp.where(pre > 0, pre, 0.0)
    k, c = w2.shape
    h_flat, g_flat = xp.reshape(hidden, (-1, k)), xp.reshape(g_logits, (-1, c))
    g_hidden = xp.where(pre > 0, g_logits @ xp.matrix_transpose(w2), 0.0)
    gh_flat = xp.reshape(g_hidden, (-1, k))
    f_flat = xp.reshape(features, (-1, features.shape[-1]))
    grads = (
        xp.matrix_transpose(f_flat) @ gh_flat,
        xp.sum(gh_flat, axis=0),
        xp.matrix_transpose(h_flat) @ g_flat,
        xp.sum(g_flat, axis=0),
    )
    new_params, new_moments = [], []
    t = step + 1
    for p, g, (m, v) in zip(params, grads, moments, strict=True):
        m = 0.9 * m + 0.1 * g
        v = 0.999 * v + 0.001 * g * g
        update = (m / (1 - 0.9**t)) / (xp.sqrt(v / (1 - 0.999**t)) + 1e-8)
        new_params.append(p - lr * update)
        new_moments.append((m, v))
    return tuple(new_params), tuple(new_moments), loss


# The two trainings: (name, the quantity its loss curve shows, the loss).
TRAININGS = (
    ("CE", "cross-entropy", functools.partial(cross_entropy, class_axis=-1)),
    ("CE + JDT (0.25 : 0.75)", "0.25 cross-entropy + 0.75 Jaccard loss",
     functools.partial(ce_jdt_loss, class_axis=-1)),
)  # fmt: skip


@dataclass
class Run:
    name: str
    losses: list
    metrics: dict
    predictions: np.ndarray
    loss_name: str = "training loss"


def init_params(lib: ArrayLibrary, hidden: int, seed: int):
    rng = np.random.default_rng(seed)
    shapes = [(27, hidden), (hidden,), (hidden, len(CLASSES)), (len(CLASSES),)]
    scales = [1 / np.sqrt(27), 0.0, 1 / np.sqrt(hidden), 0.0]
    arrays = (rng.normal(size=s) * sc for s, sc in zip(shapes, scales, strict=True))
    params = tuple(lib.from_numpy(a, "float32") for a in arrays)
    moments = tuple((p * 0.0, p * 0.0) for p in params)
    return params, moments


def train(lib, name, loss_fn, data, *, steps, batch, lr, seed, progress) -> Run:
    from array_api_compat import array_namespace

    train_x, train_y, test_x, test_y = data
    xp = array_namespace(train_x)
    params, moments = init_params(lib, 32, seed)
    step_fn = functools.partial(train_step, xp, loss_fn)
    if lib.can_jit:
        step_fn = lib.jit(step_fn)
    order = np.random.default_rng(seed + 1)
    losses = []
    for step in range(steps):
        idx = order.choice(train_x.shape[0], size=batch, replace=False)
        features = patches(xp, train_x[lib.from_numpy(idx), ...])
        params, moments, loss = step_fn(
            params, moments, step, features, train_y[lib.from_numpy(idx), ...], lr
        )
        losses.append(float(lib.to_numpy(loss)))
        progress(step + 1, steps, f"{name}: loss {losses[-1]:.3f}")
    logits, _ = forward(xp, params, patches(xp, test_x))
    prob = xp.exp(logits - xp.max(logits, axis=-1, keepdims=True))
    prob = prob / xp.sum(prob, axis=-1, keepdims=True)
    # boundary IoU too: how well the models get the objects' edges (d = 1 on 32 x 32)
    metrics = FineGrainedMetrics(len(CLASSES), q=1, boundary=True)
    metrics.update(prob, test_y, class_axis=-1)
    pred = np.argmax(lib.to_numpy(logits), axis=-1)
    return Run(name, losses, metrics.compute(), pred)


def choose_library(framework: str | None) -> ArrayLibrary:
    order = [framework] if framework else ["jax", "torch", "numpy"]
    for module in order:
        lib = ArrayLibrary(module)
        if lib.available():
            return lib
    raise SystemExit(
        f"jdt-array demo: {framework} is not installed ({INSTALL_HINTS[framework]})"
    )


def run_demo(
    framework: str | None = None,
    *,
    steps: int = 300,
    seed: int = 0,
    plot: str | None = "jdt-array-demo.png",
    progress=show_progress,
) -> dict[str, Run]:
    """Train with CE and with CE + JDT; print the metrics side by side; save a plot."""
    lib = choose_library(framework)
    start = time.perf_counter()
    train_x, train_y = make_dataset(96, 32, seed)
    test_x, test_y = make_dataset(48, 32, seed + 100)
    data = tuple(lib.from_numpy(a) for a in (train_x, train_y, test_x, test_y))
    print(f"jdt-array demo on {lib.name}: 96 training and 48 test images of 32 x 32, "
          f"classes {', '.join(CLASSES)}")  # fmt: skip
    runs = {}
    for name, loss_name, loss_fn in TRAININGS:
        runs[name] = train(lib, name, loss_fn, data, steps=steps, batch=8, lr=0.01,
                           seed=seed, progress=progress)  # fmt: skip
        runs[name].loss_name = loss_name
    print(format_comparison(runs))
    print(f"\n{time.perf_counter() - start:.1f} s on {lib.name}")
    if plot:
        save_plot(runs, test_x, test_y, plot)
    return runs


def format_comparison(runs: dict[str, Run]) -> str:
    names = list(runs)
    lines = [f"{'metric (%)':<10}" + "".join(f"{n:>26}" for n in names)]
    for key in REPORTED:
        lines.append(
            f"{key:<10}" + "".join(f"{runs[n].metrics[key]:>26.2f}" for n in names)
        )
    return "\n".join(lines)


def save_plot(runs: dict[str, Run], images, labels, filename: str) -> None:
    """Each training's loss curve on its own axes (the losses are different
    quantities), and three test images with their label and each model's prediction,
    titled with the model's mIoU; a legend of the class colours."""
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is not installed: no plot (pip install matplotlib)")
        return
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(runs)
    columns = 2 + len(names)  # image, label, one prediction per model
    fig = plt.figure(figsize=(2.5 * columns, 11))
    grid = fig.add_gridspec(4, columns, height_ratios=[1.2, 1, 1, 1])
    halves = np.array_split(np.arange(columns), len(names))
    for cols, name in zip(halves, names, strict=True):
        curve = fig.add_subplot(grid[0, cols[0] : cols[-1] + 1])
        _loss_curve(curve, runs[name])
    cmap = ListedColormap(COLOURS)
    for row, i in enumerate(range(3), start=1):
        panels = [
            (np.clip(images[i], 0, 1), "image"),
            (labels[i], "label"),
            *((runs[n].predictions[i], _prediction_title(runs[n], first=row == 1))
              for n in names),
        ]  # fmt: skip
        for col, (img, title) in enumerate(panels):
            ax = fig.add_subplot(grid[row, col])
            ax.imshow(img, cmap=None if img.ndim == 3 else cmap, vmin=0, vmax=3,
                      interpolation="nearest")  # fmt: skip
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    handles = [Patch(color=c, label=n) for c, n in zip(COLOURS, CLASSES, strict=True)]
    fig.legend(handles=handles, loc="lower center", ncol=len(CLASSES), fontsize=9,
               title="classes (label and predictions)", title_fontsize=9)  # fmt: skip
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(filename, dpi=100)
    plt.close(fig)
    print(f"saved {filename}")


def _prediction_title(run: Run, *, first: bool) -> str:
    """The model's name; over its first prediction also its test-set mIoU."""
    if not first:
        return run.name
    m = run.metrics
    return f"{run.name}\ntest mIoUD {m['mIoUD']:.1f} %, mIoUI {m['mIoUI']:.1f} %"


def _loss_curve(ax, run: Run, window: int = 10) -> None:
    """One training's loss, raw and as a moving mean over ``window`` steps."""
    steps = np.arange(1, len(run.losses) + 1)
    ax.plot(steps, run.losses, alpha=0.3, lw=0.8, label="per step")
    if len(run.losses) >= window:
        mean = np.convolve(run.losses, np.ones(window) / window, mode="valid")
        ax.plot(steps[window - 1 :], mean, label=f"mean of {window} steps")
    ax.set_title(f"{run.name}: its training loss", fontsize=9)
    ax.set_xlabel("step")
    ax.set_ylabel(run.loss_name, fontsize=8)
    ax.legend(fontsize=7)


def _device(x):
    from array_api_compat import device

    return device(x)
