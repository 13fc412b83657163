"""Train a small PyTorch segmentation network with ``JDTLoss`` on hard labels.

The data are the synthetic images of ``jdt-array demo`` (four classes: background,
large blobs, one-pixel-wide lines, 2 x 2 dots), with a one-pixel void border labelled
255 as in Cityscapes. The loss is the FAQ's mixture
``0.25 * cross-entropy + 0.75 * Jaccard`` with the Jaccard loss computed over the whole
mini-batch and the classes present in it, which targets the dataset-level mIoU
(mIoUD). The fine-grained metrics are printed before and after training.

    python examples/torch_training.py                 # 150 steps, a few seconds on CPU
    python examples/torch_training.py --ce-weight 0   # the Jaccard loss alone
    python examples/torch_training.py --steps 30 --device cuda
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import torch.nn.functional as F

from jdt_array._tools.demo import CLASSES, make_dataset
from jdt_array.backends.torch import JDTLoss
from jdt_array.metrics import FineGrainedMetrics

IGNORE = 255
REPORTED = ("Acc", "mIoUD", "mIoUI", "mIoUC", "mDiceI")


def load(n: int, size: int, seed: int, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Images (n, 3, size, size) and labels (n, size, size) with a void border."""
    images, labels = make_dataset(n, size, seed)
    labels[:, [0, -1], :] = IGNORE
    labels[:, :, [0, -1]] = IGNORE
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous().to(device)
    return x, torch.from_numpy(labels).to(device)


def make_model(hidden: int = 32) -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, hidden, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(hidden, hidden, 3, padding=1),
        torch.nn.ReLU(),
        torch.nn.Conv2d(hidden, len(CLASSES), 1),
    )


@torch.no_grad()
def evaluate(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> dict:
    metrics = FineGrainedMetrics(len(CLASSES), ignore_index=IGNORE)
    metrics.update(model(images).softmax(dim=1), labels)
    return metrics.compute()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--ce-weight", type=float, default=0.25, help="the rest: Jaccard")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 0 <= args.ce_weight <= 1:
        parser.error(f"--ce-weight must be in [0, 1], got {args.ce_weight}")
    torch.manual_seed(args.seed)

    train_x, train_y = load(64, args.size, args.seed, args.device)
    test_x, test_y = load(32, args.size, args.seed + 100, args.device)
    model = make_model().to(args.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    # Jaccard (alpha = beta = 1) over the batch (mIoUD) and the classes present in it.
    jaccard = JDTLoss(mIoUD=1.0, alpha=1.0, beta=1.0, ignore_index=IGNORE)

    before = evaluate(model, test_x, test_y)
    generator = torch.Generator().manual_seed(args.seed)
    losses = []
    for step in range(args.steps):
        idx = torch.randperm(len(train_x), generator=generator)[: args.batch]
        logits = model(train_x[idx])
        ce = F.cross_entropy(logits, train_y[idx], ignore_index=IGNORE)
        loss = args.ce_weight * ce + (1 - args.ce_weight) * jaccard(logits, train_y[idx])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step % max(1, args.steps // 5) == 0 or step == args.steps - 1:
            print(f"step {step:4d}  loss {loss.item():.4f}")
    after = evaluate(model, test_x, test_y)

    print(f"\n{'metric (%)':<10}{'before':>10}{'after':>10}")
    for key in REPORTED:
        print(f"{key:<10}{before[key]:>10.2f}{after[key]:>10.2f}")
    return {"losses": losses, "before": before, "after": after}


if __name__ == "__main__":
    main()
