"""Soft labels in PyTorch: label smoothing, then knowledge distillation.

The JDT losses compare the prediction with a soft label through
tp = (|x| + |y| - |x - y|) / 2, so they are zero exactly when the prediction equals the
soft label (the usual soft Jaccard / Dice are not). This lets them train on:

1. Boundary label smoothing: a teacher network learns from labels smoothed only near
   class boundaries (``jdt_array.soft_labels.label_smoothing(boundary_window=...)``),
   with ``0.25 * cross-entropy + 0.75 * Jaccard`` on the soft labels.
2. Knowledge distillation: a smaller student learns from the hard labels (cross-entropy)
   and from the teacher's temperature-softened probabilities
   (``teacher_probabilities``) through the Jaccard loss, both sides at temperature T.

    python examples/torch_soft_labels.py
    python examples/torch_soft_labels.py --steps 60 --temperature 2
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F

from jdt_array._tools.demo import CLASSES, make_dataset
from jdt_array.backends.torch import JDTLoss
from jdt_array.metrics import FineGrainedMetrics
from jdt_array.soft_labels import label_smoothing, teacher_probabilities

C = len(CLASSES)
REPORTED = ("mIoUD", "mIoUI", "mIoUC")


def load(n: int, size: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    images, labels = make_dataset(n, size, seed)
    images = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # channels first
    return images, torch.from_numpy(labels)


def make_model(hidden: int, layers: int) -> torch.nn.Module:
    body: list[torch.nn.Module] = []
    channels = 3
    for _ in range(layers):
        body += [torch.nn.Conv2d(channels, hidden, 3, padding=1), torch.nn.ReLU()]
        channels = hidden
    return torch.nn.Sequential(*body, torch.nn.Conv2d(channels, C, 1))


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    metrics = FineGrainedMetrics(C)
    metrics.update(model(images).softmax(dim=1), labels)
    return metrics.compute()


def train(model, loss_fn, images, targets, *, steps, batch, lr, seed, name) -> list[float]:
    """Adam on ``loss_fn(model, images[idx], *(t[idx] for t in targets))``; returns
    the losses."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    generator = torch.Generator().manual_seed(seed)
    losses = []
    for step in range(steps):
        idx = torch.randperm(len(images), generator=generator)[:batch]
        loss = loss_fn(model, images[idx], *(t[idx] for t in targets))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % max(1, steps // 4) == 0 or step == steps - 1:
            print(f"{name}: step {step:4d}  loss {loss.item():.4f}")
    return losses


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=120, help="steps per network")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--epsilon", type=float, default=0.1, help="label smoothing")
    parser.add_argument("--window", type=int, default=3, help="boundary window (odd)")
    parser.add_argument("--temperature", type=float, default=2.0, help="distillation T")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.manual_seed(args.seed)
    train_x, train_y = load(64, 32, args.seed)
    test_x, test_y = load(32, 32, args.seed + 100)
    fit = dict(steps=args.steps, batch=args.batch, lr=0.01, seed=args.seed)

    # 1. Teacher on boundary-smoothed labels. With soft labels every class counts
    # ("ALL", the default for soft labels): smoothing puts mass on every class.
    soft_y = label_smoothing(train_y, C, epsilon=args.epsilon, boundary_window=args.window)
    jaccard = JDTLoss()  # Jaccard, per batch (mIoUD)

    def smoothed_loss(model, x, y):
        logits = model(x)
        ce = F.cross_entropy(logits, y)  # y holds class probabilities: soft-label CE
        return 0.25 * ce + 0.75 * jaccard(logits, y)

    teacher = make_model(hidden=32, layers=2)
    teacher_losses = train(
        teacher, smoothed_loss, train_x, (soft_y,), name="teacher", **fit
    )
    teacher_metrics = evaluate(teacher.eval(), test_x, test_y)

    # 2. Student distilled from the teacher: JDT between the temperature-softened
    # distributions of student and teacher, plus cross-entropy on the hard labels.
    t = args.temperature
    with torch.no_grad():
        target = teacher_probabilities(teacher(train_x), temperature=t)

    def distillation_loss(model, x, label, teacher_prob):
        logits = model(x)
        ce = F.cross_entropy(logits, label)
        return 0.25 * ce + 0.75 * jaccard(logits / t, teacher_prob)

    def teacher_gap(model):  # the Jaccard loss between student and teacher at T
        with torch.no_grad():
            return jaccard(model(train_x) / t, target).item()

    student = make_model(hidden=8, layers=1)
    before, gap_before = evaluate(student, test_x, test_y), teacher_gap(student)
    student_losses = train(
        student, distillation_loss, train_x, (train_y, target), name="student", **fit
    )
    student_metrics, gap = evaluate(student.eval(), test_x, test_y), teacher_gap(student)

    print(f"\n{'metric (%)':<10}{'teacher':>10}{'student 0':>11}{'student':>10}")
    for key in REPORTED:
        row = (teacher_metrics[key], before[key], student_metrics[key])
        print(f"{key:<10}{row[0]:>10.2f}{row[1]:>11.2f}{row[2]:>10.2f}")
    print(f"Jaccard loss between student and teacher at T = {t:g}: {gap_before:.4f} "
          f"before, {gap:.4f} after distillation")  # fmt: skip
    return {
        "teacher_losses": teacher_losses,
        "student_losses": student_losses,
        "teacher": teacher_metrics,
        "student_before": before,
        "student": student_metrics,
        "teacher_gap_before": gap_before,
        "teacher_gap": gap,
    }


if __name__ == "__main__":
    main()
