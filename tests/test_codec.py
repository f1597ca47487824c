"""Feature encodings of the shards: int8 per token against a naive per-token loop, and its error bound."""

import numpy as np
import pytest

from pipeline.job.codec import decode_stage, encode_stage


def naive_int8(stage: np.ndarray) -> np.ndarray:
    """Per image and grid cell: scale = fp16(max |x| / 127), values rounded to the nearest step."""
    out = np.zeros(stage.shape, np.float32)
    n, c, h, w = stage.shape
    for i in range(n):
        for y in range(h):
            for x in range(w):
                token = stage[i, :, y, x].astype(np.float64)
                scale = float(np.float16(np.abs(token).max() / 127.0))
                if scale == 0:
                    continue
                out[i, :, y, x] = np.clip(np.rint(token / np.float32(scale)), -127, 127) * scale
    return out


def test_int8_tokens_match_a_naive_loop_and_stay_within_half_a_step():
    rng = np.random.default_rng(0)
    stage = (rng.normal(size=(3, 40, 5, 4)) * rng.uniform(0.01, 30, size=(3, 1, 5, 4))).astype(np.float32)
    stage[1, :, 2, 3] = 0.0  # an all-zero token stays zero
    stored = encode_stage(stage, "int8")
    assert stored[""].dtype == np.int8 and stored["_scale"].dtype == np.float16 and stored["_scale"].shape == (3, 5, 4)
    decoded = decode_stage(stored[""], stored["_scale"])
    np.testing.assert_allclose(decoded, naive_int8(stage), rtol=1e-6, atol=1e-6)
    step = stored["_scale"].astype(np.float32)[:, None]
    assert np.all(np.abs(decoded - stage) <= step / 2 * 1.001 + 1e-7)
    assert np.all(decoded[1, :, 2, 3] == 0)
    bytes_int8 = sum(v.nbytes for v in stored.values())
    assert bytes_int8 / encode_stage(stage, "fp16")[""].nbytes == pytest.approx((40 + 2) / 80)


def test_fp16_is_the_rounded_floats_and_unknown_dtypes_are_refused():
    stage = np.linspace(-3, 3, 24, dtype=np.float32).reshape(1, 6, 2, 2)
    stored = encode_stage(stage, "fp16")
    assert set(stored) == {""} and np.array_equal(decode_stage(stored[""], None), stage.astype(np.float16))
    with pytest.raises(ValueError, match="unknown feature dtype"):
        encode_stage(stage, "int4")
