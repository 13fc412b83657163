"""What the benchmarks time: one forward + backward step per (path, case).

A *path* is a way to run a loss (a library, a device, eager or compiled, and for the
peers another package); a *case* is a loss configuration. ``make_step`` returns a
zero-argument function that runs one synchronized step on inputs already on the device.
"""

from __future__ import annotations

import contextlib
import functools
import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from jdt_array._tools.libraries import ArrayLibrary

CASES = {
    "jaccard-D": ("jaccard_loss", {}),
    "dice-D": ("dice_loss", {}),
    "jaccard-I+C": ("jaccard_loss", {"mIoUD": 0.0, "mIoUI": 1.0, "mIoUC": 1.0}),
    "ce-jdt": ("ce_jdt_loss", {}),
    # Soft labels (a softmax of random scores, shaped like the logits).
    "jaccard-D-soft": ("jaccard_loss", {}),
    "dice-D-soft": ("dice_loss", {}),
    "jaccard-I+C-soft": ("jaccard_loss", {"mIoUD": 0.0, "mIoUI": 1.0, "mIoUC": 1.0}),
    "lovasz-softmax": ("lovasz_softmax_loss", {}),
    "metrics-update": ("metrics", {}),
}

# Paths that run every case, and peers that run only the cases they implement.
PATHS = {
    "numpy": "numpy, value_and_grad (hand-derived gradient)",
    "torch-eager": "PyTorch eager, hand-derived backward (the module default)",
    "torch-eager-autodiff": "PyTorch eager, autograd through the forward",
    "torch-compile": "PyTorch, torch.compile of the loss",
    "torch-eager-triton": "PyTorch eager, the fused Triton kernels (GPU only)",
    "torch-compile-triton": "PyTorch, torch.compile, the fused Triton kernels (GPU only)",
    "jax-jit": "JAX jit of jax.value_and_grad (autodiff)",
    "jax-jit-vjp": "JAX jit, hand-derived custom_vjp",
    "jax-plain": "yardstick: JAX jit of jax.value_and_grad of a plain one-hot-free formula",
    "cupy": "CuPy, value_and_grad (hand-derived gradient)",
    "monai": "peer: MONAI DiceLoss / Jaccard variant (softmax, one-hot, batch=True)",
    "onehot-baseline": "peer: the reference JDTLoss algorithm (float one-hot, |p - y|)",
    "reference-replica": "peer: the reference JDTLoss forward, op for op (defaults)",
}
PEER_CASES = {
    "monai": ("jaccard-D", "dice-D"),
    "onehot-baseline": ("jaccard-D", "dice-D", "jaccard-I+C"),
    "reference-replica": ("jaccard-D", "dice-D", "lovasz-softmax"),
    "jax-plain": (
        "jaccard-D",
        "dice-D",
        "jaccard-I+C",
        "jaccard-D-soft",
        "dice-D-soft",
        "jaccard-I+C-soft",
    ),
}
SOFT_CASES = ("jaccard-D-soft", "dice-D-soft", "jaccard-I+C-soft")
# The kernel choice of the PyTorch paths (JDT_ARRAY_TORCH_KERNEL while they run).
TORCH_KERNEL = {"torch-eager-triton": "triton", "torch-compile-triton": "triton"}


@dataclass
class Step:
    run: Callable[[], None]
    input_bytes: int
    # XLA's compiled temporary memory (memory_analysis().temp_size_in_bytes), for JAX
    xla_temp_bytes: int | None = None


def applies(path: str, case: str, device: str) -> bool:
    if path in PEER_CASES and case not in PEER_CASES[path]:
        return False
    if case in SOFT_CASES and path in ("numpy", "cupy", "torch-compile"):
        return False  # the soft-label rows are for the autodiff / custom_vjp paths
    if case == "metrics-update" and path not in ("numpy", "torch-eager", "jax-jit", "cupy"):
        return False  # metrics have no backward: one path per library
    if path == "numpy":
        return device == "cpu"
    if path in TORCH_KERNEL:  # Triton's interpreter on CPU is for tests, not timing
        return device == "cuda"
    if path == "cupy":
        return device == "cuda"
    return True


