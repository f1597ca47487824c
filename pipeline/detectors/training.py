"""Training and evaluating a reconstruction detector on the normal images of many categories.

One model is trained on the normal ("train/good") images of all categories together (the
multi-class setting of both papers) and evaluated per category with the engine's metrics.
``train_detector`` calls ``report`` with the loss, the learning rate and, every ``eval_every``
steps, validation metrics: Ray Tune trials report through it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch

from ..backbones import resolve_device
from ..config import DetectorConfig
from ..datasets import load_image, load_mask, read_split, resize_mask
from ..metrics import category_metrics, mean_row
from .models import ReconstructionDetector
from .optim import StableAdamW, step_schedule, warmup_cosine_schedule


@dataclass
class LabelledSplit:
    """Images of several categories with labels and masks, at the detector's input size."""

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) 1 anomalous
    masks: np.ndarray  # (N, S, S) bool
    categories: list[str]  # (N,) category of each image


def load_split(root: str, layout: str, categories: list[str], split: str, size: int,
               resize: int | None = None, normal_only: bool = False) -> LabelledSplit:
    """A split of a benchmark-layout dataset (``datasets.read_split``) prepared for a detector."""
    images, labels, masks, cats = [], [], [], []
    for category in categories:
        for sample in read_split(root, layout, category, split):
            if normal_only and sample.label:
                continue
            images.append(load_image(sample.image_path, size, resize))
            labels.append(sample.label)
            masks.append(resize_mask(load_mask(sample), size, resize))
            cats.append(category)
    if not images:
        raise ValueError(f"no {'normal ' if normal_only else ''}images in split {split!r} of {categories} under {root}")
    return LabelledSplit(np.stack(images), np.array(labels), np.stack(masks), cats)


@torch.no_grad()
def predict_batches(detector: ReconstructionDetector, images: np.ndarray, batch_size: int,
                    device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly maps (N, S, S) and image scores (N,) for uint8 images, batch by batch."""
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        m, s = detector.predict(detector.preprocess(images[start:start + batch_size]).to(device))
        maps.append(m.float().cpu().numpy())
        scores.append(s.float().cpu().numpy())
    return np.concatenate(maps), np.concatenate(scores)


def evaluate_detector(detector: ReconstructionDetector, split: LabelledSplit, batch_size: int,
                      device: torch.device) -> dict[str, dict[str, float]]:
    """The engine's metrics per category and their mean (key "mean")."""
    maps, scores = predict_batches(detector, split.images, batch_size, device)
    cats = np.array(split.categories)
    per = {c: category_metrics(scores[cats == c], split.labels[cats == c], maps[cats == c], split.masks[cats == c])
           for c in dict.fromkeys(split.categories)}
    return {**per, "mean": mean_row(per)}


def make_optimizer(detector: ReconstructionDetector, cfg: DetectorConfig) -> tuple[torch.optim.Optimizer,
                                                                                   torch.optim.lr_scheduler.LambdaLR]:
    """Each paper's recipe: ViTAD AdamW + step decay; Dinomaly StableAdamW (AMSGrad) + warm-up cosine."""
    params = [p for p in detector.parameters() if p.requires_grad]
    iterations = cfg.training.iterations
    if cfg.kind == "vitad":
        v = cfg.vitad
        optimizer = torch.optim.AdamW(params, lr=v.lr, weight_decay=v.weight_decay)
        schedule = step_schedule(iterations, v.lr_step_at)
    else:
        d = cfg.dinomaly
        optimizer = StableAdamW(params, lr=d.lr, betas=(0.9, 0.999), eps=1e-10, weight_decay=d.weight_decay,
                                amsgrad=True)
        schedule = warmup_cosine_schedule(iterations, d.warmup, d.final_lr / d.lr)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


@dataclass
class TrainingResult:
    """What training did: per-step losses, evaluations, throughput."""

    losses: list[float] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)  # {"iteration": i, **mean metrics}
    seconds: float = 0.0
    images_per_second: float = 0.0


def train_detector(detector: ReconstructionDetector, train_images: np.ndarray, cfg: DetectorConfig,
                   validation: LabelledSplit | None = None, device: str = "auto",
                   report: Callable[[dict], None] | None = None) -> TrainingResult:
    """Train the decoder on normal uint8 images (N, S, S, 3) for ``cfg.training.iterations`` steps."""
    t = cfg.training
    dev = resolve_device(device)
    detector.to(dev).train()
    optimizer, scheduler = make_optimizer(detector, cfg)
    rng = np.random.default_rng(t.seed)
    amp = t.amp and dev.type == "cuda"
    result = TrainingResult()
    order: list[int] = []
    start = time.perf_counter()
    for step in range(t.iterations):
        if len(order) < t.batch_size:  # epochs of shuffled indices, batches never straddle two
            order = list(rng.permutation(len(train_images)))
        batch = [order.pop() for _ in range(min(t.batch_size, len(order)))]
        x = detector.preprocess(train_images[batch]).to(dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            targets, recon = detector(x)
            loss = detector.loss(targets, recon, step / t.iterations)
        value = loss.item()
        if not math.isfinite(value):
            raise FloatingPointError(f"training loss became {value} at iteration {step}")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        lr = optimizer.param_groups[0]["lr"]
        optimizer.step()
        scheduler.step()
        result.losses.append(value)
        last = step == t.iterations - 1
        entry = {"iteration": step + 1, "loss": value, "lr": lr}
        if validation is not None and (last or (t.eval_every and (step + 1) % t.eval_every == 0)):
            metrics = evaluate_detector(detector, validation, t.batch_size, dev)["mean"]
            entry.update(metrics)
            result.evaluations.append(entry)
            detector.train()
        if report is not None:
            report(entry)
    result.seconds = time.perf_counter() - start
    result.images_per_second = t.iterations * t.batch_size / result.seconds
    detector.eval()
    return result
