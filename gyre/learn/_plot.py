"""A run's learning curves as a small self-contained SVG: one line per metric over the
epochs (or boosting rounds), each scaled to its own range, no data rows embedded."""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

_W, _H, _PAD = 480, 240, 36
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


def curves_svg(history: Sequence[Mapping[str, float]], title: str) -> str | None:
    """The per-epoch metrics of `history` (one dict per epoch); None when it is empty."""
    keys = [k for k in dict.fromkeys(k for point in history for k in point) if k != "epoch"]
    if len(history) < 2 or not keys:
        return None
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
        f'font-family="sans-serif" font-size="11">',
        f'<text x="{_PAD}" y="16">{html.escape(title)}</text>',
        f'<line x1="{_PAD}" y1="{_H - _PAD}" x2="{_W - 8}" y2="{_H - _PAD}" stroke="#999"/>',
        f'<text x="{_W // 2}" y="{_H - 8}">epoch (1 to {len(history)})</text>',
    ]
    for index, key in enumerate(keys[: len(_COLOURS)]):
        values = [p.get(key) for p in history]
        finite = [v for v in values if v is not None and math.isfinite(v)]
        if not finite:
            continue
        low, high = min(finite), max(finite)
        span = high - low or 1.0
        points = " ".join(
            f"{_PAD + i * (_W - _PAD - 8) / (len(values) - 1):.1f},"
            f"{_H - _PAD - (v - low) / span * (_H - 2 * _PAD - 10):.1f}"
            for i, v in enumerate(values)
            if v is not None and math.isfinite(v)
        )
        colour = _COLOURS[index]
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" points="{points}"/>'
        )
        parts.append(
            f'<text x="{_W - 150}" y="{30 + 14 * index}" fill="{colour}">'
            f"{html.escape(key)} {low:.4g} to {high:.4g}</text>"
        )
    parts.append("</svg>")
    return "\n".join(parts)
