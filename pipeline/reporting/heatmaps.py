"""Heat-map images a reviewer can read without asking: what, where it ranks, on which scale.

Each PNG shows the photo beside the anomaly map blended over it, a title strip (group, file, score,
rank in the group, flag and policy), a colour bar labelled with the group's score range (every
map of a group shares it, so maps compare by eye and a false positive does not look like a hit),
and, when a ground-truth mask is known, its outline on both panels. Drawn with matplotlib's
object API on the Agg canvas (no pyplot state, safe in Ray workers and threads). Small inputs are
drawn at least ``MIN_PANEL`` pixels wide so the text stays readable. Names in any script draw with
an installed font that has their glyphs (``fonts``).
"""

from __future__ import annotations

import io
from dataclasses import dataclass

import numpy as np

from .fonts import font_family, quiet_missing_glyphs

MIN_PANEL = 320  # pixels per panel at least
COLORMAP = "inferno"  # perceptually ordered, readable in greyscale print
OUTLINE = "#39ff14"  # ground truth: a green no colour map value takes


@dataclass(frozen=True)
class Caption:
    """What the title strip says about one image."""

    group: str
    name: str
    score: float
    rank: int  # 1 = most anomalous
    group_size: int
    verdict: str  # e.g. "FLAGGED (robust_z>3.5)", or the ground truth in an evaluation
    alert: bool = False  # the verdict is drawn in red

    @classmethod
    def flagged(cls, group: str, name: str, score: float, rank: int, group_size: int, flagged: bool,
                policy: str) -> Caption:
        """The nightly job's caption: the flag decision and the policy that made it."""
        verdict = f"FLAGGED ({policy})" if flagged else f"not flagged ({policy})"
        return cls(group, name, score, rank, group_size, verdict, flagged)

    def lines(self) -> tuple[str, str]:
        return (f"{self.group} / {self.name}",
                f"score {self.score:.4g}   rank {self.rank} of {self.group_size}   {self.verdict}")


class HeatmapRenderer:
    """Draws the heat maps of one group: one figure, colour bar and layout for all of them, of which
    each image only replaces the pixels, the outline and the text (4-6x faster than a new figure)."""

    def __init__(self, height: int, width: int, vmin: float, vmax: float, alpha: float = 0.5) -> None:
        from matplotlib.figure import Figure

        self.shape = (height, width)
        scale = max(1.0, MIN_PANEL / width)
        self.dpi = 100
        panel_w, panel_h = width * scale / self.dpi, height * scale / self.dpi
        title_h, bar_w = 0.55, 0.9
        total_w, total_h = 2 * panel_w + bar_w, panel_h + title_h
        self.figure = fig = Figure(figsize=(total_w, total_h), dpi=self.dpi)
        top = panel_h / total_h
        self.panels = (fig.add_axes((0, 0, panel_w / total_w, top)),
                       fig.add_axes((panel_w / total_w, 0, panel_w / total_w, top)))
        bar = fig.add_axes((2 * panel_w / total_w + 0.12 * bar_w / total_w, 0.08 * top, 0.18 * bar_w / total_w,
                            0.84 * top))
        blank = np.zeros((height, width, 3), np.uint8)
        self.photos = [ax.imshow(blank, interpolation="nearest") for ax in self.panels]
        self.heat = self.panels[1].imshow(np.zeros((height, width)), cmap=COLORMAP, vmin=vmin,
                                          vmax=vmax if vmax > vmin else vmin + 1.0, alpha=alpha,
                                          interpolation="bilinear")
        for ax in self.panels:
            ax.set_axis_off()
        colorbar = fig.colorbar(self.heat, cax=bar)
        colorbar.solids.set_alpha(1.0)
        colorbar.set_label("anomaly score (group scale)", fontsize=7)
        bar.tick_params(labelsize=7)
        self.titles = (fig.text(0.01, 1 - 0.22 * title_h / total_h, "", fontsize=9, va="center", ha="left",
                                fontweight="bold"),
                       fig.text(0.01, 1 - 0.68 * title_h / total_h, "", fontsize=8, va="center", ha="left"))
        self.outlines: list = []

    def render(self, image: np.ndarray, anomaly_map: np.ndarray, caption: Caption,
               mask: np.ndarray | None = None) -> bytes:
        """PNG bytes of one image (H, W, 3) and its map (H, W) on the group's scale."""
        if image.shape[:2] != self.shape or anomaly_map.shape != self.shape:
            raise ValueError(f"image {image.shape[:2]} and map {anomaly_map.shape} sizes differ from {self.shape}")
        if mask is not None and mask.shape != self.shape:
            raise ValueError(f"mask {mask.shape} and map {anomaly_map.shape} sizes differ")
        for photo in self.photos:
            photo.set_data(image)
        self.heat.set_data(anomaly_map)
        for outline in self.outlines:
            outline.remove()
        self.outlines = [ax.contour(mask.astype(float), levels=[0.5], colors=OUTLINE, linewidths=1.5)
                         for ax in self.panels] if mask is not None and mask.any() else []
        for title, line in zip(self.titles, caption.lines()):
            title.set_text(line)
            title.set_fontfamily(font_family(line))
        self.titles[1].set_color("#b00000" if caption.alert else "black")
        buffer = io.BytesIO()
        with quiet_missing_glyphs():
            self.figure.savefig(buffer, format="png", dpi=self.dpi, pil_kwargs={"compress_level": 3})
        return buffer.getvalue()


def render_heatmap(image: np.ndarray, anomaly_map: np.ndarray, vmin: float, vmax: float, caption: Caption,
                   mask: np.ndarray | None = None, alpha: float = 0.5) -> bytes:
    """One heat map on its own (a group draws many with one ``HeatmapRenderer``)."""
    return HeatmapRenderer(*anomaly_map.shape, vmin, vmax, alpha).render(image, anomaly_map, caption, mask)
