"""PatchEAD against a naive implementation of its Eq. 1-4, both readings of its selection rules,
and on generated data: the nearest-neighbour reading separates defects, the literal one much less."""

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score

from pipeline.data.benchmarks import read_split
from pipeline.data.images import load_image
from pipeline.data.synthetic import DEFECTS, generate_dataset, render_image
from pipeline.engine.backbones import build_backbone
from pipeline.engine.features import Features
from pipeline.engine.msm import top_image_similarities
from pipeline.engine.patchead import score_images, score_patchead
from pipeline.settings import BackboneConfig, PatchEADConfig


def naive_patchead(stages, cfg, reference=None, turned=None):
    """Eq. 1-4 with explicit loops over queries, references and patches; levels averaged. ``turned``:
    patches of the references' 180-degree copies, which each reference image offers as well."""
    n = stages[0].shape[0]
    per_level = []
    for level, stage in enumerate(stages):
        tokens = stage.flatten(2).transpose(1, 2).double()  # (N, M, C)
        refs = tokens if reference is None else reference[level].flatten(2).transpose(1, 2).double()
        if turned is not None:
            refs = torch.cat([refs, turned[level].flatten(2).transpose(1, 2).double()], dim=1)
        m = torch.zeros(n, tokens.shape[1], dtype=torch.float64)
        for q in range(n):
            others = [i for i in range(refs.shape[0]) if reference is not None or i != q]
            k = (max(1, int(cfg.image_fraction * len(others))) if reference is None
                 else min(cfg.fewshot_images, len(others)))
            for j in range(tokens.shape[1]):
                u = []
                for i in others:
                    d = 1 - F.cosine_similarity(tokens[q, j][None], refs[i], dim=1)  # Eq. 1 over patches k
                    u.append(d.min() if cfg.patch_match == "nearest" else d.max())  # Eq. 2
                u = torch.stack(u).sort(descending=cfg.image_selection == "farthest").values
                m[q, j] = u[:k].mean()  # Eq. 3
        per_level.append(m)
    m = torch.stack(per_level).mean(0)
    k_i = max(1, int(cfg.top_patch_fraction * m.shape[1]))
    return m, m.topk(k_i, dim=1).values.mean(1)  # Eq. 4


@pytest.mark.parametrize("patch_match, image_selection", [("nearest", "nearest"), ("farthest", "farthest"),
                                                          ("nearest", "farthest")])
@pytest.mark.parametrize("mode", ["batch", "fewshot"])
@pytest.mark.parametrize("with_copies", [False, True])
def test_equations_1_to_4_against_naive_loops(mode, patch_match, image_selection, with_copies):
    torch.manual_seed(0)
    stages = [torch.randn(6, 8, 3, 3), torch.randn(6, 5, 3, 3)]
    reference = [torch.randn(4, 8, 3, 3), torch.randn(4, 5, 3, 3)] if mode == "fewshot" else None
    turned = [torch.randn(len(s), *s.shape[1:]) for s in (reference or stages)] if with_copies else None
    cfg = PatchEADConfig(mode=mode, patch_match=patch_match, image_selection=image_selection, image_fraction=0.6,
                         fewshot_images=2, top_patch_fraction=0.25)
    result = score_patchead(Features(stages, torch.zeros(6, 2)), cfg,
                            Features(reference, torch.zeros(4, 2)) if reference else None,
                            turned=Features(turned, torch.zeros(len(turned[0]), 2)) if turned else None)
    expected_patches, expected_scores = naive_patchead(stages, cfg, reference, turned)
    assert torch.allclose(result.patch_scores.flatten(1).double(), expected_patches, atol=1e-5)
    assert torch.allclose(result.image_scores.double(), expected_scores, atol=1e-5)


def test_batches_cover_every_image_once_and_errors():
    stages = [torch.randn(10, 4, 2, 2)]
    cfg = PatchEADConfig(batch_size=4)
    result = score_patchead(Features(stages, torch.zeros(10, 2)), cfg)
    assert result.patch_scores.shape == (10, 2, 2) and torch.isfinite(result.image_scores).all()
    with pytest.raises(ValueError, match="reference"):
        score_patchead(Features(stages, torch.zeros(10, 2)), PatchEADConfig(mode="fewshot"))
    with pytest.raises(ValueError, match="image_selection"):
        top_image_similarities(F.normalize(torch.randn(3, 4, 5), dim=-1), 1, image_selection="middle")


