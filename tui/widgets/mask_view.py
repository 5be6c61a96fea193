"""A conversation as tokens: trained ones highlighted, masked ones dimmed.

Two views of the same tokens (``token_view``):

- text: the row as running text, newlines shown as ``↵``;
- tokens: one cell per token, ``text│id``, with whitespace made visible (space ``·``, tab ``→``,
  newline ``↵``) and each trained cell inside ``⟦…⟧`` — the mask reads without colour too
  (``NO_COLOR``, a monochrome terminal, a copy-paste of the screen).

The widget scrolls by itself (it lays its lines out for its width, so it knows on which line
every token is) and can jump to the next or previous trained span (an assistant turn) or
problem. A problem has a place when the preview gives one: a problem dict with ``token`` (an
index) or ``span`` (``[start, end)`` token indices), or a token with a ``problem`` field; the
first token cut by ``max_length`` (``truncated``) is one too. Fields it does not know are ignored.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from typing import Any, NamedTuple

from rich.cells import cell_len
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.markup import escape
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.strip import Strip

TRAINED_OPEN, TRAINED_CLOSE, ID_SEP, CUT = "⟦", "⟧", "│", "✂ "
VISIBLE_WHITESPACE = str.maketrans({" ": "·", "\t": "→", "\r": "␍", "\n": "↵"})
_WORD_START = re.compile(r"(?<=\s)\S")


def _field(token: Any, name: str, default: Any = None) -> Any:
    return token.get(name, default) if isinstance(token, dict) else getattr(token, name, default)


class Spot(NamedTuple):
    """A place to jump to: tokens ``start`` to ``end`` (exclusive), and what it is."""

    start: int
    end: int
    label: str


class MaskView(ScrollView, can_focus=True):
    """Shows ``tokens`` (each with ``text``, ``trained`` and ``id``) as running text or as cells."""

    DEFAULT_CSS = """
    MaskView { height: auto; padding: 0 1; scrollbar-gutter: stable; scrollbar-size-vertical: 1; }
    MaskView > .mask-view--trained { color: $success; text-style: bold underline; }
    MaskView > .mask-view--masked { color: $text-muted; }
    MaskView > .mask-view--id { text-style: dim; }
    MaskView > .mask-view--truncated { color: $text-disabled; text-style: strike; }
    MaskView > .mask-view--cursor { text-style: reverse; }
    """
    COMPONENT_CLASSES = {"mask-view--trained", "mask-view--masked", "mask-view--id", "mask-view--truncated",
                         "mask-view--cursor"}

    tokens: reactive[list] = reactive(list, always_update=True)
    token_view: reactive[bool] = reactive(False)

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.problems: list = []  # the preview's problems (only their places are used here)
        self.hint = ""  # shown under the view until a jump says where it landed
        self.cursor: Spot | None = None  # where the last jump landed (shown reversed)
        self._lines: list[Text] = []
        self._token_line: list[int] = []
        self._width = 0
        self._strips: dict[int, Strip] = {}

    # ------------------------------------------------------------------ state
    def show(self, tokens: list, problems: list | None = None) -> None:
        """New tokens (another row, another setting): the jump position starts over."""
        self.problems = list(problems or [])
        self.cursor = None
        self.tokens = list(tokens)

    def watch_tokens(self) -> None:
        self._relayout()

    def watch_token_view(self) -> None:
        self._relayout()
        self._scroll_to_cursor()

    def on_resize(self) -> None:
        self._relayout()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._relayout()

    @property
    def trained_count(self) -> int:
        return sum(1 for t in self.tokens if _field(t, "trained"))

    @property
    def lines(self) -> list[Text]:
        """The lines as laid out for the current width."""
        return list(self._lines)

    def line_of(self, index: int) -> int:
        """The line that token ``index`` starts on."""
        return self._token_line[index] if 0 <= index < len(self._token_line) else 0

    # ------------------------------------------------------------------ jumps
    def turn_spots(self) -> list[Spot]:
        """Every run of trained tokens (an assistant turn, or the completion)."""
        spots, start = [], None
        for i, token in enumerate([*self.tokens, None]):
            trained = token is not None and bool(_field(token, "trained"))
            if trained and start is None:
                start = i
            elif not trained and start is not None:
                spots.append(Spot(start, i, ""))
                start = None
        n = len(spots)
        return [Spot(s.start, s.end, f"trained span {k + 1}/{n}") for k, s in enumerate(spots)]

    def problem_spots(self) -> list[Spot]:
        """The places of the problems the preview located, in token order."""
        from sftwizard.tui.steps.base import problem_text

        n = len(self.tokens)
        found: list[tuple[int, int, str]] = []
        truncated = next((i for i, t in enumerate(self.tokens) if _field(t, "truncated")), None)
        for problem in self.problems:
            token = _field(problem, "token")
            span = _field(problem, "span")
            if isinstance(token, int) and not isinstance(token, bool):
                found.append((token, token + 1, problem_text(problem)))
            elif (isinstance(span, (list, tuple)) and len(span) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in span)):
                found.append((span[0], max(span[1], span[0] + 1), problem_text(problem)))
            elif truncated is not None and str(_field(problem, "code", "")).startswith("truncated"):
                found.append((truncated, n, problem_text(problem)))
        for i, token in enumerate(self.tokens):
            note = _field(token, "problem")
            if note:
                found.append((i, i + 1, str(note)))
        if truncated is not None and not any(start == truncated for start, _, _ in found):
            found.append((truncated, n, f"cut at max_length: {n - truncated} tokens"))
        found = sorted({(s, e, label) for s, e, label in found if 0 <= s < n})
        return [Spot(s, min(e, n), f"problem {k + 1}/{len(found)}: {label}") for k, (s, e, label) in enumerate(found)]

    def jump(self, kind: str, direction: int) -> Spot | None:
        """Move to the next (``direction`` 1) or previous (-1) turn or problem, wrapping around."""
        spots = self.turn_spots() if kind == "turn" else self.problem_spots()
        if not spots:
            return None
        here = self.cursor.start if self.cursor is not None else None
        if direction > 0:
            ahead = [s for s in spots if here is None or s.start > here]
            spot = ahead[0] if ahead else spots[0]
        else:
            behind = [s for s in spots if here is None or s.start < here]
            spot = behind[-1] if behind else spots[-1]
        self.cursor = spot
        self._relayout()
        self._scroll_to_cursor()
        return spot

    def _scroll_to_cursor(self) -> None:
        if self.cursor is None or not self._token_line:
            return
        self.scroll_to(y=max(0, self.line_of(self.cursor.start) - 1), animate=False, immediate=True)
        if self.parent is not None:
            self.scroll_visible(animate=False, immediate=True)

    # ------------------------------------------------------------------ layout
    def _styles(self) -> dict[str, Style]:
        names = ("trained", "masked", "id", "truncated", "cursor")
        try:
            return {n: self.get_component_rich_style(f"mask-view--{n}") for n in names}
        except Exception:  # not mounted yet: plain text
            return {n: Style() for n in names}

    def _logical_lines(self) -> list[tuple[Text, list[int], list[int]]]:
        """Lines cut at newlines: (text, start offset of every token on it, offsets where it may wrap)."""
        styles = self._styles()
        cursor = self.cursor
        out: list[tuple[Text, list[int], list[int]]] = []
        line, starts, breaks = Text(), [], [0]

        def newline() -> None:
            nonlocal line, starts, breaks
            out.append((line, starts, breaks))
            line, starts, breaks = Text(), [], [0]

        for i, token in enumerate(self.tokens):
            raw = str(_field(token, "text", ""))
            trained = bool(_field(token, "trained"))
            truncated = bool(_field(token, "truncated"))
            style = styles["truncated"] if truncated else styles["trained" if trained else "masked"]
            if cursor is not None and cursor.start <= i < cursor.end:
                style = style + styles["cursor"]
            if truncated and (i == 0 or not _field(self.tokens[i - 1], "truncated")):
                if self.token_view and line.plain:
                    line.append(" ")
                breaks.append(len(line))
                line.append(CUT, style=styles["truncated"])
            if self.token_view:
                if line.plain and not line.plain.endswith(CUT):
                    line.append(" ")
                    breaks.append(len(line))
                starts.append(len(line))
                shown = raw.translate(VISIBLE_WHITESPACE) or "∅"
                if trained:
                    line.append(TRAINED_OPEN, style=style)
                line.append(shown, style=style)
                line.append(f"{ID_SEP}{_field(token, 'id', '?')}", style=style + styles["id"])
                if trained:
                    line.append(TRAINED_CLOSE, style=style)
                if "\n" in raw:
                    newline()
            else:
                starts.append(len(line))
                pieces = raw.split("\n")
                for k, piece in enumerate(pieces):
                    line.append(piece, style=style)
                    if k < len(pieces) - 1:
                        line.append("↵", style=style)
                        newline()
        if line.plain or starts or not out:
            newline()
        if not self.token_view:  # running text wraps between words
            for text, _, breaks in out:
                breaks.extend(m.start() for m in _WORD_START.finditer(text.plain))
        return out

    def _relayout(self) -> None:
        width = max(8, self.scrollable_content_region.width) if self.is_mounted else 80
        self._width = width
        lines: list[Text] = []
        token_line: list[int] = []
        if not self.tokens:
            lines = [Text("(nothing to show)", style="dim")]
        else:
            for text, starts, breaks in self._logical_lines():
                cuts = _wrap(text.plain, sorted(set(breaks)), width)
                base = len(lines)
                lines.extend(text.divide(cuts[1:]) if len(cuts) > 1 else [text])
                token_line.extend(base + bisect_right(cuts, s) - 1 for s in starts)
        self._lines = lines
        self._token_line = token_line
        self._strips.clear()
        self.virtual_size = Size(width, len(lines))
        self.border_title = ("tokens: text│id, ⟦trained⟧ masked" if self.token_view else "text")
        self.border_subtitle = f"[b]{escape(self.cursor.label)}[/b]" if self.cursor is not None else escape(self.hint)
        self.refresh()

    def as_text(self) -> Text:
        """Everything, as laid out, in one Text (tests, and a copy of what the view shows)."""
        return Text("\n").join(self._lines)

    def render_line(self, y: int) -> Strip:
        scroll_x, scroll_y = self.scroll_offset
        index = scroll_y + y
        width = self.scrollable_content_region.width
        rich_style = self.rich_style
        if index >= len(self._lines):
            return Strip.blank(width, rich_style)
        strip = self._strips.get(index)
        if strip is None:
            text = self._lines[index].copy()
            text.stylize_before(rich_style)
            strip = Strip(text.render(self.app.console), text.cell_len)
            self._strips[index] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, rich_style).apply_offsets(scroll_x, index)


def _wrap(plain: str, breaks: list[int], width: int) -> list[int]:
    """Start offsets of the lines ``plain`` wraps to at ``width`` cells, cutting only at ``breaks``
    (a piece wider than the line is cut where it must). Trailing spaces may hang past the edge."""
    cuts = [0]
    ends = [*breaks[1:], len(plain)]
    for start, end in zip(breaks, ends):
        if cell_len(plain[cuts[-1]:end].rstrip()) <= width:
            continue
        if start > cuts[-1]:
            cuts.append(start)
        while cell_len(plain[cuts[-1]:end].rstrip()) > width:
            cut = cuts[-1] + 1
            while cut < end and cell_len(plain[cuts[-1]:cut + 1]) <= width:
                cut += 1
            cuts.append(cut)
    return cuts
