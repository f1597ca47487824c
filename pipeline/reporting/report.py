"""Self-contained HTML reports: one file with its figures inside, readable from S3, a share or a laptop.

A report is a title, a list of facts (provenance, counts), an optional warning and sections of
blocks: tables, figures (PNG drawn with matplotlib) and galleries of heat-map thumbnails that link to
the full images. Images are embedded as data URIs, so the page needs nothing else; jinja2 escapes
every text that comes from data (file names, error messages).
"""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass, field

import jinja2
import numpy as np

from .fonts import font_family, quiet_missing_glyphs

_TEMPLATE = jinja2.Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True).from_string("""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 1.5em 2em; color: #1b1b1b; max-width: 1400px; }
h1 { font-size: 1.5em; margin-bottom: .2em; } h2 { margin-top: 1.6em; border-bottom: 1px solid #ccc; }
h3 { margin-bottom: .3em; }
.facts { display: grid; grid-template-columns: max-content auto; gap: .15em 1.2em; font-size: .92em; }
.facts dt { color: #555; } .facts dd { margin: 0; font-family: ui-monospace, monospace; word-break: break-all; }
.warning { background: #fff3cd; border: 1px solid #e0b100; padding: .6em 1em; margin: 1em 0; }
table { border-collapse: collapse; font-size: .9em; margin: .4em 0 1em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.num { text-align: right; font-variant-numeric: tabular-nums; }
.gallery { display: flex; flex-wrap: wrap; gap: .8em; }
.gallery figure { margin: 0; width: 360px; font-size: .8em; }
.gallery img { width: 360px; border: 1px solid #ccc; } .gallery figcaption { overflow-wrap: anywhere; }
.note { color: #555; font-size: .88em; }
</style></head><body>
<h1>{{ title }}</h1>
{% if warning %}<div class="warning">{{ warning }}</div>{% endif %}
<dl class="facts">{% for key, value in facts %}<dt>{{ key }}</dt><dd>{{ value }}</dd>{% endfor %}</dl>
{% for section in sections %}
<h2 id="{{ section.anchor }}">{{ section.heading }}</h2>
{% for block in section.blocks %}
{% if block.kind == "table" %}
{% if block.title %}<h3>{{ block.title }}</h3>{% endif %}
<table><tr>{% for c in block.columns %}<th>{{ c }}</th>{% endfor %}</tr>
{% for row in block.rows %}<tr>{% for v in row %}<td{% if v is number %} class="num"{% endif %}>{{ v }}</td>{% endfor %}</tr>
{% endfor %}</table>
{% if block.note %}<p class="note">{{ block.note }}</p>{% endif %}
{% elif block.kind == "figure" %}
{% if block.title %}<h3>{{ block.title }}</h3>{% endif %}
<img alt="{{ block.title }}" src="data:image/png;base64,{{ block.data }}">
{% elif block.kind == "gallery" %}
<h3>{{ block.title }}</h3>
{% if block.items %}<div class="gallery">{% for item in block.items %}
<figure>{% if item.link %}<a href="{{ item.link }}">{% endif %}<img alt="{{ item.caption }}" src="data:image/jpeg;base64,{{ item.data }}">{% if item.link %}</a>{% endif %}
<figcaption>{{ item.caption }}</figcaption></figure>{% endfor %}</div>
{% endif %}
{% if block.note %}<p class="note">{{ block.note }}</p>{% endif %}
{% else %}<p>{{ block.text }}</p>{% endif %}
{% endfor %}
{% endfor %}
</body></html>
""")


@dataclass
class Table:
    columns: list[str]
    rows: list[list]
    title: str = ""
    note: str = ""
    kind: str = "table"


@dataclass
class Figure:
    png: bytes
    title: str = ""
    kind: str = "figure"

    @property
    def data(self) -> str:
        return base64.b64encode(self.png).decode()


@dataclass
class GalleryItem:
    thumbnail: bytes  # JPEG
    caption: str
    link: str | None = None

    @property
    def data(self) -> str:
        return base64.b64encode(self.thumbnail).decode()


@dataclass
class Gallery:
    title: str
    items: list[GalleryItem]
    note: str = ""
    kind: str = "gallery"


@dataclass
class Text:
    text: str
    kind: str = "text"


@dataclass
class Section:
    heading: str
    blocks: list = field(default_factory=list)

    @property
    def anchor(self) -> str:
        return "".join(c if c.isalnum() else "-" for c in self.heading.lower())


def render_report(title: str, facts: list[tuple[str, str]], sections: list[Section], warning: str | None = None) -> str:
    """The whole HTML page."""
    return _TEMPLATE.render(title=title, facts=facts, sections=sections, warning=warning)


def percent(value: float | None) -> str:
    """A stored metric (a fraction 0-1) as the percent people read; undefined ones as n/a."""
    return "n/a" if value is None or value != value else f"{100 * value:.1f}"


def metrics_table(first: str, per_name: dict[str, dict[str, float]], mean: dict[str, float],
                  columns: Sequence[str], note: str) -> Table:
    """The metrics of each group or category and their mean, in percent, as both reports show them."""
    rows = [[name, *(percent(m.get(c)) for c in columns)] for name, m in [*per_name.items(), ("mean", mean)]]
    return Table([first, *columns], rows, note=note)


