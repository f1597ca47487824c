"""Training and evaluating a detector on the images of many categories.

ViTAD and Dinomaly train one model on the normal ("train/good") images of all categories together
(the multi-class setting of both papers); SOWA trains on an auxiliary labelled set (images, labels
and masks of other products). Each is evaluated per category with the engine's metrics.
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

from ..data.benchmarks import load_mask, read_split, train_references
from ..data.images import load_image, resize_mask
from ..engine.backbones import resolve_device
from ..evaluation.metrics import category_metrics, mean_row
from ..settings import DetectorConfig
from .base import Detector


@dataclass
class LabelledSplit:
    """Images of several categories with labels and masks, at the detector's input size."""

    images: np.ndarray  # (N, S, S, 3) uint8
    labels: np.ndarray  # (N,) 1 anomalous
    masks: np.ndarray  # (N, S, S) bool
    categories: list[str]  # (N,) category of each image

    @classmethod
    def of_normals(cls, images: np.ndarray, category: str = "normal") -> LabelledSplit:
        """Images known (or taken) to be normal: label 0, empty masks."""
        n, size = len(images), images.shape[1]
        return cls(images, np.zeros(n, np.int64), np.zeros((n, size, size), bool), [category] * n)


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


def load_references(root: str, layout: str, categories: list[str], count: int, size: int,
                    resize: int | None = None) -> dict[str, np.ndarray]:
    """Known-good references for few-shot scoring: the first ``count`` normal train images of each category."""
    return {c: train_references(root, layout, c, count, size, resize) for c in categories}


@torch.no_grad()
def predict_batches(detector: Detector, images: np.ndarray, batch_size: int,
                    device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """Anomaly maps (N, S, S) and image scores (N,) for uint8 images, batch by batch."""
    maps, scores = [], []
    for start in range(0, len(images), batch_size):
        m, s = detector.predict(detector.preprocess(images[start:start + batch_size]).to(device))
        maps.append(m.float().cpu().numpy())
        scores.append(s.float().cpu().numpy())
    return np.concatenate(maps), np.concatenate(scores)


def evaluate_detector(detector: Detector, split: LabelledSplit, batch_size: int, device: torch.device,
                      references: dict[str, np.ndarray] | None = None) -> dict[str, dict[str, float]]:
    """The engine's metrics per category and their mean (key "mean"). With ``references`` (SOWA
    few-shot: normal images per category), each category is scored against its own memory bank."""
    cats = np.array(split.categories)
    per = {}
    for c in dict.fromkeys(split.categories):
        rows = cats == c
        if references is not None:
            detector.set_references(detector.preprocess(references[c]).to(device))
        maps, scores = predict_batches(detector, split.images[rows], batch_size, device)
        per[c] = category_metrics(scores, split.labels[rows], maps, split.masks[rows])
    if references is not None:
        detector.set_references(None)
    return {**per, "mean": mean_row(per)}


@dataclass
class TrainingResult:
    """What training did: per-step losses, evaluations, throughput."""

    losses: list[float] = field(default_factory=list)
    evaluations: list[dict] = field(default_factory=list)  # {"iteration": i, **mean metrics}
    seconds: float = 0.0
    images_per_second: float = 0.0


def train_detector(detector: Detector, train: LabelledSplit, cfg: DetectorConfig,
                   validation: LabelledSplit | None = None, device: str = "auto",
                   report: Callable[[dict], None] | None = None,
                   references: dict[str, np.ndarray] | None = None) -> TrainingResult:
    """Train the detector's trainable parts for ``cfg.training.iterations`` steps: ViTAD and Dinomaly
    on normal images, SOWA on labelled ones (masks and labels). ``references`` as in
    ``evaluate_detector``."""
    t = cfg.training
    dev = resolve_device(device)
    detector.to(dev).train()
    optimizer, scheduler = detector.make_optimizer(cfg.training.iterations)
    rng = np.random.default_rng(t.seed)
    amp = t.amp and dev.type == "cuda"
    result = TrainingResult()
    order: list[int] = []
    start = time.perf_counter()
    for step in range(t.iterations):
        if len(order) < t.batch_size:  # epochs of shuffled indices, batches never straddle two
            order = list(rng.permutation(len(train.images)))
        batch = [order.pop() for _ in range(min(t.batch_size, len(order)))]
        x = detector.preprocess(train.images[batch]).to(dev)
        labels = torch.as_tensor(train.labels[batch], device=dev)
        masks = torch.as_tensor(train.masks[batch], device=dev)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            loss = detector.training_loss(x, labels, masks, step / t.iterations)
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
            metrics = evaluate_detector(detector, validation, t.batch_size, dev, references)["mean"]
            entry.update(metrics)
            result.evaluations.append(entry)
            detector.train()
        if report is not None:
            report(entry)
    result.seconds = time.perf_counter() - start
    result.images_per_second = t.iterations * t.batch_size / result.seconds
    detector.eval()
    return result
