"""A line chart drawn in braille dots, rendered once per data change and served line by line.

Why not textual-plotext: plotext builds its canvas as ANSI text that rich then parses back,
13.6 ms a redraw of the loss pane at 140x45, twice a second (benchmarks/console_render.py).
That time holds the GIL the training thread needs. Here a redraw is a grid of ints turned into strips,
and an unchanged chart costs nothing: the strips are cached until the data or the size moves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from rich.segment import Segment
from rich.style import Style
from textual.strip import Strip
from textual.widget import Widget

# braille dot bits by (column, row) inside a cell of 2 x 4 dots
_DOT = ((0x01, 0x02, 0x04, 0x40), (0x08, 0x10, 0x20, 0x80))
_BRAILLE = 0x2800


@dataclass
class Series:
    label: str
    color: str
    xs: list[float]
    ys: list[float]


@dataclass
class ChartData:
    title: str = ""
    series: list[Series] = field(default_factory=list)
    vlines: list[float] = field(default_factory=list)  # dotted, e.g. evaluation points
    hlines: list[tuple[float, str]] = field(default_factory=list)  # (y, color), e.g. a gate's threshold
    ylim: tuple[float, float] | None = None
    xlabel: str = ""


def nice_number(v: float) -> str:
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"


def thin(xs: list[float], ys: list[float], limit: int) -> tuple[list[float], list[float]]:
    """At most about `limit` points, always keeping the last: a dot column shows one point anyway."""
    stride = max(1, math.ceil(len(xs) / max(limit, 1)))
    if stride == 1:
        return xs, ys
    keep = list(range(0, len(xs), stride))
    if keep[-1] != len(xs) - 1:
        keep.append(len(xs) - 1)
    return [xs[i] for i in keep], [ys[i] for i in keep]


def draw(data: ChartData, width: int, height: int) -> list[list[tuple[str, str | None]]]:
    """The chart as rows of (text, color) runs, width x height cells. Pure: tested without a screen.

    Row 0 holds the title and legend, the last row the x labels; the rest is the plot with y
    labels on its left.
    """
    if width < 12 or height < 4:
        return [[(" " * max(width, 0), None)] for _ in range(max(height, 0))]
    points = [(x, y) for s in data.series for x, y in zip(s.xs, s.ys) if math.isfinite(y)]
    rows: list[list[tuple[str, str | None]]] = [_legend(data, width)]
    plot_h = height - 2
    if not points:
        rows += [[(" " * width, None)] for _ in range(plot_h)]
        rows.append([(data.xlabel[:width].ljust(width), "grey50")])
        return rows

    x0, x1 = min(p[0] for p in points), max(p[0] for p in points)
    if data.ylim:
        y0, y1 = data.ylim
    else:
        ys = [p[1] for p in points] + [y for y, _ in data.hlines]
        y0, y1 = min(ys), max(ys)
        pad = (y1 - y0) * 0.05 or abs(y1) * 0.05 or 1.0
        # data that never goes below zero (a loss) keeps its axis at zero or above
        y0, y1 = (y0 - pad if y0 < 0 else max(0.0, y0 - pad)), y1 + pad
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1

    labels = [nice_number(y1 - (y1 - y0) * r / max(plot_h - 1, 1)) for r in range(plot_h)]
    label_w = max(len(s) for s in labels) + 1
    plot_w = width - label_w - 1
    dots_w, dots_h = plot_w * 2, plot_h * 4
    cells = [[0] * plot_w for _ in range(plot_h)]
    colors: list[list[str | None]] = [[None] * plot_w for _ in range(plot_h)]

    def dx(x: float) -> int:
        return min(dots_w - 1, max(0, round((x - x0) / (x1 - x0) * (dots_w - 1))))

    def dy(y: float) -> int:
        # dot row 0 is the top
        return min(dots_h - 1, max(0, round((y1 - y) / (y1 - y0) * (dots_h - 1))))

    def dot(cx: int, cy: int, color: str, under: bool = False) -> None:
        r, c = cy // 4, cx // 2
        if under and cells[r][c]:
            return  # a marker never covers a line
        cells[r][c] |= _DOT[cx % 2][cy % 4]
        colors[r][c] = color

    # markers first, lines over them
    for x in data.vlines:
        if x0 <= x <= x1:
            cx = dx(x)
            for cy in range(0, dots_h, 2):
                dot(cx, cy, "grey37", under=True)
    for y, color in data.hlines:
        if y0 <= y <= y1:
            cy = dy(y)
            for cx in range(0, dots_w, 2):
                dot(cx, cy, color, under=True)
    for s in data.series:
        xs, ys = thin(s.xs, s.ys, dots_w * 2)
        prev = None
        for x, y in zip(xs, ys):
            if not math.isfinite(y):
                prev = None
                continue
            cur = (dx(x), dy(min(max(y, y0), y1)))
            if prev is None:
                dot(*cur, s.color)
            else:
                n = max(abs(cur[0] - prev[0]), abs(cur[1] - prev[1]), 1)
                for i in range(1, n + 1):
                    dot(prev[0] + round((cur[0] - prev[0]) * i / n), prev[1] + round((cur[1] - prev[1]) * i / n),
                        s.color)
            prev = cur

    for r in range(plot_h):
        # labels on the top, middle and bottom rows only: a label per row crowds a short pane
        show = r in (0, plot_h - 1, (plot_h - 1) // 2)
        row: list[tuple[str, str | None]] = [((labels[r] if show else "").rjust(label_w - 1) + " ┤", "grey50")]
        run_text, run_color = "", None
        for c in range(plot_w):
            ch = chr(_BRAILLE + cells[r][c]) if cells[r][c] else " "
            color = colors[r][c] if cells[r][c] else None
            if color != run_color and run_text:
                row.append((run_text, run_color))
                run_text = ""
            run_text, run_color = run_text + ch, color
        row.append((run_text, run_color))
        rows.append(row)

    left, right = nice_number(x0), nice_number(x1)
    mid = data.xlabel[: max(plot_w - len(left) - len(right) - 2, 0)]
    axis = " " * (label_w + 1) + left + mid.center(plot_w - len(left) - len(right)) + right
    rows.append([(axis[:width].ljust(width), "grey50")])
    return rows


def _legend(data: ChartData, width: int) -> list[tuple[str, str | None]]:
    row: list[tuple[str, str | None]] = [(data.title, None)]
    used = len(data.title)
    for s in data.series:
        item = f"  ▬ {s.label}"
        if used + len(item) > width:
            break
        row.append((item, s.color))
        used += len(item)
    row.append((" " * (width - used), None))
    return row


class BrailleChart(Widget):
    """Shows a ChartData; `plot` replaces it and repaints, nothing else does."""

    DEFAULT_CSS = "BrailleChart { height: 1fr; }"

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.data = ChartData()
        self._strips: list[Strip] | None = None
        self._built_for: tuple[int, int] | None = None

    def plot(self, data: ChartData) -> None:
        self.data = data
        self._strips = None
        self.refresh()

    def on_resize(self) -> None:
        self._strips = None

    def render_line(self, y: int) -> Strip:
        size = (self.size.width, self.size.height)
        if self._strips is None or self._built_for != size:
            base = self.rich_style
            styles: dict[str | None, Style] = {}

            def style(color: str | None) -> Style:
                if color not in styles:
                    styles[color] = base + Style(color=color) if color else base
                return styles[color]

            self._strips = [Strip([Segment(text, style(color)) for text, color in row], size[0])
                            for row in draw(self.data, *size)]
            self._built_for = size
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.size.width, self.rich_style)
