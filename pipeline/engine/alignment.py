"""Image alignment for PatchEAD+: rotation and translation between photos of the same part.

Patch matching compares a patch with patches at any position, but a part turned by a few degrees
shows its edges at other angles, and those patches find no match. PatchEAD+ therefore estimates
the rotation and translation of each image against a reference with classical feature matching
(ORB keypoints, brute-force Hamming matching, a RANSAC fit of a rotation + translation + uniform
scale, OpenCV), warps it onto the reference, and also offers the 180-degree-rotated copy as a
reference, since symmetric parts can match either way round.

A wrong fit is worse than none: a rotationally symmetric part or a repeating texture offers as many
spurious fits as true ones, and an image warped by one scores as anomalous whatever it shows. So
alignment is safe by construction (``AlignmentConfig``): the reference is the image most others
match best, not the first one (which may be defective or featureless), and a fit is refused, the
image kept as it is, when few matches agree with it, when it implies a scale change or a rotation
beyond the limits, or when the warped image is not more like the reference than the unwarped one.
Every batch reports what it did (``AlignmentReport``).

A warp leaves part of the frame with no source pixels. It is filled by reflection (replicated edge
pixels draw streaks that differ from image to image and score as anomalies), and the patches it
touches are reported (``Alignment.covered``) so that scorers can leave them out.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from ..settings import AlignmentConfig
from .scores import AlignmentReport, BatchScores

# ORB ignores a 31-pixel margin at every pyramid level, so small images yield too few keypoints (at
# 128 px a generated disc never aligned); smaller images are matched on an upscaled copy.
MATCH_SIZE = 256
MAX_FEATURES = 1000
# the similarity check compares blurred grey images this small: shape and pose, not fine texture
SIMILARITY_SIZE = 64
SIMILARITY_BLUR = 1.5  # Gaussian sigma in pixels of the small image


@dataclass(frozen=True)
class RigidTransform:
    """Rotation about the image centre (degrees, in OpenCV's convention: a positive angle is
    counter-clockwise on screen) and translation (pixels) that map an image onto the reference;
    ``inliers`` is how many keypoint matches agree with it."""

    angle: float
    tx: float
    ty: float
    inliers: int

    def matrix(self, height: int, width: int) -> np.ndarray:
        """The (2, 3) affine matrix of the transform in pixel coordinates of an image of that size."""
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), -self.angle, 1.0)
        matrix[:, 2] += (self.tx, self.ty)
        return matrix


@dataclass(frozen=True)
class Fit:
    """The outcome of matching one image to a reference: ``transform`` when the fit is accepted,
    else None with ``outcome`` saying why ("skipped": nothing to fit; any other word: the check that
    refused it); ``kept`` (the fraction of the image the warp keeps in frame) counts towards choosing
    the reference."""

    transform: RigidTransform | None
    outcome: str
    angle: float = 0.0
    kept: float = 0.0


class Keypoints:
    """ORB keypoints and descriptors of one image (in its own pixel coordinates), computed once and
    matched against many references, with the small blurred grey copy the similarity check reads."""

    def __init__(self, image: np.ndarray) -> None:
        grey = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
        h, w = grey.shape
        self.shape, self.scale = (h, w), max(1.0, MATCH_SIZE / min(h, w))
        big = cv2.resize(grey, None, fx=self.scale, fy=self.scale, interpolation=cv2.INTER_LINEAR) \
            if self.scale > 1 else grey
        points, self.descriptors = cv2.ORB_create(nfeatures=MAX_FEATURES).detectAndCompute(big, None)
        self.points = (np.float32([k.pt for k in points]).reshape(-1, 2) + 0.5) / self.scale - 0.5
        self.factor = SIMILARITY_SIZE / max(h, w)
        small = cv2.resize(grey, (round(w * self.factor), round(h * self.factor)), interpolation=cv2.INTER_AREA)
        self.small = cv2.GaussianBlur(small.astype(np.float32), (0, 0), SIMILARITY_BLUR)


def _correlation(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """Normalised cross-correlation of two images over the pixels ``where`` (0 for flat images)."""
    x, y = a[where] - a[where].mean(), b[where] - b[where].mean()
    norm = float(np.sqrt((x * x).sum() * (y * y).sum()))
    return float((x * y).sum()) / norm if norm > 0 else 0.0


def _small_warp(image: Keypoints, transform: RigidTransform) -> tuple[np.ndarray, np.ndarray]:
    """The small blurred copy warped by the transform, and where its pixels come from inside the image."""
    h, w = image.small.shape
    small = RigidTransform(transform.angle, transform.tx * image.factor, transform.ty * image.factor, 0)
    warped = cv2.warpAffine(image.small, small.matrix(h, w), (w, h), flags=cv2.INTER_LINEAR)
    inside = cv2.warpAffine(np.ones((h, w), np.float32), small.matrix(h, w), (w, h), flags=cv2.INTER_LINEAR) > 0.99
    return warped, inside


def similarity_gain(image: Keypoints, reference: Keypoints, transform: RigidTransform) -> float:
    """How much more the warped image correlates with the reference than the unwarped one, on the
    small blurred copies and over the pixels that the warp fills from inside the image."""
    warped, inside = _small_warp(image, transform)
    if inside.mean() < 0.25:
        return -1.0  # the warp keeps too little of the image to compare
    return _correlation(warped, reference.small, inside) - _correlation(image.small, reference.small, inside)


def fit(image: Keypoints, reference: Keypoints, cfg: AlignmentConfig) -> Fit:
    """Match ``image`` to ``reference`` (same size) and accept the fit only within ``cfg``'s limits."""
    if image.shape != reference.shape:
        raise ValueError(f"alignment needs images of one size, got {image.shape} and {reference.shape}")
    if min(len(image.points), len(reference.points)) < cfg.min_inliers:
        return Fit(None, "skipped")
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(image.descriptors, reference.descriptors)
    if len(matches) < cfg.min_inliers:
        return Fit(None, "skipped")
    src = image.points[[m.queryIdx for m in matches]]
    dst = reference.points[[m.trainIdx for m in matches]]
    matrix, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC,
                                               ransacReprojThreshold=3.0 / reference.scale)
    inliers = 0 if matrix is None else int(mask.sum())
    if inliers < cfg.min_inliers:
        return Fit(None, "inliers")
    angle = float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))
    scale = float(np.hypot(matrix[0, 0], matrix[1, 0]))
    h, w = reference.shape
    # express the fit as rotation about the centre followed by a translation
    about_centre = RigidTransform(angle, 0.0, 0.0, 0).matrix(h, w)
    centre = np.array([w / 2, h / 2])
    shift = matrix[:, :2] @ centre + matrix[:, 2] - (about_centre[:, :2] @ centre + about_centre[:, 2])
    transform = RigidTransform(angle=angle, tx=float(shift[0]), ty=float(shift[1]), inliers=inliers)
    for failed, why in ((inliers < cfg.min_inlier_ratio * len(matches), "inlier_ratio"),
                        (abs(scale - 1.0) > cfg.max_scale_change, "scale"),
                        (abs(angle) > cfg.max_angle, "angle")):
        if failed:
            return Fit(None, why, angle)
    if similarity_gain(image, reference, transform) < cfg.min_similarity_gain:
        return Fit(None, "no_gain", angle)
    return Fit(transform, "aligned", angle, float(_small_warp(image, transform)[1].mean()))


