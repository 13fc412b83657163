"""Research prototyping in JAX: channels-last logits, ``jit``, ``grad``, ``vmap``, optax.

A small convolutional network (``jax.lax.conv_general_dilated``, NHWC) is trained on the
synthetic images of ``jdt-array demo`` with ``0.25 * cross-entropy + 0.75 * Jaccard``.
The losses take channels-last logits with ``class_axis=-1``, so no transpose is needed.
The example shows:

* the whole training step under ``jax.jit(jax.value_and_grad(...))``, with optax's Adam
  when optax is installed and a few lines of hand-written Adam otherwise;
* ``jdt_array.backends.jax.jaccard_loss``, the ``custom_vjp`` form whose backward pass
  is the package's hand-derived gradient (same values and gradients as autodiff, with
  only the inputs kept for the backward pass);
* ``jax.vmap`` over images for per-example losses (here to list the hardest test
  images); their mean is the image-level loss ``mIoUD=0, mIoUI=1``.

    python examples/jax_prototyping.py
    python examples/jax_prototyping.py --steps 50 --optimizer adam
"""

from __future__ import annotations

import argparse
import importlib.util
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import jdt_array
from jdt_array._tools.demo import CLASSES, make_dataset
from jdt_array.backends import jax as jdt_jax
from jdt_array.metrics import FineGrainedMetrics

C = len(CLASSES)
REPORTED = ("Acc", "mIoUD", "mIoUI", "mIoUC", "mIoUI1")


def init_params(rng: np.random.Generator, hidden: int = 32) -> dict[str, jax.Array]:
    """Two 3x3 convolutions and a 1x1 classifier, kernels (H, W, in, out), float32."""

    def he(*shape):
        w = rng.normal(size=shape) * np.sqrt(2 / np.prod(shape[:-1]))
        return jnp.asarray(w, dtype=jnp.float32)

    return {
        "w1": he(3, 3, 3, hidden),
        "b1": jnp.zeros(hidden, jnp.float32),
        "w2": he(3, 3, hidden, hidden),
        "b2": jnp.zeros(hidden, jnp.float32),
        "w3": he(1, 1, hidden, C),
        "b3": jnp.zeros(C, jnp.float32),
    }