def provenance_facts(code: dict[str, str | None], versions: dict[str, str]) -> list[tuple[str, str]]:
    """Which code and libraries made a report (``reporting.provenance``), as two lines of facts."""
    return [("code", ", ".join(f"{k} {v}" for k, v in code.items() if v) or "unknown"),
            ("versions", ", ".join(f"{k} {v}" for k, v in versions.items()))]


def histogram_png(scores: np.ndarray, cut: float | None, title: str, labels: np.ndarray | None = None) -> bytes:
    """A score histogram with the flag line at ``cut`` (scores at or above it are flagged); with
    labels, normal and anomalous images are stacked in two colours."""
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(6.4, 2.6), dpi=100)
    ax = fig.add_axes((0.08, 0.2, 0.9, 0.68))
    bins = np.histogram_bin_edges(scores, bins=min(60, max(10, len(scores) // 5)))
    if labels is not None and set(np.unique(labels)) <= {0, 1}:
        ax.hist([scores[labels == 0], scores[labels == 1]], bins=bins, stacked=True, color=["#4c72b0", "#dd5555"],
                label=["labelled normal", "labelled anomalous"])
        ax.legend(fontsize=7, loc="upper right")
    else:
        ax.hist(scores, bins=bins, color="#4c72b0")
    if cut is not None:
        ax.axvline(cut, color="#b00000", linestyle="--", linewidth=1.2)
        ax.text(cut, ax.get_ylim()[1] * 0.95, " flagged", color="#b00000", fontsize=7, va="top")
    ax.set_title(title, fontsize=9, fontfamily=font_family(title))  # a group name, in any script
    ax.set_xlabel("score", fontsize=8)
    ax.set_ylabel("images", fontsize=8)
    ax.tick_params(labelsize=7)
    buffer = io.BytesIO()
    with quiet_missing_glyphs():
        fig.savefig(buffer, format="png")
    return buffer.getvalue()


def thumbnail(png: bytes, width: int = 360) -> bytes:
    """A heat-map PNG as a small JPEG for a gallery."""
    from PIL import Image

    with Image.open(io.BytesIO(png)) as image:
        image = image.convert("RGB")
        image.thumbnail((width, width * 4))
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=80)
    return buffer.getvalue()


@dataclass
class TrendNight:
    """One night of a group's trend plot."""

    night: str  # run date
    flag_rate: float | None
    shifts: dict[str, float | None]  # statistic -> value (None: not computed that night)
    alert: bool


def trend_png(nights: Sequence[TrendNight], bands: dict[str, float | None], flag_rate_band: Sequence[float],
              title: str) -> bytes:
    """A group's last nights, oldest first, the last one tonight (shaded): flag rate above, the shift
    statistics below with their alert lines (``bands``), alerting nights marked in red."""
    from matplotlib.figure import Figure as MplFigure

    fig = MplFigure(figsize=(6.4, 3.2), dpi=100)
    top, bottom = fig.subplots(2, 1, sharex=True)
    x = np.arange(len(nights))
    alerts = [i for i, n in enumerate(nights) if n.alert]

    def series(values: list[float | None]) -> np.ndarray:
        return np.array([np.nan if v is None else v for v in values], dtype=float)

    rate = series([n.flag_rate for n in nights])
    top.plot(x, rate, "o-", color="#4c72b0", markersize=4)
    for limit in flag_rate_band:
        top.axhline(limit, color="#999999", linestyle=":", linewidth=0.8)
    top.set_ylabel("flag rate", fontsize=8)
    for (name, band), colour in zip(bands.items(), ("#2a9d8f", "#8a5cb8", "#e09f3e")):
        values = series([n.shifts.get(name) for n in nights])
        label = name.replace("_", " ")
        bottom.plot(x, values, "o-", color=colour, markersize=4, label=label)
        if band is not None:
            bottom.axhline(band, color=colour, linestyle="--", linewidth=0.8, label=f"{label} alert line")
    bottom.set_ylabel("shift", fontsize=8)
    bottom.legend(fontsize=6, loc="upper left")
    for ax in (top, bottom):
        ax.axvspan(len(nights) - 1.35, len(nights) - 0.65, color="#ffe08a", alpha=0.6, linewidth=0)  # tonight
        ax.set_xlim(-0.5, len(nights) - 0.5)
        ax.tick_params(labelsize=7)
        for i in alerts:
            ax.axvline(i, color="#c00000", linewidth=1.0, alpha=0.7)
    if alerts:
        top.plot(x[alerts], rate[alerts], "o", color="#c00000", markersize=9, fillstyle="none")
        for i in alerts:
            top.text(i, top.get_ylim()[1], " ALERT", color="#c00000", fontsize=7, va="top")
    bottom.set_xticks(x, [n.night for n in nights], fontsize=7, rotation=20)
    top.set_title(title, fontsize=9, fontfamily=font_family(title))
    fig.subplots_adjust(left=0.1, right=0.98, top=0.9, bottom=0.2, hspace=0.15)
    buffer = io.BytesIO()
    with quiet_missing_glyphs():
        fig.savefig(buffer, format="png")
    return buffer.getvalue()
