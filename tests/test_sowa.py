"""SOWA: prompts against CLIP's own text encoder, the fused map against Eq. 2, frozen weights,
the few-shot memory bank, checkpoints, bad settings, and training on generated data."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from pipeline.data.synthetic import generate_dataset
from pipeline.detectors.checkpoint import load_checkpoint, save_checkpoint
from pipeline.detectors.registry import build_detector
from pipeline.detectors.sowa import DualPrompts
from pipeline.detectors.training import (
    evaluate_detector,
    load_references,
    load_split,
    train_detector,
)
from pipeline.engine.backbones import create_open_clip
from pipeline.engine.weights import WeightsError
from pipeline.settings import (
    BackboneConfig,
    ConfigError,
    DetectorConfig,
    config_from_dict,
)

SIZE = 128  # ViT-S-16: an 8 x 8 patch grid


def sowa_config(iterations: int = 30, **sowa) -> DetectorConfig:
    return config_from_dict(DetectorConfig, {
        "kind": "sowa",
        "sowa": {"clip": {"name": "ViT-S-16", "image_size": SIZE, "random_init": True, "device": "cpu"},
                 "windows": [2, 2, 4, 8], **sowa},
        "training": {"iterations": iterations, "batch_size": 8}})


@pytest.fixture(scope="module")
def sowa():
    return build_detector(sowa_config())


def images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)


def test_prompts_with_word_embeddings_as_context_equal_clip_encode_text():
    clip = create_open_clip(BackboneConfig(name="ViT-S-16", random_init=True), with_text=True).eval()
    import open_clip

    prompts = DualPrompts(clip, open_clip.get_tokenizer("ViT-S-16"), length=3)
    words = open_clip.get_tokenizer("ViT-S-16")(["scratched dented bent normal object",
                                                 "scratched dented bent abnormal object"])
    with torch.no_grad():
        prompts.context.copy_(clip.token_embedding(words[:, 1:4]))
        expected = F.normalize(clip.encode_text(words), dim=-1)
        np.testing.assert_allclose(prompts().numpy(), expected.numpy(), atol=1e-5)


def test_fused_map_is_the_weighted_sum_of_stage_text_similarities(sowa):
    """Eq. 2 patch by patch: softmax over classes of sum_i alpha_i cos(F*_i, T_c) * CLIP's logit scale."""
    x = sowa.preprocess(images(2))
    with torch.no_grad():
        fused, image_logits, adapted = sowa(x)
        features = sowa.encoder(x)
        text = sowa.prompts()
        probs = sowa.pixel_probabilities(fused, sowa.side)  # at the grid size: no interpolation
    scale = sowa.logit_scale.item()
    for b, j in ((0, 0), (1, 27), (1, 63)):
        logits = []
        for c in range(2):
            total = 0.0
            for i, adapter in enumerate(sowa.adapters):
                tokens = features.stages[i].flatten(2).transpose(1, 2)
                f = adapter(tokens, sowa.side)[b, j]
                total += sowa.cfg.stage_weights[i] * F.cosine_similarity(f, text[c], dim=0).item()
            logits.append(scale * total)
        expected = torch.softmax(torch.tensor(logits), dim=0)
        np.testing.assert_allclose(probs[b, :, j // 8, j % 8].numpy(), expected.numpy(), atol=1e-4)
        cls = [scale * F.cosine_similarity(features.embedding[b], text[c], dim=0).item() for c in range(2)]
        np.testing.assert_allclose(image_logits[b].numpy(), cls, atol=1e-3)
    assert len(adapted) == 4 and adapted[0].shape == (2, 64, 384)


def test_training_step_changes_only_prompts_and_adapter_projections():
    det = build_detector(sowa_config())
    trainable = set(det.trainable_state())
    assert trainable == {"prompts.context"} | {f"adapters.{i}.project.{p}" for i in range(4) for p in ("weight", "bias")}
    before = {k: v.clone() for k, v in det.state_dict().items()}
    optimizer = torch.optim.Adam([p for p in det.parameters() if p.requires_grad], lr=1e-2)
    det.train()
    masks = torch.zeros(4, SIZE, SIZE, dtype=torch.bool)
    masks[1, 10:40, 10:40] = True
    loss = det.training_loss(det.preprocess(images(4)), torch.tensor([0, 1, 0, 0]), masks, 0.0)
    loss.backward()
    optimizer.step()
    after = det.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed == trainable


def test_fewshot_distance_is_the_nearest_memory_patch_averaged_over_stages(sowa):
    refs, queries = sowa.preprocess(images(2, seed=1)), sowa.preprocess(images(3, seed=2))
    sowa.set_references(refs)
    try:
        with torch.no_grad():
            _, _, adapted = sowa(queries)
            _, _, bank = sowa(refs)
            got = sowa.fewshot_distances(adapted)
            naive = torch.stack([
                (1.0 - adapted[i] @ bank[i].reshape(-1, bank[i].shape[-1]).T).amin(dim=-1) for i in range(4)
            ]).mean(dim=0)
        np.testing.assert_allclose(got.numpy(), naive.numpy(), atol=1e-5)
        # an image in the memory bank finds itself: few-shot adds nothing to its zero-shot map
        with_memory, _ = sowa.predict(refs)
    finally:
        sowa.set_references(None)
    zero_shot, _ = sowa.predict(refs)
    np.testing.assert_allclose(with_memory.numpy(), zero_shot.numpy(), atol=1e-4)


def test_checkpoint_round_trip(sowa, tmp_path):
    cfg = sowa_config()
    with torch.no_grad():
        sowa.prompts.context.add_(0.5)  # not the seeded initialisation
    save_checkpoint(sowa, cfg, str(tmp_path / "ckpt"))
    loaded, loaded_cfg, meta = load_checkpoint(str(tmp_path / "ckpt"))
    assert loaded_cfg.kind == "sowa" and "ViT-S-16" in meta["encoder"]
    x = sowa.preprocess(images(2))
    for a, b in zip(sowa.predict(x), loaded.predict(x)):
        np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-5)


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match=r"sowa.windows \[3\] do not divide the 8x8 patch grid"):
        build_detector(sowa_config(windows=[2, 3, 4, 8]))
    with pytest.raises(ConfigError, match="'sowa.windows'"):
        sowa_config(windows=[2, 4])
    with pytest.raises(ConfigError, match="'sowa.clip.family'"):
        config_from_dict(DetectorConfig, {"kind": "sowa", "sowa": {"clip": {"family": "timm_vit"}}})
    # a vision-only checkpoint serves feature extraction but not SOWA's prompts
    visual = create_open_clip(BackboneConfig(name="ViT-S-16", random_init=True)).visual
    from safetensors.torch import save_file

    save_file({f"visual.{k}": v.contiguous() for k, v in visual.state_dict().items()}, str(tmp_path / "v.safetensors"))
    cfg = sowa_config()
    cfg.sowa.clip.random_init, cfg.sowa.clip.weights = False, str(tmp_path / "v.safetensors")
    with pytest.raises(WeightsError, match="missing from the file"):
        build_detector(cfg)


