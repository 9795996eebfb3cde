"""The braille chart: where its dots land, what it keeps when it thins, and that a redraw is cached."""

from __future__ import annotations

from navi_tui.widgets.chart import ChartData, Series, draw, thin


def text_rows(rows):
    return ["".join(text for text, _ in row) for row in rows]


def plot_cells(rows, label_w):
    """The plot area's characters, rows 1..-2, past the y labels and the axis."""
    return [r[label_w + 1:] for r in text_rows(rows)[1:-1]]


def test_every_row_is_the_widget_width():
    data = ChartData(title="loss", series=[Series("policy", "cyan", [0, 10, 20], [3.0, 1.0, 0.5])], xlabel="step")
    rows = draw(data, 60, 12)
    assert len(rows) == 12
    assert all(len(r) == 60 for r in text_rows(rows))


def test_a_falling_line_starts_top_left_and_ends_bottom_right():
    data = ChartData(series=[Series("sft", "green", [0, 100], [2.0, 0.0])], ylim=(0.0, 2.0))
    rows = draw(data, 40, 10)
    label_w = text_rows(rows)[1].index("┤")
    cells = plot_cells(rows, label_w)
    first, last = cells[0], cells[-1]
    assert first[0] != " " and first[-1] == " "  # the top row holds the start, not the end
    assert last[-1] != " " and last[0] == " "
    # the colour of the dots is the series' colour
    assert any(color == "green" for row in rows[1:-1] for text, color in row if text.strip())


def test_a_threshold_line_sits_on_its_row_and_under_the_data():
    # concept similarity: the 0.9 line near the top of a 0..1 axis, the data far below it
    data = ChartData(series=[Series("cos", "green", [0, 10], [0.1, 0.1])], hlines=[(0.9, "red")], ylim=(0.0, 1.0))
    rows = draw(data, 40, 12)
    red_rows = [i for i, row in enumerate(rows[1:-1], 1) if any(color == "red" for _, color in row)]
    green_rows = [i for i, row in enumerate(rows[1:-1], 1) if any(color == "green" for _, color in row)]
    assert len(red_rows) == 1 and len(green_rows) == 1
    assert red_rows[0] < green_rows[0]  # higher value, higher on the screen
    assert red_rows[0] in (1, 2)


def test_eval_marks_are_dotted_columns_and_never_cover_a_line():
    data = ChartData(series=[Series("policy", "cyan", [0, 100], [1.0, 1.0])], vlines=[50], ylim=(0.0, 2.0))
    rows = draw(data, 40, 10)
    label_w = text_rows(rows)[1].index("┤")
    cells = plot_cells(rows, label_w)
    marked = [i for i, row in enumerate(cells) if row[len(row) // 2] != " "]
    assert len(marked) >= len(cells) - 1  # a column of dots from top to bottom
    # where the flat line crosses the mark, the cell is the line's colour
    line_row = next(i for i, row in enumerate(rows[1:-1], 1) if any(color == "cyan" for _, color in row))
    colors = [color for text, color in rows[line_row] for _ in text]
    assert colors[label_w + 1 + len(cells[0]) // 2] == "cyan"


def test_no_points_keeps_the_title_and_blank_plot():
    rows = draw(ChartData(title="loss: no points yet", xlabel="step"), 50, 8)
    t = text_rows(rows)
    assert t[0].startswith("loss: no points yet")
    assert all(not r.strip() for r in t[1:-1])


def test_legend_names_each_series_in_its_colour():
    data = ChartData(title="loss", series=[Series("policy", "cyan", [0, 1], [1, 0]),
                                           Series("planner", "magenta", [1, 2], [1, 0])])
    legend = draw(data, 60, 8)[0]
    assert ("  ▬ policy", "cyan") in legend and ("  ▬ planner", "magenta") in legend


def test_thin_keeps_the_last_point_and_the_bound():
    xs = list(range(1001))
    txs, tys = thin(xs, xs, 100)
    assert len(txs) <= 102 and txs[0] == 0 and txs[-1] == 1000 and tys == txs
    assert thin([1, 2], [3, 4], 100) == ([1, 2], [3, 4])


def test_a_non_negative_series_keeps_its_axis_at_zero():
    data = ChartData(series=[Series("sft", "green", [0, 10, 20], [0.0, 0.5, 4.0])])
    rows = text_rows(draw(data, 40, 10))
    bottom_label = rows[-2].split("┤")[0].strip()
    assert float(bottom_label) == 0.0