def conv(x: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    dims = ("NHWC", "HWIO", "NHWC")
    out = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME", dimension_numbers=dims)
    return out + b


def model(params: dict, images: jax.Array) -> jax.Array:
    """Logits (B, H, W, C): channels last, as JAX convolutions like them."""
    h = jax.nn.relu(conv(images, params["w1"], params["b1"]))
    h = jax.nn.relu(conv(h, params["w2"], params["b2"]))
    return conv(h, params["w3"], params["b3"])


def loss_fn(params: dict, images: jax.Array, labels: jax.Array) -> jax.Array:
    logits = model(params, images)
    ce = jdt_array.cross_entropy(logits, labels, class_axis=-1)
    # The custom_vjp form: the backward pass is the hand-derived JDT gradient.
    return 0.25 * ce + 0.75 * jdt_jax.jaccard_loss(logits, labels, class_axis=-1)


def per_image_losses(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """The Jaccard loss of each image: vmap over the batch axis of a one-image loss."""

    def one(z: jax.Array, y: jax.Array) -> jax.Array:
        return jdt_array.jaccard_loss(z[None], y[None], class_axis=-1)

    return jax.vmap(one)(logits, labels)


def make_optimizer(name: str, lr: float):
    """(init, update) with update(grads, state, params) -> (params, state)."""
    if name == "auto":
        name = "optax" if importlib.util.find_spec("optax") else "adam"
    if name == "optax":
        import optax

        tx = optax.adam(lr)

        def update(grads, state, params):
            updates, state = tx.update(grads, state, params)
            return optax.apply_updates(params, updates), state

        return "optax.adam", tx.init, update

    def init(params):
        zeros = jax.tree_util.tree_map(jnp.zeros_like, params)
        return {"m": zeros, "v": zeros, "t": jnp.zeros((), jnp.float32)}

    def update(grads, state, params):  # Adam with the usual constants
        t = state["t"] + 1
        m = jax.tree_util.tree_map(lambda m, g: 0.9 * m + 0.1 * g, state["m"], grads)
        v = jax.tree_util.tree_map(
            lambda v, g: 0.999 * v + 0.001 * g * g, state["v"], grads
        )

        def step(p, m, v):
            m_hat, v_hat = m / (1 - 0.9**t), v / (1 - 0.999**t)
            return p - lr * m_hat / (jnp.sqrt(v_hat) + 1e-8)

        params = jax.tree_util.tree_map(step, params, m, v)
        return params, {"m": m, "v": v, "t": t}

    return "hand-written Adam", init, update


@jax.jit
def eval_statistics(params: dict, images: jax.Array, labels: jax.Array):
    """The metrics' per-image counts, computed under jit (``statistics`` is pure)."""
    prob = jax.nn.softmax(model(params, images), axis=-1)
    return FineGrainedMetrics(C).statistics(prob, labels, class_axis=-1)


def evaluate(params: dict, images: jax.Array, labels: jax.Array) -> dict[str, float]:
    metrics = FineGrainedMetrics(C)
    metrics.update_statistics(eval_statistics(params, images, labels))
    return metrics.compute()


@jax.jit
def gradient_gap(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Largest difference between the custom_vjp gradient and autodiff's, relative."""
    lean = jax.grad(lambda z: jdt_jax.jaccard_loss(z, labels, class_axis=-1))(logits)
    traced = jax.grad(lambda z: jdt_array.jaccard_loss(z, labels, class_axis=-1))(logits)
    return jnp.max(jnp.abs(lean - traced)) / jnp.max(jnp.abs(traced))


@jax.jit
def image_report(params: dict, images: jax.Array, labels: jax.Array):
    """Per-image losses (vmap) and the image-level loss of the whole batch."""
    logits = model(params, images)
    image_level = jdt_array.jaccard_loss(
        logits, labels, class_axis=-1, mIoUD=0.0, mIoUI=1.0
    )
    return per_image_losses(logits, labels), image_level


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--optimizer", choices=("auto", "optax", "adam"), default="auto")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.optimizer == "optax" and not importlib.util.find_spec("optax"):
        parser.error("optax is not installed (pip install optax); try --optimizer adam")

    train_x, train_y = (jnp.asarray(a) for a in make_dataset(64, 32, args.seed))
    test_x, test_y = (jnp.asarray(a) for a in make_dataset(32, 32, args.seed + 100))
    rng = np.random.default_rng(args.seed)
    params = init_params(rng)
    name, opt_init, opt_update = make_optimizer(args.optimizer, args.lr)
    opt_state = opt_init(params)

    # The custom_vjp backward agrees with autodiff through the core loss.
    grad_gap = float(gradient_gap(model(params, train_x[:4]), train_y[:4]))
    print(f"custom_vjp vs autodiff gradient: relative difference {grad_gap:.1e}")

    @jax.jit
    def train_step(params, opt_state, images, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        params, opt_state = opt_update(grads, opt_state, params)
        return params, opt_state, loss

    before = evaluate(params, test_x, test_y)
    losses = []
    for step in range(args.steps):
        idx = rng.choice(len(train_x), size=args.batch, replace=False)
        params, opt_state, loss = train_step(params, opt_state, train_x[idx], train_y[idx])
        losses.append(float(loss))
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {losses[-1]:.4f}  ({name})")
    after = evaluate(params, test_x, test_y)

    per_image, image_level = image_report(params, test_x, test_y)
    hardest = np.argsort(-np.asarray(per_image))[:3]

    print(f"\n{'metric (%)':<10}{'before':>10}{'after':>10}")
    for k in REPORTED:
        print(f"{k:<10}{before[k]:>10.2f}{after[k]:>10.2f}")
    print(f"\nper-image Jaccard loss (vmap): mean {float(jnp.mean(per_image)):.4f}, "
          f"image-level loss {float(image_level):.4f}")  # fmt: skip
    print("hardest test images:", ", ".join(f"#{i} ({per_image[i]:.3f})" for i in hardest))
    return {
        "optimizer": name,
        "losses": losses,
        "before": before,
        "after": after,
        "grad_gap": grad_gap,
        "per_image": np.asarray(per_image),
        "image_level": float(image_level),
    }


if __name__ == "__main__":
    main()