def test_training_on_labelled_images_separates_held_out_defects_better_than_untrained(tmp_path):
    """Random-init CLIP, so the held-out images are new images of the training products: transfer to
    unseen products needs real CLIP weights (the paper's setting)."""
    cats = ["weave", "plate"]
    generate_dataset(str(tmp_path / "aux"), cats, n_train=0, n_test_good=8, n_test_defect=16, image_size=SIZE, seed=1)
    generate_dataset(str(tmp_path / "new"), cats, n_train=2, n_test_good=6, n_test_defect=6, image_size=SIZE, seed=2)
    train = load_split(str(tmp_path / "aux"), "mvtec", cats, "test", SIZE)
    held_out = load_split(str(tmp_path / "new"), "mvtec", cats, "test", SIZE)
    cfg = sowa_config(iterations=30)
    det = build_detector(cfg)
    cpu = torch.device("cpu")
    before = evaluate_detector(det, held_out, 8, cpu)["mean"]
    result = train_detector(det, train, cfg, device="cpu")
    after = evaluate_detector(det, held_out, 8, cpu)["mean"]
    fewshot = evaluate_detector(det, held_out, 8, cpu,
                                load_references(str(tmp_path / "new"), "mvtec", cats, 2, SIZE))["mean"]
    assert np.mean(result.losses[-5:]) < result.losses[0] - 0.2
    assert after["mad"] > before["mad"] + 0.1, (before, after)
    assert after["pixel_auroc"] > before["pixel_auroc"] + 0.1, (before, after)
    assert fewshot["mad"] > before["mad"] + 0.1, (before, fewshot)