def make_inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(shape, dtype=np.float32)
    label = rng.integers(0, shape[1], size=(shape[0], *shape[2:]), dtype=np.int64)
    return logits, label


def make_soft_label(shape, seed=1):
    """Per-class probabilities shaped like the logits (a softmax of random scores)."""
    z = np.random.default_rng(seed).standard_normal(shape, dtype=np.float32)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def make_step(path: str, case: str, shape, device: str) -> Step:
    logits, label = make_inputs(shape)
    if case in SOFT_CASES:
        label = make_soft_label(shape)
    return _FACTORIES[path.split("-")[0]](path, case, logits, label, device)


def _loss(case):
    import jdt_array

    name, options = CASES[case]
    return functools.partial(getattr(jdt_array, name), **options)


def _numpy(path, case, logits, label, device):
    import jdt_array

    if case == "metrics-update":
        return _metrics_step(logits, label)
    loss = _loss(case)
    return Step(lambda: jdt_array.value_and_grad(loss, logits, label), logits.nbytes)


def _on(module, device, *arrays):
    """The NumPy ``arrays`` on a library and device, and that library."""
    lib = ArrayLibrary(module, device)
    return (lib, *(lib.from_numpy(a) for a in arrays))


def _cupy(path, case, logits, label, device):
    import jdt_array

    lib, x, y = _on("cupy", device, logits, label)
    if case == "metrics-update":
        return _metrics_step(x, y, sync=lib.synchronize)

    def run():
        jdt_array.value_and_grad(_loss(case), x, y)
        lib.synchronize()

    return Step(run, logits.nbytes)


def _torch(path, case, logits, label, device):
    import torch

    from jdt_array.backends import torch as jt

    lib, x, y = _on("torch", device, logits, label)
    sync = lib.synchronize
    if case == "metrics-update":
        return _metrics_step(x, y, sync=sync)
    name, options = CASES[case]
    if name in ("jaccard_loss", "dice_loss"):
        ab = 1.0 if name == "jaccard_loss" else 0.5
        backward = "vjp" if path == "torch-eager" else "autodiff"
        loss = functools.partial(
            jt.jdt_loss, alpha=ab, beta=ab, backward=backward, **options
        )
    else:
        loss = _loss(case)
    if path.startswith("torch-compile"):
        loss = torch.compile(loss)
    choice = TORCH_KERNEL.get(path, "auto")

    def run():
        with kernel_choice(choice):
            z = x.detach().requires_grad_(True)
            loss(z, y).backward()
            sync()

    return Step(run, logits.nbytes)


@contextlib.contextmanager
def kernel_choice(choice: str):
    """``JDT_ARRAY_TORCH_KERNEL=choice`` for the duration (read at every call)."""
    before = os.environ.get("JDT_ARRAY_TORCH_KERNEL")
    os.environ["JDT_ARRAY_TORCH_KERNEL"] = choice
    try:
        yield
    finally:
        if before is None:
            del os.environ["JDT_ARRAY_TORCH_KERNEL"]
        else:
            os.environ["JDT_ARRAY_TORCH_KERNEL"] = before


def _jax(path, case, logits, label, device):
    import jax

    from jdt_array.backends import jax as jj

    _, x, y = _on("jax", device, logits, label)
    if case == "metrics-update":
        return _jax_metrics_step(x, y)
    name, options = CASES[case]
    if path == "jax-plain":
        loss = functools.partial(plain_jax_loss, **_plain_options(case))
    elif path == "jax-jit-vjp" and name in ("jaccard_loss", "dice_loss"):
        loss = functools.partial(getattr(jj, name), **options)
    else:
        loss = _loss(case)
    step = jax.jit(jax.value_and_grad(lambda z: loss(z, y)))
    memory = step.lower(x).compile().memory_analysis()
    return Step(lambda: jax.block_until_ready(step(x)), logits.nbytes,
                xla_temp_bytes=int(memory.temp_size_in_bytes))  # fmt: skip


