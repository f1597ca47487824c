"""Alignment recovers a known rotation and shift of a generated image, chooses a reference most
images match, refuses implausible fits (keeping the image as it is) and reports what it did."""

import cv2
import numpy as np
import pytest

from pipeline.data.synthetic import render_image
from pipeline.engine.alignment import (
    Keypoints,
    RigidTransform,
    align_batch,
    align_to,
    apply_transform,
    choose_reference,
    estimate_transform,
    fit,
    rotated_180,
    similarity_gain,
)
from pipeline.engine.scores import AlignmentReport
from pipeline.settings import AlignmentConfig


def moved(image, angle, tx, ty, scale=1.0):
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
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
    (kept,), report = align_to([flat], texture)
    assert np.array_equal(kept.image, flat) and kept.transform is None
    assert (report.aligned, report.skipped, report.rejected) == (0, 1, {})
    assert np.array_equal(rotated_180(rotated_180(texture)), texture)


def test_small_images_align_and_maps_go_back_to_the_original_frame():
    reference = render_image("disc", 128, [0, 1])[0]
    image = moved(reference, 20.0, 8.0, 0.0)
    (alignment,), _ = align_to([image], reference)  # ORB alone finds too few keypoints at 128 px
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


def test_the_reference_is_the_image_the_others_match_best_not_the_first():
    plate = render_image("plate", 256, [0, 1, 2])[0]
    flat = np.full_like(plate, 120)  # first: featureless, as the tile set's reference with 3 keypoints was
    images = [flat] + [moved(plate, angle, 4.0, -3.0) for angle in (5.0, -8.0, 12.0, -3.0)]
    keypoints = [Keypoints(image) for image in images]
    reference, fits = choose_reference(keypoints, AlignmentConfig(reference_candidates=5))
    assert reference != 0 and fits[reference] is None
    assert fits[0].outcome == "skipped" and all(f.outcome == "aligned" for f in fits[1:] if f is not None)
    first, fits_first = choose_reference(keypoints, AlignmentConfig(reference="first"))
    assert first == 0 and all(f.outcome == "skipped" for f in fits_first[1:])
    alignments, report = align_batch(images, AlignmentConfig(reference_candidates=5, min_aligned_fraction=0.0))
    assert (report.aligned, report.skipped, report.rejected) == (3, 1, {})  # the reference is not counted
    assert np.array_equal(alignments[0].image, flat) and alignments[reference].transform is None
    # 3 of 4 fits accepted is under the default 0.9 of the batch: none is applied
    alignments, report = align_batch(images, AlignmentConfig(reference_candidates=5))
    assert (report.aligned, report.skipped, report.rejected) == (0, 1, {"batch": 3})
    assert all(a.transform is None and np.array_equal(a.image, image) for a, image in zip(alignments, images))


@pytest.mark.parametrize("limits, move, outcome", [
    ({"max_angle": 45.0}, (60.0, 0.0, 0.0, 1.0), "angle"),
    ({"max_angle": 90.0}, (60.0, 0.0, 0.0, 1.0), "aligned"),
    ({}, (10.0, 0.0, 0.0, 1.3), "scale"),
    ({"max_scale_change": 0.4, "min_similarity_gain": -2.0}, (10.0, 0.0, 0.0, 1.3), "aligned"),
    ({"min_inlier_ratio": 1.0}, (10.0, 5.0, 0.0, 1.0), "inlier_ratio"),
    ({"min_inliers": 5000}, (10.0, 5.0, 0.0, 1.0), "skipped"),  # more than ORB's 1000 keypoints: nothing to fit
])
def test_implausible_fits_are_refused_and_leave_the_image_as_it_is(limits, move, outcome):
    reference = render_image("plate", 256, [0, 1, 2])[0]
    image = moved(reference, *move[:3], scale=move[3])
    result = fit(Keypoints(image), Keypoints(reference), AlignmentConfig(**limits))
    assert result.outcome == outcome
    assert (result.transform is not None) == (outcome == "aligned")
    (alignment,), report = align_to([image], reference, AlignmentConfig(**limits))
    if outcome != "aligned":
        assert np.array_equal(alignment.image, image) and alignment.transform is None
        assert report.aligned == 0 and (report.skipped == 1 or report.rejected == {outcome: 1})


def test_a_fit_that_does_not_make_the_image_more_like_the_reference_is_refused():
    """A rotationally symmetric part turned about its own centre: ORB finds the turn, but the turned
    image is no more like the reference than before (the tire set's spurious fits)."""
    y, x = np.mgrid[:256, :256] + 0.5
    r, theta = np.hypot(x - 128, y - 128), np.arctan2(y - 128, x - 128)
    tread = (np.cos(36 * theta) > 0) & (r > 80) & (r < 100)
    part = np.where(tread | (np.abs(r - 60) < 3), 40, 200).astype(np.uint8)
    part = np.repeat(part[..., None], 3, axis=2)
    turned = moved(part, 40.0, 0.0, 0.0)
    result = fit(Keypoints(turned), Keypoints(part), AlignmentConfig(max_angle=180.0, min_inlier_ratio=0.0))
    assert result.outcome in ("no_gain", "inliers"), result
    shifted = moved(part, 0.0, 12.0, 0.0)  # the same part off centre: aligning it is a real gain
    assert fit(Keypoints(shifted), Keypoints(part), AlignmentConfig()).outcome == "aligned"


def test_similarity_gain_is_the_rise_in_correlation_with_the_reference():
    reference = render_image("plate", 128, [0, 1, 2])[0]
    image = moved(reference, 0.0, 10.0, 0.0)
    ours, theirs = Keypoints(image), Keypoints(reference)
    # by hand on the 64 px copies: moving back by 10 px is 5 px there; columns 0..58 stay inside
    warped_corr = np.corrcoef(ours.small[:, 5:].ravel(), theirs.small[:, :59].ravel())[0, 1]
    plain_corr = np.corrcoef(ours.small[:, :59].ravel(), theirs.small[:, :59].ravel())[0, 1]
    gain = similarity_gain(ours, theirs, RigidTransform(0.0, -10.0, 0.0, 0))
    assert gain == pytest.approx(warped_corr - plain_corr, abs=1e-4) and gain > 0.1
    assert similarity_gain(ours, theirs, RigidTransform(0.0, 0.0, 0.0, 0)) == 0.0
    assert similarity_gain(ours, theirs, RigidTransform(0.0, 10.0, 0.0, 0)) < 0.0


def test_report_counts_outcomes_and_bins_angles():
    report = AlignmentReport.of([("aligned", 3.0), ("aligned", -20.0), ("angle", 150.0), ("skipped", 0.0),
                                 ("no_gain", 10.0), ("angle", -100.0), ("aligned", 179.0)])
    assert (report.aligned, report.skipped, report.rejected) == (3, 1, {"angle": 2, "no_gain": 1})
    assert report.angle_histogram() == {"0-5": 1, "5-15": 0, "15-45": 1, "45-90": 0, "90-180": 1}
    both = AlignmentReport.merge([report, AlignmentReport.of([("aligned", -4.0), ("inliers", 0.0)])])
    assert (both.aligned, both.skipped, both.rejected) == (4, 1, {"angle": 2, "inliers": 1, "no_gain": 1})
    assert both.as_dict()["rejected"] == 4 and both.as_dict()["angle_histogram"]["0-5"] == 2
    assert both.line().startswith("alignment: 4 aligned, 4 rejected (angle 2, inliers 1, no_gain 1), 1 skipped")
