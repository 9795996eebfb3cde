"""The plotted panes: loss per phase with its evaluation points, and concept similarity with its 0.9 line."""

from __future__ import annotations

from textual_plotext import PlotextPlot

from navi_tui.run_view import RunView

PHASE_COLORS = {"policy": "cyan", "planner": "magenta", "sft": "green", "da": "orange"}


def _thin(xs: list[float], ys: list[float], width: int) -> tuple[list[float], list[float]]:
    # a terminal column shows one point anyway; plotting thousands costs the trainer's cpu for nothing
    step = max(1, len(xs) // max(width * 2, 1))
    return (xs[::step], ys[::step]) if step > 1 else (xs, ys)


class LossPlot(PlotextPlot):
    """Training loss on one axis, phase after phase; dotted lines mark evaluation points."""

    def show(self, view: RunView) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("loss")
        plt.xlabel("step (policy, planner, talker in turn)")
        width = max(self.size.width, 20)
        any_points = False
        for phase, xs, ys, marks in view.loss_series():
            txs, tys = _thin(xs, ys, width)
            plt.plot(txs, tys, label=phase, color=PHASE_COLORS.get(phase, "white"), marker="braille")
            for x in marks[-12:]:
                plt.vline(x, "gray")
            any_points = True
        if not any_points:
            plt.title("loss: no points yet")
        self.refresh()


class ConceptPlot(PlotextPlot):
    """Mean pairwise cosine of the talker's concept vectors; above 0.9 is collapse (M-029)."""

    LIMIT = 0.9

    def show(self, view: RunView) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(f"concept similarity (gate < {self.LIMIT})")
        if view.concept_sim:
            xs = [s for s, _ in view.concept_sim]
            ys = [v for _, v in view.concept_sim]
            plt.plot(xs, ys, color="green", marker="braille")
            plt.hline(self.LIMIT, "red")
            plt.ylim(min(min(ys), 0.0), 1.0)
        else:
            plt.title("concept similarity: measured during the talker's training")
        self.refresh()
