"""Image alignment for PatchEAD+: rotation and translation between photos of the same part.

Patch matching compares a patch with patches at any position, but a part turned by a few degrees
shows its edges at other angles, and those patches find no match. PatchEAD+ therefore estimates
the rotation and translation of each image against a reference with classical feature matching
(ORB keypoints, brute-force Hamming matching, a RANSAC fit of a rotation + translation + uniform
scale, OpenCV), warps it onto the reference, and also offers the 180-degree-rotated copy as a
reference, since symmetric parts can match either way round.

A warp leaves part of the frame with no source pixels. It is filled by reflection (replicated edge
pixels draw streaks that differ from image to image and score as anomalies), and the patches it
touches are reported (``Alignment.covered``) so that scorers can leave them out.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from .scores import BatchScores

# ORB ignores a 31-pixel margin at every pyramid level, so small images yield too few keypoints (at
# 128 px a generated disc never aligned); smaller images are matched on an upscaled copy.
MATCH_SIZE = 256


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


def _grey(image: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image


def estimate_transform(image: np.ndarray, reference: np.ndarray, max_features: int = 1000,
                       min_inliers: int = 8) -> RigidTransform | None:
    """The transform that maps ``image`` onto ``reference`` (uint8 RGB or grey, same size), or None
    when too few keypoint matches agree (texture-less or unrelated images: leave them as they are)."""
    h, w = reference.shape[:2]
    scale = max(1.0, MATCH_SIZE / min(h, w))
    grey_img, grey_ref = (cv2.resize(_grey(x), None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
                          if scale > 1 else _grey(x) for x in (image, reference))
    orb = cv2.ORB_create(nfeatures=max_features)
    kp_img, des_img = orb.detectAndCompute(grey_img, None)
    kp_ref, des_ref = orb.detectAndCompute(grey_ref, None)
    if des_img is None or des_ref is None or len(kp_img) < min_inliers or len(kp_ref) < min_inliers:
        return None
    matches = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True).match(des_img, des_ref)
    if len(matches) < min_inliers:
        return None
    # keypoints back in the image's pixel coordinates; the RANSAC tolerance stays 3 matched pixels
    src = (np.float32([kp_img[m.queryIdx].pt for m in matches]) + 0.5) / scale - 0.5
    dst = (np.float32([kp_ref[m.trainIdx].pt for m in matches]) + 0.5) / scale - 0.5
    matrix, inliers = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=3.0 / scale)
    if matrix is None or int(inliers.sum()) < min_inliers:
        return None
    angle = float(np.degrees(np.arctan2(matrix[1, 0], matrix[0, 0])))
    # express the fit as rotation about the centre followed by a translation
    about_centre = RigidTransform(angle, 0.0, 0.0, 0).matrix(h, w)
    centre = np.array([w / 2, h / 2])
    shift = matrix[:, :2] @ centre + matrix[:, 2] - (about_centre[:, :2] @ centre + about_centre[:, 2])
    return RigidTransform(angle=angle, tx=float(shift[0]), ty=float(shift[1]), inliers=int(inliers.sum()))


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


def align_to(images: list[np.ndarray], reference: np.ndarray) -> list[Alignment]:
    """Every image warped onto ``reference`` where a transform is found, unchanged otherwise."""
    alignments = []
    for image in images:
        transform = estimate_transform(image, reference)
        alignments.append(Alignment(image if transform is None else apply_transform(image, transform), transform))
    return alignments


def rotated_180(image: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(image[::-1, ::-1])


def patch_coverage(alignments: list[Alignment], grid: tuple[int, int]) -> torch.Tensor:
    """(N, gh, gw) weights for the scorers: 1 where a patch shows the image, 0 where the warp filled
    it in (its score says nothing about the part)."""
    return torch.as_tensor(np.stack([a.covered(grid) for a in alignments]), dtype=torch.float32)


def to_original_frames(result: BatchScores, alignments: list[Alignment]) -> BatchScores:
    """Scores of aligned images with their patch maps moved back onto each input image."""
    maps = np.stack([a.map_back(m.numpy()) for a, m in zip(alignments, result.patch_scores)])
    return BatchScores(torch.as_tensor(maps), result.image_scores_raw, result.image_scores)
