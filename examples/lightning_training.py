"""Train a small segmentation network with PyTorch Lightning: ``CEJDTLoss`` as the
loss, the torchmetrics form of the fine-grained metrics for validation.

The data are the synthetic images of ``jdt-array demo`` (background, large blobs,
one-pixel-wide lines, 2 x 2 dots) with a void border labelled 255. The loss is the
FAQ's 0.25 : 0.75 mixture of cross-entropy and the Jaccard loss; the metric
(``jdt_array.backends.torchmetrics.FineGrainedMetrics``) keeps per-image counts as
torchmetrics state, so with DDP (``Trainer(strategy="ddp", devices=N)``) torchmetrics
gathers every process's images and each reports the mIoU of the whole validation set.

    python examples/lightning_training.py               # 5 epochs, seconds on a CPU
    python examples/lightning_training.py --epochs 10 --accelerator gpu
"""

from __future__ import annotations

import argparse
from typing import Any

import lightning
import torch

from jdt_array._tools.demo import CLASSES, make_dataset
from jdt_array.backends.torch import CEJDTLoss
from jdt_array.backends.torchmetrics import FineGrainedMetrics

IGNORE = 255
REPORTED = ("Acc", "mIoUD", "mIoUI", "mIoUC", "mIoUI1")


def load(n: int, size: int, seed: int) -> torch.utils.data.TensorDataset:
    """Images (n, 3, size, size) and labels (n, size, size) with a void border."""
    images, labels = make_dataset(n, size, seed)
    labels[:, [0, -1], :] = IGNORE
    labels[:, :, [0, -1]] = IGNORE
    x = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()
    return torch.utils.data.TensorDataset(x, torch.from_numpy(labels))


class Segmenter(lightning.LightningModule):
    """A three-layer convolutional network, trained with CE + Jaccard (0.25 : 0.75)."""

    def __init__(self, hidden: int = 32, lr: float = 0.01) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Conv2d(3, hidden, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(hidden, hidden, 3, padding=1),
            torch.nn.ReLU(),
            torch.nn.Conv2d(hidden, len(CLASSES), 1),
        )
        self.lr = lr
        # The Jaccard part over the batch (mIoUD) and the classes present in it.
        self.loss = CEJDTLoss(ignore_index=IGNORE)
        self.metrics = FineGrainedMetrics(len(CLASSES), ignore_index=IGNORE)
        self.losses: list[float] = []

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(images)

    def training_step(self, batch, batch_idx):
        images, labels = batch
        loss = self.loss(self(images), labels)
        self.losses.append(loss.item())
        self.log("train_loss", loss)
        return loss

    def validation_step(self, batch, batch_idx):
        images, labels = batch
        self.metrics.update(self(images), labels)  # logits: their argmax is scored

    def on_validation_epoch_end(self):
        results = self.metrics.compute()
        self.log_dict({key: results[key] for key in REPORTED})
        self.metrics.reset()

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--size", type=int, default=32, help="image side in pixels")
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--accelerator", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    lightning.seed_everything(args.seed, verbose=False)

    loader = torch.utils.data.DataLoader
    train = loader(load(64, args.size, args.seed), batch_size=args.batch, shuffle=True)
    val = loader(load(32, args.size, args.seed + 100), batch_size=16)
    model = Segmenter(lr=args.lr)
    trainer = lightning.Trainer(
        max_epochs=args.epochs, accelerator=args.accelerator, devices=1, logger=False,
        enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, num_sanity_val_steps=0,
    )  # fmt: skip
    before = trainer.validate(model, val, verbose=False)[0]
    trainer.fit(model, train, val)  # validated after every epoch
    after = trainer.validate(model, val, verbose=False)[0]

    print(f"{'metric (%)':<10}{'before':>10}{'after':>10}")
    for key in REPORTED:
        print(f"{key:<10}{before[key]:>10.2f}{after[key]:>10.2f}")
    return {"losses": model.losses, "before": before, "after": after}


if __name__ == "__main__":
    main()
