"""LNAMD against explicit neighbourhood averaging, RsCIN against Eq. 5, maps and image scores."""

import math

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from pipeline.engine.lnamd import lnamd
from pipeline.engine.maps import anomaly_maps, gaussian_blur, image_scores
from pipeline.engine.rscin import rscin


def explicit_lnamd(stage: torch.Tensor, r: int) -> torch.Tensor:
    """LayerNorm over (C, H, W) by hand, then an r x r neighbourhood mean with zeros outside the grid."""
    x = stage.double()
    n, c, h, w = x.shape
    mu = x.mean(dim=(1, 2, 3), keepdim=True)
    var = x.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    x = (x - mu) / torch.sqrt(var + 1e-5)
    out = torch.zeros(n, h * w, c, dtype=torch.float64)
    half = r // 2
    for i in range(h):
        for j in range(w):
            acc = torch.zeros(n, c, dtype=torch.float64)
            for di in range(-half, half + 1):
                for dj in range(-half, half + 1):
                    if 0 <= i + di < h and 0 <= j + dj < w:
                        acc += x[:, :, i + di, j + dj]
            v = acc / (r * r)  # padded zeros count in the mean
            out[:, i * w + j] = v / v.norm(dim=1, keepdim=True)
    return out


@pytest.mark.parametrize("r", [1, 3, 5])
def test_lnamd_equals_explicit_neighbourhood_average(r):
    stage = torch.randn(2, 6, 7, 5, generator=torch.Generator().manual_seed(r)) * 3 + 1
    got = lnamd(stage, r)
    assert got.shape == (2, 35, 6)
    assert torch.allclose(got.double(), explicit_lnamd(stage, r), atol=1e-5)
    assert torch.allclose(got.norm(dim=-1), torch.ones(2, 35), atol=1e-5)


def test_lnamd_rejects_even_degree_and_bad_shape():
    with pytest.raises(ValueError, match="odd"):
        lnamd(torch.randn(1, 2, 3, 3), 2)
    with pytest.raises(ValueError, match="N, C, H, W"):
        lnamd(torch.randn(2, 3, 3), 1)


def test_rscin_equals_eq5_hand_case():
    s3 = math.sqrt(3) / 2
    emb = torch.tensor([[1.0, 0.0], [0.5, s3], [0.0, 1.0]], dtype=torch.float64)
    scores = torch.tensor([10.0, 12.0, 14.0], dtype=torch.float64)
    c = torch.tensor([0.0, 0.5, 1.0], dtype=torch.float64)  # min-max normalised
    # W = F F^T; window k=2 keeps each row's 2 largest (self + nearest), D^-1 row-normalises
    w01, w12 = 0.5, s3
    s2 = torch.tensor([
        (1 * c[0] + w01 * c[1]) / (1 + w01),
        (1 * c[1] + w12 * c[2]) / (1 + w12),
        (1 * c[2] + w12 * c[1]) / (1 + w12),
    ])
    expected = (s2 + c) / 2  # Eq. 5 with M = {M_2}: (D^-1 (M_2 . W) C + C) / (K + 1), K = 1
    got = rscin(scores, emb, windows=[1, 2])
    assert torch.allclose(got, expected, atol=1e-12)
    assert torch.allclose(got, torch.tensor([1 / 12, (0.5 + (0.5 + s3) / (1 + s3)) / 2,
                                             (1 + (1 + 0.5 * s3) / (1 + s3)) / 2], dtype=torch.float64))

    # on the raw scale: the same smoothing of 10 + 4 c, so the same order and comparable across batches
    assert torch.allclose(rscin(scores, emb, windows=[1, 2], normalise=False), 10 + 4 * expected, atol=1e-12)


def test_rscin_window_one_is_identity_and_large_windows_clip():
    emb = torch.nn.functional.normalize(torch.randn(5, 4), dim=-1)
    scores = torch.tensor([3.0, 1.0, 2.0, 5.0, 4.0])
    assert torch.allclose(rscin(scores, emb, [1]), (scores - 1) / 4)
    full = rscin(scores, emb, [5])
    assert torch.allclose(rscin(scores, emb, [50]), full)


def test_anomaly_maps_bilinear_and_gaussian():
    patch = torch.zeros(1, 4, 4)
    patch[0, 1, 2] = 1.0
    maps = anomaly_maps(patch, 32, sigma=0)
    assert maps.shape == (1, 32, 32)
    expected = torch.nn.functional.interpolate(patch[None], size=(32, 32), mode="bilinear", align_corners=False)[0]
    assert torch.allclose(maps, expected)
    # Gaussian smoothing matches scipy's (truncate 4 sigma) away from the borders
    rng = np.random.default_rng(0)
    img = rng.random((64, 64)).astype(np.float32)
    ours = gaussian_blur(torch.from_numpy(img)[None], 2.0)[0].numpy()
    ref = gaussian_filter(img.astype(np.float64), sigma=2.0, truncate=4.0)
    assert np.allclose(ours[10:-10, 10:-10], ref[10:-10, 10:-10], atol=1e-5)


def test_image_score_is_max_patch_score():
    patch = torch.rand(3, 5, 5)
    assert torch.equal(image_scores(patch), patch.flatten(1).max(dim=1).values)
