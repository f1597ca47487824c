"""Names in any script draw with an installed font that has their glyphs (issue 22, item 13): the
selection by glyph coverage with the fonts that are installed, heat maps and report plots without
matplotlib's missing-glyph warnings, and one warning naming the package when no font has them."""

import contextlib
import logging
import warnings

import numpy as np
import pytest
from matplotlib import font_manager, rcParams
from matplotlib.ft2font import FT2Font

import pipeline.reporting.heatmaps as heatmaps
import pipeline.reporting.report as report
from pipeline.reporting import fonts
from pipeline.reporting.heatmaps import Caption, render_heatmap

CJK = "第3ライン/ボトル"
SCRIPT_A = "line \U0001d49c"  # MATHEMATICAL SCRIPT CAPITAL A: not in DejaVu Sans, in fonts matplotlib ships


def has_glyphs(family: str, text: str) -> bool:
    path = font_manager.findfont(font_manager.FontProperties(family=family), fallback_to_default=False)
    return {ord(c) for c in text if not c.isspace()} <= set(FT2Font(path).get_charmap())


def glyph_warnings(draw) -> list[str]:
    """matplotlib's missing-glyph warnings while ``draw()`` runs."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        draw()
    return [str(w.message) for w in caught if "missing from font" in str(w.message)]


def draw_all(name: str) -> None:
    """A heat map titled with ``name`` and a report histogram titled with it."""
    render_heatmap(np.zeros((32, 32, 3), np.uint8), np.random.default_rng(0).random((32, 32)), 0.0, 1.0,
                   Caption(name, "000.png", 1.0, 1, 3, "not flagged"))
    report.histogram_png(np.arange(20.0), None, f"{name}: 20 scored")


@pytest.fixture
def loud(monkeypatch):
    """matplotlib's own warnings let through, so a missing glyph shows."""
    monkeypatch.setattr(heatmaps, "quiet_missing_glyphs", contextlib.nullcontext)
    monkeypatch.setattr(report, "quiet_missing_glyphs", contextlib.nullcontext)


def test_latin_names_keep_the_default_font_and_others_get_one_that_has_their_glyphs(loud):
    assert fonts.font_family("weave / 000.png") == list(rcParams["font.family"])
    assert not has_glyphs("DejaVu Sans", SCRIPT_A)
    default, *fallbacks = fonts.font_family(SCRIPT_A)
    assert [default] == list(rcParams["font.family"]) and fallbacks
    assert has_glyphs(fallbacks[0], SCRIPT_A.split()[1]) and "Last Resort" not in fallbacks[0]
    assert glyph_warnings(lambda: draw_all(SCRIPT_A)) == []


def test_a_cjk_group_name_renders_without_missing_glyphs(loud):
    if not fonts.font_family(CJK)[1:]:
        pytest.skip("no installed font has CJK glyphs (Debian: fonts-noto-cjk)")
    assert glyph_warnings(lambda: draw_all(CJK)) == []


def test_without_a_font_for_the_name_it_draws_anyway_and_warns_once_naming_the_package(monkeypatch, caplog):
    monkeypatch.setattr(fonts, "_candidates", lambda: ())  # as on a machine with matplotlib's fonts only
    monkeypatch.setattr(fonts, "_WARNED", [])
    fonts._fallbacks.cache_clear()
    try:
        with caplog.at_level(logging.WARNING, logger=fonts.__name__):
            assert glyph_warnings(lambda: [draw_all(CJK), draw_all("第4ライン")]) == []  # no flood
    finally:
        fonts._fallbacks.cache_clear()
    lines = [r.getMessage() for r in caplog.records if r.name == fonts.__name__]
    assert len(lines) == 1 and "fonts-noto-cjk" in lines[0] and "U+7B2C" in lines[0]