def test_sweep_data_trains_on_the_auxiliary_set_and_validates_on_the_dataset(tmp_path):
    from pipeline.settings import SweepConfig
    from pipeline.tuning.sweep import _prepare_data

    clip = {"name": "ViT-S-16", "image_size": SIZE, "random_init": True}
    base = {"detector": {"kind": "sowa", "sowa": {"clip": clip, "windows": [2, 2, 4, 8], "reference_images": 2}},
            "dataset": {"root": str(tmp_path / "target")},
            "synthetic": {"enabled": True, "categories": ["disc"], "n_train": 3, "n_test_good": 2,
                          "n_test_defect": 2, "image_size": SIZE},
            "auxiliary": {"root": str(tmp_path / "aux")},
            "auxiliary_synthetic": {"enabled": True, "categories": ["weave", "plate"], "n_test_good": 1,
                                    "n_test_defect": 3, "image_size": SIZE, "seed": 5}}
    train, validation, references = _prepare_data(config_from_dict(SweepConfig, base))
    assert sorted(set(train.categories)) == ["plate", "weave"] and train.labels.sum() == 6
    assert all(train.masks[i].any() == bool(train.labels[i]) for i in range(len(train.labels)))
    assert set(validation.categories) == {"disc"} and len(validation.labels) == 4
    assert list(references) == ["disc"] and references["disc"].shape == (2, SIZE, SIZE, 3)

    with pytest.raises(ConfigError, match="'auxiliary.root'"):
        config_from_dict(SweepConfig, {**base, "auxiliary": {"root": str(tmp_path / "target")}})
    with pytest.raises(ConfigError, match="'pseudo_labels.scores_prefix'"):
        config_from_dict(SweepConfig, {**base, "pseudo_labels": {"scores_prefix": "s3://b/scores", "run_id": "r"}})


def test_loss_is_the_weighted_sum_of_dice_focal_and_bce(sowa):
    from pipeline.detectors.losses import dice_loss, focal_loss

    x = sowa.preprocess(images(2))
    masks = torch.zeros(2, SIZE, SIZE, dtype=torch.bool)
    masks[1, 30:60, 20:50] = True
    labels = torch.tensor([0, 1])
    with torch.no_grad():
        fused, image_logits, _ = sowa(x)
        probs = sowa.pixel_probabilities(fused, SIZE)
        abnormal = image_logits.softmax(dim=-1)[:, 1]
        bce = -(torch.log(1 - abnormal[0]) + torch.log(abnormal[1])) / 2
        expected = dice_loss(probs[:, 1], masks) + focal_loss(probs, masks) + bce
        assert sowa.training_loss(x, labels, masks, 0.0).item() == pytest.approx(expected.item(), rel=1e-5)


def test_sowa_sweep_trains_on_auxiliary_data_and_validates_few_shot(ray_local, tmp_path):
    import pyarrow.parquet as pq

    from pipeline.settings import SweepConfig
    from pipeline.tuning.sweep import run_sweep

    size = 64  # ViT-S-16: a 4 x 4 grid
    cfg = config_from_dict(SweepConfig, {
        "name": "sowa-windows",
        "detector": {"kind": "sowa",
                     "sowa": {"clip": {"name": "ViT-S-16", "image_size": size, "random_init": True},
                              "windows": [2, 2, 4, 4], "reference_images": 1},
                     "training": {"iterations": 4, "batch_size": 4}},
        "dataset": {"root": str(tmp_path / "target")},
        "synthetic": {"enabled": True, "categories": ["disc"], "n_train": 1, "n_test_good": 2, "n_test_defect": 2,
                      "image_size": size},
        "auxiliary": {"root": str(tmp_path / "aux")},
        "auxiliary_synthetic": {"enabled": True, "categories": ["plate"], "n_test_good": 2, "n_test_defect": 4,
                                "image_size": size},
        "search_space": {"sowa.windows": {"type": "choice", "values": [[2, 2, 4, 4], [1, 2, 2, 4]]},
                         "sowa.prompt_length": {"type": "choice", "values": [4, 12]}},
        "num_samples": 2, "evaluations": 2, "max_concurrent": 1, "scheduler": {"kind": "fifo"},
        "storage_path": str(tmp_path / "tune"), "output_prefix": str(tmp_path / "sweeps")})
    summary = run_sweep(cfg)
    assert summary["errored"] == 0 and summary["trials"] == 2
    rows = pq.read_table(tmp_path / "sweeps" / "sowa-windows" / "trials.parquet").to_pylist()
    assert all(r["status"] == "TERMINATED" and r["evaluations"] == 2 and 0 <= r["mad"] <= 1 for r in rows)
    assert {tuple(r["config.sowa.windows"]) for r in rows} <= {(2, 2, 4, 4), (1, 2, 2, 4)}
    detector, best_cfg, meta = load_checkpoint(str(tmp_path / "sweeps" / "sowa-windows" / "best"))
    assert best_cfg.kind == "sowa" and best_cfg.sowa.windows == summary["best_config"]["sowa.windows"]
    assert detector.prompts.context.shape[1] == summary["best_config"]["sowa.prompt_length"]