def estimate_transform(image: np.ndarray, reference: np.ndarray,
                       cfg: AlignmentConfig | None = None) -> RigidTransform | None:
    """The accepted transform that maps ``image`` onto ``reference`` (uint8 RGB or grey, same size), or
    None (nothing to fit, or a fit ``cfg`` refuses: leave the image as it is)."""
    return fit(Keypoints(image), Keypoints(reference), cfg or AlignmentConfig()).transform


def apply_transform(image: np.ndarray, transform: RigidTransform) -> np.ndarray:
    """Warp ``image`` by the transform; where nothing maps, the image is reflected at its border."""
    h, w = image.shape[:2]
    return cv2.warpAffine(image, transform.matrix(h, w), (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101)


@dataclass(frozen=True)
class Alignment:
    """An image warped onto the reference (unchanged where no transform was found)."""

    image: np.ndarray
    transform: RigidTransform | None

    def _grid_matrix(self, grid: tuple[int, int]) -> np.ndarray:
        """The transform on a (gh, gw) patch grid over the image: cell j spans pixels [j s, (j+1) s)."""
        h, w = self.image.shape[:2]
        to_pixels = np.array([[w / grid[1], 0, (w / grid[1] - 1) / 2], [0, h / grid[0], (h / grid[0] - 1) / 2],
                              [0, 0, 1]])
        pixels = np.vstack([self.transform.matrix(h, w), [0, 0, 1]])
        return (np.linalg.inv(to_pixels) @ pixels @ to_pixels)[:2]

    def covered(self, grid: tuple[int, int]) -> np.ndarray:
        """(gh, gw) bool: patch cells whose pixels all come from inside the original image."""
        h, w = self.image.shape[:2]
        if self.transform is None:
            return np.ones(grid, dtype=bool)
        inside = cv2.warpAffine(np.ones((h, w), np.float32), self.transform.matrix(h, w), (w, h),
                                flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
        return cv2.resize(inside, (grid[1], grid[0]), interpolation=cv2.INTER_AREA) > 0.99

    def map_back(self, patch_map: np.ndarray) -> np.ndarray:
        """A (gh, gw) float map over the aligned image, moved back onto the original image's frame
        (zero where the original image was moved out of the frame)."""
        if self.transform is None:
            return patch_map
        gh, gw = patch_map.shape
        return cv2.warpAffine(patch_map.astype(np.float32), self._grid_matrix((gh, gw)), (gw, gh),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT,
                              borderValue=0)


def _aligned(images: Sequence[np.ndarray], fits: Sequence[Fit | None],
             cfg: AlignmentConfig) -> tuple[list[Alignment], AlignmentReport]:
    """The images warped by their accepted fits (None: the reference, kept as it is), and the report.

    A batch half aligned is worse than one left alone: its unaligned images sit in poses no aligned
    image shares. So when fewer than ``cfg.min_aligned_fraction`` of the fits are accepted, none is
    applied (those accepted are reported as rejected, "batch")."""
    fitted = [f for f in fits if f is not None]
    if fitted and sum(f.transform is not None for f in fitted) < cfg.min_aligned_fraction * len(fitted):
        fits = [f if f is None or f.transform is None else Fit(None, "batch", f.angle) for f in fits]
    alignments = [Alignment(im if f is None or f.transform is None else apply_transform(im, f.transform),
                            None if f is None else f.transform) for im, f in zip(images, fits)]
    return alignments, AlignmentReport.of([(f.outcome, f.angle) for f in fits if f is not None])


def align_to(images: Sequence[np.ndarray], reference: np.ndarray,
             cfg: AlignmentConfig | None = None) -> tuple[list[Alignment], AlignmentReport]:
    """Every image warped onto ``reference`` where ``cfg`` accepts its fit, unchanged otherwise (PatchEAD
    few-shot: the references onto each query)."""
    target, cfg = Keypoints(reference), cfg or AlignmentConfig()
    return _aligned(images, [fit(Keypoints(image), target, cfg) for image in images], cfg)


def choose_reference(keypoints: Sequence[Keypoints], cfg: AlignmentConfig) -> tuple[int, list[Fit | None]]:
    """The index of the batch's reference and every image's fit to it (None for itself).

    'best_matched' tries ``reference_candidates`` evenly spaced images and keeps the one onto which
    the accepted fits of all the others keep the most of their images in frame: each image counts
    the fraction it keeps (0 when refused), so a featureless or defective image (few accepted fits)
    and an oddly posed one (large warps, much filled in) are not chosen as they would be by being
    first. (Counting inliers instead chose references that cost MuSc 0.1 image AUROC on posed plates.)"""
    n = len(keypoints)
    count = 1 if cfg.reference == "first" else min(n, cfg.reference_candidates)
    best: tuple[int, int, list[Fit | None]] | None = None
    for candidate in dict.fromkeys(np.linspace(0, n - 1, count).round().astype(int).tolist()):
        fits = [None if i == candidate else fit(k, keypoints[candidate], cfg) for i, k in enumerate(keypoints)]
        support = sum(f.kept for f in fits if f is not None)
        if best is None or support > best[1]:
            best = (candidate, support, fits)
    return best[0], best[2]


def align_batch(images: Sequence[np.ndarray],
                cfg: AlignmentConfig | None = None) -> tuple[list[Alignment], AlignmentReport]:
    """A batch warped onto its reference (``choose_reference``); refused fits keep their image."""
    cfg = cfg or AlignmentConfig()
    _, fits = choose_reference([Keypoints(image) for image in images], cfg)
    return _aligned(images, fits, cfg)


def rotated_180(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[::-1, ::-1])


def patch_coverage(alignments: list[Alignment], grid: tuple[int, int]) -> torch.Tensor:
    """(N, gh, gw) weights for the scorers: 1 where a patch shows the image, 0 where the warp filled
    it in (its score says nothing about the part)."""
    return torch.as_tensor(np.stack([a.covered(grid) for a in alignments]), dtype=torch.float32)


def to_original_frames(result: BatchScores, alignments: list[Alignment], report: AlignmentReport) -> BatchScores:
    """Scores of aligned images with their patch maps moved back onto each input image, and the
    batch's alignment report."""
    maps = np.stack([a.map_back(m.numpy()) for a, m in zip(alignments, result.patch_scores)])
    return BatchScores(torch.as_tensor(maps), result.image_scores_raw, result.image_scores, alignment=report,
                       matching=result.matching)
