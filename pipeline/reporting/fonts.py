"""Fonts for the text matplotlib draws from data: group and file names in any script.

Factories name lines in their language, and matplotlib's default font (DejaVu Sans) has no CJK
glyphs: "第3ライン" drew as empty boxes, with one warning per glyph and image. ``font_family`` gives
a text the default family plus, where the default lacks some of its characters, installed fonts
that have them (found by their glyph coverage, cached), which matplotlib falls back to glyph by
glyph. When no installed font has them the text is drawn anyway and one warning names the package
that brings one (``FONT_PACKAGE``; ``infra/Dockerfile`` installs it); ``quiet_missing_glyphs`` keeps
matplotlib's per-glyph warnings from repeating it.
"""

from __future__ import annotations

import functools
import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)

FONT_PACKAGE = "fonts-noto-cjk"  # Debian/Ubuntu: Noto Sans CJK, the glyphs of Chinese, Japanese and Korean
# matplotlib's bundled font of placeholder boxes for every code point: covers everything, shows nothing
_PLACEHOLDER_FONTS = ("Last Resort",)
_WARNED: list[int] = []  # the code point of the one warning given, once given


@functools.cache
def _charmap(path: str) -> frozenset[int]:
    """The code points a font file has glyphs for (empty when it cannot be read)."""
    from matplotlib.ft2font import FT2Font

    try:
        return frozenset(FT2Font(path).get_charmap())
    except (OSError, RuntimeError, ValueError):
        return frozenset()


@functools.cache
def _candidates() -> tuple[tuple[str, str], ...]:
    """(family, path) of every installed font that may draw text, sans-serif families first; system
    fonts installed after matplotlib cached its font list are added to it."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    known = {f.fname for f in manager.ttflist}
    for path in font_manager.findSystemFonts():
        if path not in known:
            try:
                manager.addfont(path)
            except (OSError, RuntimeError, ValueError):  # not a font matplotlib can read: not a candidate
                continue
    fonts = {(f.name, f.fname) for f in manager.ttflist if not f.name.startswith(_PLACEHOLDER_FONTS)}
    return tuple(sorted(fonts, key=lambda font: ("Sans" not in font[0], font)))


def _default_family() -> list[str]:
    from matplotlib import rcParams

    return list(rcParams["font.family"])


@functools.cache
def _default_charmap() -> frozenset[int]:
    from matplotlib import font_manager

    return _charmap(font_manager.findfont(font_manager.FontProperties()))


@functools.lru_cache(maxsize=4096)
def _fallbacks(missing: frozenset[int]) -> tuple[tuple[str, ...], frozenset[int]]:
    """Installed families that together have the most of ``missing``, and the code points none has."""
    families: list[str] = []
    for family, path in _candidates():
        covered = missing & _charmap(path)
        if covered and family not in families:
            families.append(family)
            missing -= covered
        if not missing:
            break
    return tuple(families), missing


def font_family(text: str) -> list[str]:
    """The matplotlib font family list for ``text``: the default, then fallbacks for the characters
    it lacks. Warns once per process when no installed font has some of them."""
    needed = frozenset(ord(c) for c in text if c.isprintable() and not c.isspace())
    missing = needed - _default_charmap()
    if not missing:
        return _default_family()
    families, uncovered = _fallbacks(missing)
    if uncovered:
        _warn_no_font(next(ord(c) for c in text if ord(c) in uncovered))
    return [*_default_family(), *families]


def _warn_no_font(example: int) -> None:
    """The one warning of this process about glyphs no installed font has."""
    if _WARNED:
        return
    _WARNED.append(example)
    log.warning("no installed font has glyphs for some names (e.g. %r, U+%04X): they draw as empty boxes in heat "
                "maps and plots; install one, e.g. the Debian package %s", chr(example), example, FONT_PACKAGE)


@contextmanager
def quiet_missing_glyphs() -> Iterator[None]:
    """matplotlib's "Glyph ... missing from font(s)" warnings, one per glyph and figure, silenced:
    ``font_family`` already said it once, with the package that fixes it."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Glyph \d+ .* missing from font", category=UserWarning)
        yield
