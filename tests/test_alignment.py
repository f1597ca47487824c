"""Alignment recovers a known rotation and shift of a generated image."""

import cv2
import numpy as np
import pytest

from pipeline.data.synthetic import render_image
from pipeline.engine.alignment import (
    align_to,
    apply_transform,
    estimate_transform,
    rotated_180,
)


def moved(image, angle, tx, ty):
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    matrix[:, 2] += (tx, ty)
    return cv2.warpAffine(image, matrix, (w, h), borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("angle, tx, ty", [(7.0, 5.0, -4.0), (-15.0, 0.0, 10.0), (30.0, -8.0, 3.0)])
def test_recovers_rotation_and_shift_within_tolerance(angle, tx, ty):
    reference = render_image("plate", 256, [0, 1, 2])[0]
    image = moved(reference, angle, tx, ty)
    transform = estimate_transform(image, reference)
    assert transform is not None and transform.inliers >= 20
    assert abs(transform.angle - angle) < 0.5  # tolerance: half a degree
    # the inverse motion in pixels: the composed transform leaves the image centre within 1.5 px
    h, w = reference.shape[:2]
    forward = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    forward[:, 2] += (tx, ty)
    back = cv2.getRotationMatrix2D((w / 2, h / 2), -transform.angle, 1.0)
    back[:, 2] += (transform.tx, transform.ty)
    for point in ((w / 2, h / 2), (60.0, 60.0), (200.0, 180.0)):
        p = np.array([*point, 1.0])
        q = back @ np.array([*(forward @ p), 1.0])
        assert np.linalg.norm(q - p[:2]) < 1.5
    restored = apply_transform(image, transform)
    centre = (slice(48, -48), slice(48, -48))
    assert np.abs(restored[centre].astype(float) - reference[centre]).mean() < 6.0  # grey levels


def test_unrelated_or_flat_images_are_left_alone():
    flat = np.full((128, 128, 3), 120, np.uint8)
    assert estimate_transform(flat, flat) is None
    texture = render_image("weave", 128, [1])[0]
    assert np.array_equal(align_to([flat], texture)[0].image, flat)
    assert np.array_equal(rotated_180(rotated_180(texture)), texture)


def test_small_images_align_and_maps_go_back_to_the_original_frame():
    reference = render_image("disc", 128, [0, 1])[0]
    image = moved(reference, 20.0, 8.0, 0.0)
    (alignment,) = align_to([image], reference)  # ORB alone finds too few keypoints at 128 px
    assert alignment.transform is not None and abs(alignment.transform.angle - 20.0) < 1.0
    covered = alignment.covered((16, 16))
    assert covered[6:10, 6:10].all() and not covered.all()  # the centre came from the image, corners did not
    hot = np.zeros((16, 16), np.float32)
    hot[5, 9] = 1.0  # a patch of the aligned image: where was it in the original one?
    back = alignment.map_back(hot)
    h, w = reference.shape[:2]
    forward = alignment.transform.matrix(h, w)
    # the original pixel that the warp moved to the hot patch's centre (9 * 8 + 3.5, 5 * 8 + 3.5)
    source = np.linalg.solve(forward[:, :2], np.array([9 * 8 + 3.5, 5 * 8 + 3.5]) - forward[:, 2])
    assert np.unravel_index(back.argmax(), back.shape) == (round((source[1] - 3.5) / 8), round((source[0] - 3.5) / 8))
