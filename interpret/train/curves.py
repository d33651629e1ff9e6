"""Tiny standalone SVG line plots (training curves, comparisons): no JS, no network, any browser."""

from __future__ import annotations

import html
import math

COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf")


def line_plot_html(
    series: dict[str, tuple[list[float], list[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    width: int = 720,
    height: int = 400,
) -> str:
    """A complete HTML page with one SVG line chart; NaNs are gaps."""
    pts = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys, strict=True)
           if y is not None and math.isfinite(y)]  # fmt: skip
    if not pts:
        pts = [(0.0, 0.0), (1.0, 1.0)]
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1, y1 = (x1 if x1 > x0 else x0 + 1), (y1 if y1 > y0 else y0 + 1)
    L, R, T, B = 70, 160, 40, 50  # margins: the legend sits on the right

    def sx(x: float) -> float:
        return L + (x - x0) / (x1 - x0) * (width - L - R)

    def sy(y: float) -> float:
        return height - B - (y - y0) / (y1 - y0) * (height - T - B)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           'font-family="sans-serif" font-size="12">']  # fmt: skip
    out.append(f'<rect x="{L}" y="{T}" width="{width - L - R}" height="{height - T - B}" '
               'fill="none" stroke="#999"/>')  # fmt: skip
    for k in range(5):
        yv = y0 + (y1 - y0) * k / 4
        xv = x0 + (x1 - x0) * k / 4
        out.append(f'<text x="{L - 6}" y="{sy(yv) + 4:.1f}" text-anchor="end">{yv:.3g}</text>')
        out.append(
            f'<text x="{sx(xv):.1f}" y="{height - B + 16}" text-anchor="middle">{xv:.4g}</text>'
        )
    out.append(f'<text x="{width / 2 - R / 2}" y="{height - 10}" text-anchor="middle">'
               f"{html.escape(xlabel)}</text>")  # fmt: skip
    out.append(f'<text x="14" y="{height / 2}" transform="rotate(-90 14 {height / 2})" '
               f'text-anchor="middle">{html.escape(ylabel)}</text>')  # fmt: skip
    for i, (name, (xs, ys)) in enumerate(series.items()):
        color = COLORS[i % len(COLORS)]
        segs, cur = [], []
        for x, y in zip(xs, ys, strict=True):
            if y is None or not math.isfinite(y):
                segs, cur = ([*segs, cur] if cur else segs), []
            else:
                cur.append(f"{sx(x):.1f},{sy(y):.1f}")
        segs = [*segs, cur] if cur else segs
        for seg in segs:
            out.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" '
                       f'points="{" ".join(seg)}"/>')  # fmt: skip
        ly = T + 16 * i + 10
        out.append(f'<line x1="{width - R + 10}" y1="{ly}" x2="{width - R + 30}" y2="{ly}" '
                   f'stroke="{color}" stroke-width="2"/>')  # fmt: skip
        out.append(f'<text x="{width - R + 36}" y="{ly + 4}">{html.escape(name)}</text>')
    out.append("</svg>")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"</head><body><h3>{html.escape(title)}</h3>{''.join(out)}</body></html>")  # fmt: skip