def _plain_options(case):
    return {"ab": 0.5 if case.startswith("dice") else 1.0, "per_image": "I+C" in case}


def plain_jax_loss(z, y, *, ab=1.0, per_image=False, smooth=1e-3):
    """The yardstick: the JDT loss as a plain one-hot-free JAX formula (hard labels
    compared with the class ids, soft labels through |x - y|; the package's defaults:
    "PRESENT" classes for hard labels, "ALL" for soft ones)."""
    import jax
    import jax.numpy as jnp

    b, c = z.shape[:2]
    p = jax.nn.softmax(z.reshape(b, c, -1), axis=1)
    if jnp.issubdtype(y.dtype, jnp.integer):
        hit = y.reshape(b, 1, -1) == jnp.arange(c)[None, :, None]
        label_card = hit.sum(2).astype(p.dtype)
        tp = jnp.where(hit, p, 0.0).sum(2)
        present = label_card > 0.01
    else:
        y = y.reshape(b, c, -1)
        label_card = y.sum(2)
        tp = (p.sum(2) + label_card - jnp.abs(p - y).sum(2)) / 2
        present = jnp.ones((b, c), bool)
    fp, fn = p.sum(2) - tp, label_card - tp

    def mean_loss(tp, fp, fn, active, axis):
        loss = jnp.where(active, 1 - (tp + smooth) / (tp + ab * (fp + fn) + smooth), 0.0)
        return loss.sum(axis) / jnp.maximum(active.sum(axis), 1)

    if not per_image:
        return mean_loss(tp.sum(0), fp.sum(0), fn.sum(0), present.any(0), 0)
    per_img = mean_loss(tp, fp, fn, present, 1)
    image_level = per_img.sum() / jnp.maximum(present.any(1).sum(), 1)
    per_class = mean_loss(tp, fp, fn, present, 0)
    return image_level + per_class.sum() / jnp.maximum(present.any(0).sum(), 1)


def _jax_metrics_step(prob_source, label):
    """``FineGrainedMetrics.update`` with the batch statistics under ``jax.jit``."""
    import jax

    from jdt_array.metrics import FineGrainedMetrics

    num_classes = prob_source.shape[1]
    prob = jax.nn.softmax(prob_source, axis=1)
    metrics = FineGrainedMetrics(num_classes)
    statistics = jax.jit(metrics.statistics)

    def run():
        metrics.update_statistics(jax.block_until_ready(statistics(prob, label)))

    return Step(run, int(prob.size * 4))


def _monai(path, case, logits, label, device):
    from monai.losses import DiceLoss

    lib, x, y = _on("torch", device, logits, label[:, None])
    loss = DiceLoss(softmax=True, to_onehot_y=True, batch=True, jaccard=case == "jaccard-D")
    sync = lib.synchronize

    def run():
        z = x.detach().requires_grad_(True)
        loss(z, y).backward()
        sync()

    return Step(run, logits.nbytes)


def _onehot(path, case, logits, label, device):
    """The reference algorithm, re-written: float one-hot label, an explicit |p - y|."""
    import torch

    lib, x, y = _on("torch", device, logits, label)
    ab = 0.5 if case == "dice-D" else 1.0
    per_image = case == "jaccard-I+C"
    sync = lib.synchronize

    def loss(z):
        b, c = z.shape[:2]
        prob = z.log_softmax(dim=1).exp().reshape(b, c, -1)
        one_hot = torch.nn.functional.one_hot(y.reshape(b, -1), c).permute(0, 2, 1).float()
        p, t, d = prob.sum(2), one_hot.sum(2), (prob - one_hot).abs().sum(2)
        tp = (p + t - d) / 2
        fp, fn = p - tp, t - tp
        if not per_image:
            tp, fp, fn = tp.sum(0), fp.sum(0), fn.sum(0)
        ratio = (tp + 1e-3) / (tp + ab * fp + ab * fn + 1e-3)
        return (1 - ratio).mean() * (2 if per_image else 1)

    def run():
        z = x.detach().requires_grad_(True)
        loss(z).backward()
        sync()

    return Step(run, logits.nbytes)


