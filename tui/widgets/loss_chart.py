"""Training and evaluation loss over steps, drawn with plotext; redrawn only when asked."""

from __future__ import annotations

from textual_plotext import PlotextPlot


class LossChart(PlotextPlot):
    """Holds the points; ``add`` takes a batch, ``replot`` draws once (call it from a timer)."""

    DEFAULT_CSS = """
    LossChart { height: 1fr; min-height: 8; }
    """

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train_points: list[tuple[float, float]] = []
        self.eval_points: list[tuple[float, float]] = []
        self._dirty = True

    def add(self, train: list[tuple[float, float]] = (), eval: list[tuple[float, float]] = ()) -> None:  # noqa: A002
        if train:
            self.train_points = self.train_points + list(train)
            self._dirty = True
        if eval:
            self.eval_points = self.eval_points + list(eval)
            self._dirty = True

    def clear_points(self) -> None:
        self.train_points, self.eval_points = [], []
        self._dirty = True

    def on_mount(self) -> None:
        self.replot(force=True)

    def replot(self, force: bool = False) -> None:
        if not (self._dirty or force):
            return
        self._dirty = False
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title("loss")
        plt.xlabel("step")
        if self.train_points:
            xs, ys = zip(*self.train_points)
            plt.plot(list(xs), list(ys), label="train", marker="braille")
        if self.eval_points:
            xs, ys = zip(*self.eval_points)
            plt.plot(list(xs), list(ys), label="eval", marker="braille")
        self.refresh()