def test_nearest_neighbour_reading_separates_defects_and_the_literal_one_does_not(tmp_path):
    generate_dataset(str(tmp_path), categories=["disc", "plate"], n_train=0, n_test_good=10, n_test_defect=10,
                     image_size=128)
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(family="timm_cnn", name="resnet18", random_init=True, image_size=128,
                                             layers=[1, 2]))
    aurocs = {}
    for reading in ("nearest", "farthest"):
        cfg = PatchEADConfig(patch_match=reading, image_selection=reading)
        values = []
        for category in ("disc", "plate"):
            samples = read_split(str(tmp_path), "mvtec", category, "test")
            feats = backbone.extract(np.stack([load_image(s.image_path, 128) for s in samples]))
            scores = score_patchead(feats, cfg).image_scores
            values.append(roc_auc_score([s.label for s in samples], scores.numpy()))
        aurocs[reading] = float(np.mean(values))
    # measured: nearest 0.985, literal (farthest patch, farthest images) 0.59
    assert aurocs["nearest"] > 0.9 and aurocs["nearest"] > aurocs["farthest"] + 0.2


def test_score_images_with_alignment_runs_both_modes():
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(family="timm_cnn", name="resnet18", random_init=True, image_size=64,
                                             layers=[1, 2]))
    images = np.stack([render_image("plate", 64, [3, i])[0] for i in range(5)])
    plain = score_images(backbone, images, PatchEADConfig())
    direct = score_patchead(backbone.extract(images), PatchEADConfig())
    assert torch.allclose(plain.image_scores, direct.image_scores, atol=1e-6)
    for cfg, refs in ((PatchEADConfig(align=True), None),
                      (PatchEADConfig(mode="fewshot", align=True), images[:2])):
        result = score_images(backbone, images[2:] if refs is not None else images, cfg, refs)
        assert result.patch_scores.shape[1:] == (16, 16) and torch.isfinite(result.image_scores).all()


def test_alignment_separates_defects_on_parts_in_differing_poses():
    """Plates turned by up to +-30 degrees: without alignment, normal plates in rare poses score as
    anomalous (their edges have no match at that angle); aligned, the defects stand out more."""
    torch.manual_seed(0)
    backbone = build_backbone(BackboneConfig(family="timm_cnn", name="resnet18", random_init=True, image_size=128,
                                             layers=[1, 2]))
    kinds = DEFECTS["plate"]
    aurocs = {False: [], True: []}
    for seed in range(3):
        images = np.stack([render_image("plate", 128, [seed, i], None if i < 10 else kinds[i % 3], pose=(30, 0.06))[0]
                           for i in range(20)])
        for align in aurocs:
            scores = score_images(backbone, images, PatchEADConfig(align=align)).image_scores
            aurocs[align].append(roc_auc_score([int(i >= 10) for i in range(20)], scores.numpy()))
    plain, aligned = np.mean(aurocs[False]), np.mean(aurocs[True])
    # measured: plain 0.93 (0.88, 0.98, 0.93), aligned 0.983 (0.98, 1.0, 0.97)
    assert aligned > 0.95 and aligned > plain + 0.03


def test_batch_references_are_members_of_every_batch_and_never_scored():
    """Batch mode with references: each batch is scored as if the references were among its images
    (Eq. 1-4 over the union, K_P from its N + R - 1 others), and the references' own scores come apart."""
    torch.manual_seed(1)
    n, r = 5, 3
    stages = [torch.randn(n + r, 8, 3, 3), torch.randn(n + r, 5, 3, 3)]
    cfg = PatchEADConfig(image_fraction=0.6, top_patch_fraction=0.25, batch_size=64)
    result = score_patchead(Features([s[:n] for s in stages], torch.zeros(n, 2)), cfg,
                            Features([s[n:] for s in stages], torch.zeros(r, 2)))
    expected_patches, expected_scores = naive_patchead(stages, cfg)  # the union as one batch
    assert result.patch_scores.shape == (n, 3, 3)
    assert torch.allclose(result.patch_scores.flatten(1).double(), expected_patches[:n], atol=1e-5)
    assert torch.allclose(result.image_scores.double(), expected_scores[:n], atol=1e-5)
    assert torch.allclose(result.reference_scores.double(), expected_scores[n:], atol=1e-5)
    split = score_patchead(Features([s[:n] for s in stages], torch.zeros(n, 2)), replace(cfg, batch_size=2),
                           Features([s[n:] for s in stages], torch.zeros(r, 2)))
    assert split.reference_scores.shape == (2 * r,)  # two batches, each with every reference
    # a group of one image is scored against the references alone (the nightly job's group of one)
    one = score_patchead(Features([s[:1] for s in stages], torch.zeros(1, 2)), cfg,
                         Features([s[n:] for s in stages], torch.zeros(r, 2)))
    one_patches, one_scores = naive_patchead([torch.cat([s[:1], s[n:]]) for s in stages], cfg)
    assert torch.allclose(one.patch_scores.flatten(1).double(), one_patches[:1], atol=1e-5)
    assert torch.allclose(one.image_scores.double(), one_scores[:1], atol=1e-5)