def _reference(path, case, logits, label, device):
    """The reference JDTLoss (Wang et al.) with its default options on the mIoUD
    cases, the same PyTorch operations in the same order: log_softmax().exp(), a
    clamped float one-hot label permuted to (B, C, N), three torch.norm(p=1)
    cardinalities, and "present" classes from the amax of the one-hot label."""
    import torch

    lib, x, y = _on("torch", device, logits, label)
    ab = 0.5 if case == "dice-D" else 1.0
    sync = lib.synchronize
    if case == "lovasz-softmax":
        return _reference_lovasz(x, y, sync)

    def loss(z):
        b, c = z.shape[:2]
        prob = z.view(b, c, -1).log_softmax(dim=1).exp()
        hot = torch.nn.functional.one_hot(y.clamp(0, c - 1).view(b, -1), num_classes=c)
        hot = hot.permute(0, 2, 1).float()
        prob_card = torch.norm(prob, p=1, dim=2)
        label_card = torch.norm(hot, p=1, dim=2)
        diff_card = torch.norm(prob - hot, p=1, dim=2)
        tp = (prob_card + label_card - diff_card) / 2
        fp, fn = prob_card - tp, label_card - tp
        present = torch.amax(hot, (0, 2)) > 0.01
        active = torch.zeros(c, dtype=torch.bool, device=z.device)
        active[present] = True
        tp, fp, fn = tp.sum(0), fp.sum(0), fn.sum(0)
        ratio = (tp + 1e-3) / (tp + ab * fp + ab * fn + 1e-3)
        return (1.0 - ratio)[active].mean()

    def run():
        z = x.detach().requires_grad_(True)
        loss(z).backward()
        sync()

    return Step(run, logits.nbytes)


def _reference_lovasz(x, y, sync):
    """The reference Lovasz-Softmax (Berman et al., CVPR 2018) with its defaults
    (classes="present", per_image=False), the same steps: the batch flattened to
    (P, C) probabilities, then per present class a descending sort of the errors
    |fg - p_c|, the Lovasz extension's gradient from the sorted foreground (cumulative
    sums), and a dot product; the mean over present classes."""
    import torch

    def lovasz_grad(fg_sorted):
        total = fg_sorted.sum()
        intersection = total - fg_sorted.cumsum(0)
        union = total + (1 - fg_sorted).cumsum(0)
        jaccard = 1.0 - intersection / union
        return torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])

    def loss(z):
        c = z.shape[1]
        prob = z.softmax(dim=1).movedim(1, -1).reshape(-1, c)
        labels = y.reshape(-1)
        losses = []
        for k in range(c):
            fg = (labels == k).float()
            if fg.sum() == 0:  # "present" classes only (a host read per class)
                continue
            errors = (fg - prob[:, k]).abs()
            errors_sorted, order = torch.sort(errors, 0, descending=True)
            losses.append(torch.dot(errors_sorted, lovasz_grad(fg[order])))
        return torch.stack(losses).mean()

    def run():
        z = x.detach().requires_grad_(True)
        loss(z).backward()
        sync()

    return Step(run, x.numel() * x.element_size())


def _metrics_step(prob_source, label, sync=lambda: None):
    from array_api_compat import array_namespace

    from jdt_array.metrics import FineGrainedMetrics

    xp = array_namespace(prob_source)
    num_classes = prob_source.shape[1]
    prob = xp.exp(prob_source) / xp.sum(xp.exp(prob_source), axis=1, keepdims=True)
    metrics = FineGrainedMetrics(num_classes)

    def run():
        metrics.update(prob, label)
        sync()

    return Step(run, int(prob.shape[0] * num_classes * np.prod(prob.shape[2:]) * 4))


_FACTORIES = {
    "numpy": _numpy,
    "cupy": _cupy,
    "torch": _torch,
    "jax": _jax,
    "monai": _monai,
    "onehot": _onehot,
    "reference": _reference,
}
