"""The plotted panes: loss per phase with its evaluation points, and concept similarity with its 0.9 line."""

from __future__ import annotations

from navi_tui.run_view import RunView
from navi_tui.widgets.chart import BrailleChart, ChartData, Series

PHASE_COLORS = {"policy": "cyan", "planner": "magenta", "sft": "green", "da": "dark_orange"}
MARKS_SHOWN = 12  # the newest evaluation points; older ones would paint the plot grey


class LossPlot(BrailleChart):
    """Training loss on one axis, phase after phase; dotted lines mark evaluation points."""

    def show(self, view: RunView) -> None:
        series, marks = [], []
        for phase, xs, ys, eval_xs in view.loss_series():
            series.append(Series(phase, PHASE_COLORS.get(phase, "white"), xs, ys))
            marks += eval_xs[-MARKS_SHOWN:]
        self.plot(ChartData(title="loss" if series else "loss: no points yet", series=series, vlines=marks,
                            xlabel="step (policy, planner, talker in turn)"))


class ConceptPlot(BrailleChart):
    """Mean pairwise cosine of the talker's concept vectors; above 0.9 is collapse (M-029)."""

    LIMIT = 0.9

    def show(self, view: RunView) -> None:
        if not view.concept_sim:
            self.plot(ChartData(title="concept similarity: measured during the talker's training"))
            return
        xs = [s for s, _ in view.concept_sim]
        ys = [v for _, v in view.concept_sim]
        self.plot(ChartData(title=f"concept similarity (gate < {self.LIMIT})",
                            series=[Series("mean cosine", "green", xs, ys)], hlines=[(self.LIMIT, "red")],
                            ylim=(min(min(ys), 0.0), 1.0), xlabel="talker step"))
