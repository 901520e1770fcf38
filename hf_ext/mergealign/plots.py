"""The similarity report's chart, drawn with Pillow.

The report is written after every merge, and importing matplotlib would cost more than the whole rest of
MergeAlign's overhead on top of mergekit (Pillow is already loaded by the time a merge ends), so this one chart is
drawn directly: per-tensor cosine(tau_D, tau_A) as bars, and the norms of the two vectors on a log scale.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path


__all__ = ["similarity_chart"]

WIDTH, HEIGHT = 900, 600
LEFT, RIGHT, TOP, BOTTOM, GAP = 95, 20, 42, 52, 34
PURPLE, BLUE, ORANGE = (128, 90, 170), (31, 119, 180), (255, 127, 14)
GRID, AXIS, TEXT = (225, 225, 225), (60, 60, 60), (20, 20, 20)


def _nice_step(span: float, target: int) -> float:
    raw = span / max(target, 1)
    magnitude = 10 ** math.floor(math.log10(raw)) if raw > 0 else 1.0
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def similarity_chart(
    path: str | os.PathLike,
    cosines: Sequence[float],
    domain_norms: Sequence[float],
    alignment_norms: Sequence[float],
    title: str,
) -> Path:
    """Write the two-panel chart as a PNG at `path` (atomically) and return the path."""
    from PIL import Image, ImageDraw, ImageFont

    from ..serialization import atomic_path

    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font, small = ImageFont.load_default(size=15), ImageFont.load_default(size=12)
    count = max(len(cosines), 1)
    panel_height = (HEIGHT - TOP - BOTTOM - GAP) // 2
    x0, x1 = LEFT, WIDTH - RIGHT
    top_panel = (x0, TOP, x1, TOP + panel_height)
    bottom_panel = (x0, TOP + panel_height + GAP, x1, HEIGHT - BOTTOM)

    def x_of(index: float) -> float:
        return x0 + (index + 0.5) * (x1 - x0) / count

    draw.text((WIDTH / 2, 12), title, fill=TEXT, font=font, anchor="mt")

    # Top: cosine per tensor, symmetric axis around 0.
    finite = [c for c in cosines if not math.isnan(c)]
    limit = max([abs(c) for c in finite] + [0.05])
    step = _nice_step(limit, 2)
    limit = step * math.ceil(limit / step)

    def y_cos(value: float) -> float:
        return top_panel[1] + (limit - value) / (2 * limit) * (top_panel[3] - top_panel[1])

    for tick in (-limit, -limit / 2, 0.0, limit / 2, limit):
        y = y_cos(tick)
        draw.line((x0, y, x1, y), fill=AXIS if tick == 0 else GRID, width=1)
        draw.text((x0 - 6, y), f"{tick:.3g}", fill=TEXT, font=small, anchor="rm")
    bar = 0.4 * (x1 - x0) / count
    for index, value in enumerate(cosines):
        if not math.isnan(value):
            ys = sorted((y_cos(0.0), y_cos(value)))
            draw.rectangle((x_of(index) - bar, ys[0], x_of(index) + bar, ys[1]), fill=PURPLE)
    draw.rectangle(top_panel, outline=AXIS)
    draw.text((14, (top_panel[1] + top_panel[3]) / 2), "cosine", fill=TEXT, font=font, anchor="lm")

    # Bottom: log10 of the norms.
    values = [v for v in list(domain_norms) + list(alignment_norms) if v > 0]
    low = math.floor(math.log10(min(values))) if values else -1
    high = math.ceil(math.log10(max(values))) if values else 0
    high = max(high, low + 1)

    def y_norm(value: float) -> float:
        exponent = math.log10(value) if value > 0 else low
        return bottom_panel[3] - (exponent - low) / (high - low) * (bottom_panel[3] - bottom_panel[1])

    decade_step = max(1, math.ceil((high - low) / 6))
    for exponent in range(low, high + 1, decade_step):
        y = y_norm(10.0**exponent)
        draw.line((x0, y, x1, y), fill=GRID, width=1)
        draw.text((x0 - 6, y), f"1e{exponent}", fill=TEXT, font=small, anchor="rm")
    for series, color in ((domain_norms, BLUE), (alignment_norms, ORANGE)):
        points = [(x_of(i), y_norm(v)) for i, v in enumerate(series)]
        if len(points) > 1:
            draw.line(points, fill=color, width=2)
        for x, y in points:
            draw.ellipse((x - 2.5, y - 2.5, x + 2.5, y + 2.5), fill=color)
    draw.rectangle(bottom_panel, outline=AXIS)
    draw.text((14, (bottom_panel[1] + bottom_panel[3]) / 2), "norm", fill=TEXT, font=font, anchor="lm")
    legend_x, legend_y = x1 - 230, bottom_panel[1] + 10
    draw.rectangle((legend_x - 8, legend_y - 6, x1 - 8, legend_y + 40), fill="white", outline=GRID)
    for row, (label, color) in enumerate((("||tau_D|| (domain)", BLUE), ("||tau_A|| (alignment)", ORANGE))):
        y = legend_y + 8 + 18 * row
        draw.line((legend_x, y, legend_x + 24, y), fill=color, width=3)
        draw.text((legend_x + 32, y), label, fill=TEXT, font=small, anchor="lm")

    # Shared x axis: tensor index in model order.
    tick_step = int(_nice_step(count, 10)) or 1
    for index in range(0, count, tick_step):
        x = x_of(index)
        for panel in (top_panel, bottom_panel):
            draw.line((x, panel[3], x, panel[3] + 4), fill=AXIS)
        draw.text((x, bottom_panel[3] + 7), str(index), fill=TEXT, font=small, anchor="mt")
    draw.text((WIDTH / 2, HEIGHT - 14), "tensor (model order)", fill=TEXT, font=font, anchor="mb")

    path = Path(path)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")
    return path
