"""Train and eval loss of several runs on one chart, by step or by trained tokens (plotext)."""

from __future__ import annotations

from textual_plotext import PlotextPlot

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class CompareChart(PlotextPlot):
    """``show(runs, by_tokens)`` draws each run's train (line) and eval (points) curves; runs are
    labelled A, B, C… in the order given (the table beside says which is which)."""

    DEFAULT_CSS = """
    CompareChart { height: 1fr; min-height: 8; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.runs: list = []
        self.by_tokens = False

    def show(self, runs: list, by_tokens: bool = False) -> None:
        self.runs, self.by_tokens = list(runs), by_tokens
        self.replot()

    def on_mount(self) -> None:
        self.replot()

    def replot(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("loss — " + ("by trained tokens" if self.by_tokens else "by step"))
        plt.xlabel("trained tokens" if self.by_tokens else "step")
        for letter, run in zip(LETTERS, self.runs):
            for name, points, marker in (("train", run.train, "braille"), ("eval", run.eval, "dot")):
                xy = [((p[1] if self.by_tokens else p[0]), p[2]) for p in points]
                xy = [(x, y) for x, y in xy if x is not None]
                if xy:
                    xs, ys = zip(*xy)
                    plt.plot(list(xs), list(ys), label=f"{letter} {name}", marker=marker)
        self.refresh()
