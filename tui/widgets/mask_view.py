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
from rich.control import strip_control_codes
from rich.style import Style
from rich.text import Span, Text
from textual.geometry import Size
from textual.markup import escape
from textual.reactive import reactive
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip

TRAINED_OPEN, TRAINED_CLOSE, ID_SEP, CUT = "⟦", "⟧", "│", "✂ "
VISIBLE_WHITESPACE = str.maketrans({" ": "·", "\t": "→", "\r": "␍", "\n": "↵"})
_WORD_START = re.compile(r"(?<=\s)\S")


def _message(problem: dict[str, Any]) -> str:
    return str(problem.get("message") or problem)


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

    tokens: reactive[list[dict[str, Any]]] = reactive(list, always_update=True)
    token_view: reactive[bool] = reactive(False)

    def __init__(self, *, name: str | None = None, id: str | None = None, classes: str | None = None) -> None:
        super().__init__(name=name, id=id, classes=classes)
        self.problems: list[dict[str, Any]] = []  # the preview's problems (only their places are used here)
        self.hint = ""  # shown under the view until a jump says where it landed
        self.cursor: Spot | None = None  # where the last jump landed (shown reversed)
        self._lines: list[Text] = []
        self._places: list[tuple[int, int, int]] = []
        self._token_line: list[int] = []
        self._cursor_ranges: dict[int, list[tuple[int, int]]] = {}
        self._layout_width = -1
        self._strips: dict[int, Strip] = {}

    # ------------------------------------------------------------------ state
    def show(self, tokens: list[dict[str, Any]], problems: list[dict[str, Any]] | None = None) -> None:
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
        # A new virtual size sends a Resize too: lay out again only when the width changed.
        if self.scrollable_content_region.width != self._layout_width:
            self._relayout()
            self._scroll_to_cursor()

    def notify_style_update(self) -> None:
        super().notify_style_update()
        self._relayout()

    @property
    def trained_count(self) -> int:
        return sum(1 for t in self.tokens if t.get("trained"))

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
            trained = token is not None and bool(token.get("trained"))
            if trained and start is None:
                start = i
            elif not trained and start is not None:
                spots.append(Spot(start, i, ""))
                start = None
        n = len(spots)
        return [Spot(s.start, s.end, f"trained span {k + 1}/{n}") for k, s in enumerate(spots)]

    def problem_spots(self) -> list[Spot]:
        """The places of the problems the preview located, in token order."""
        n = len(self.tokens)
        found: list[tuple[int, int, str]] = []
        truncated = next((i for i, t in enumerate(self.tokens) if t.get("truncated")), None)
        for problem in self.problems:
            token = problem.get("token")
            span = problem.get("span")
            if isinstance(token, int) and not isinstance(token, bool):
                found.append((token, token + 1, _message(problem)))
            elif (isinstance(span, (list, tuple)) and len(span) == 2
                  and all(isinstance(v, int) and not isinstance(v, bool) for v in span)):
                found.append((span[0], max(span[1], span[0] + 1), _message(problem)))
            elif truncated is not None and str(problem.get("code", "")).startswith("truncated"):
                found.append((truncated, n, _message(problem)))
        for i, token in enumerate(self.tokens):
            note = token.get("problem")
            if note:
                found.append((i, i + 1, str(note)))
        if truncated is not None and not any(start == truncated for start, _, _ in found):
            found.append((truncated, n, f"cut at max_length: {n - truncated} tokens"))
        merged: dict[tuple[int, int], list[str]] = {}  # one stop per place, saying all that is there
        for start, end, label in found:
            if 0 <= start < n and label not in merged.setdefault((start, min(end, n)), []):
                merged[(start, min(end, n))].append(label)
        places = sorted(merged)
        return [Spot(s, e, f"problem {k + 1}/{len(places)}: {'; '.join(merged[(s, e)])}")
                for k, (s, e) in enumerate(places)]

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
        self._show_cursor()
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
        if not self.is_mounted:  # no styles to read yet: plain text
            return {n: Style() for n in names}
        return {n: self.get_component_rich_style(f"mask-view--{n}") for n in names}

    def _logical_lines(self) -> list[tuple[Text, list[tuple[int, int]], list[int]]]:
        """Lines cut at newlines: (text, (start, end) offsets of every token starting on it, offsets
        where it may wrap)."""
        styles = self._styles()
        id_styles: dict[Style, Style] = {}
        token_view = self.token_view
        out: list[tuple[Text, list[tuple[int, int]], list[int]]] = []
        parts: list[str] = []
        spans: list[Span] = []
        places: list[tuple[int, int]] = []
        breaks = [0]
        at = 0  # length of the line so far

        def add(piece: str, style: Style) -> None:
            nonlocal at
            if piece:
                parts.append(piece)
                spans.append(Span(at, at + len(piece), style))
                at += len(piece)

        def newline() -> None:
            nonlocal parts, spans, places, breaks, at
            out.append((Text("".join(parts), spans=spans, end=""), places, breaks))
            parts, spans, places, breaks, at = [], [], [], [0], 0

        previous_cut = False
        for token in self.tokens:
            raw = str(token.get("text", ""))
            trained = bool(token.get("trained"))
            cut = bool(token.get("truncated"))
            style = styles["truncated"] if cut else styles["trained" if trained else "masked"]
            if cut and not previous_cut:
                if token_view and at:
                    add(" ", Style())
                breaks.append(at)
                add(CUT, styles["truncated"])
            previous_cut = cut
            if token_view:
                if at and not (parts and parts[-1] == CUT):
                    add(" ", Style())
                    breaks.append(at)
                begin = at
                if trained:
                    add(TRAINED_OPEN, style)
                add(strip_control_codes(raw.translate(VISIBLE_WHITESPACE)) or "∅", style)
                if style not in id_styles:
                    id_styles[style] = style + styles["id"]
                add(f"{ID_SEP}{token.get('id', '?')}", id_styles[style])
                if trained:
                    add(TRAINED_CLOSE, style)
                places.append((begin, at))
                if "\n" in raw:
                    newline()
            else:
                pieces = strip_control_codes(raw.expandtabs(4)).split("\n")
                places.append((at, at + len(pieces[0]) + (len(pieces) > 1)))
                for k, piece in enumerate(pieces):
                    add(piece, style)
                    if k < len(pieces) - 1:
                        add("↵", style)
                        newline()
        if parts or places or not out:
            newline()
        if not token_view:  # running text wraps between words
            for text, _, line_breaks in out:
                line_breaks.extend(m.start() for m in _WORD_START.finditer(text.plain))
        return out

    def _relayout(self) -> None:
        self._layout_width = self.scrollable_content_region.width if self.is_mounted else 0
        width = max(8, self._layout_width) if self.is_mounted else 80
        lines: list[Text] = []
        places: list[tuple[int, int, int]] = []  # per token: line, first and last+1 column offsets
        if not self.tokens:
            lines = [Text("(nothing to show)", style="dim")]
        else:
            for text, starts, breaks in self._logical_lines():
                cuts = _wrap(text.plain, sorted(set(breaks)), width)
                base = len(lines)
                pieces = list(text.divide(cuts[1:])) if len(cuts) > 1 else [text]
                for piece in pieces[:-1]:  # the space a line wrapped at is not part of either line
                    piece.rstrip()
                lines.extend(pieces)
                for start, end in starts:
                    k = bisect_right(cuts, start) - 1
                    stop = cuts[k + 1] if k + 1 < len(cuts) else len(text)
                    places.append((base + k, start - cuts[k], min(end, stop) - cuts[k]))
        self._lines = lines
        self._places = places
        self._token_line = [line for line, _, _ in places]
        self.virtual_size = Size(width, len(lines))
        self.border_title = "tokens: text│id, ⟦trained⟧ masked" if self.token_view else "text"
        self._show_cursor()

    def _show_cursor(self) -> None:
        """Mark the cursor's tokens (drawn at render time: a jump never lays the lines out again)."""
        ranges: dict[int, list[tuple[int, int]]] = {}
        if self.cursor is not None:
            for line, start, end in self._places[self.cursor.start:self.cursor.end]:
                ranges.setdefault(line, []).append((start, end))
        self._cursor_ranges = ranges
        self._strips.clear()
        self.border_subtitle = f"[b]{escape(self.cursor.label)}[/b]" if self.cursor is not None else escape(self.hint)
        self.refresh()

    def as_text(self) -> Text:
        """Everything, as laid out, in one Text (tests, and a copy of what the view shows)."""
        return Text("\n").join(self._lines)

    # Mouse selection copies what the view shows (as the Static it replaced did).
    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        return selection.extract(self.as_text().plain), "\n"

    def selection_updated(self, selection: Selection | None) -> None:
        self._strips.clear()
        self.refresh()

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
            if index in self._cursor_ranges:
                cursor = self.get_component_rich_style("mask-view--cursor")
                for start, end in self._cursor_ranges[index]:
                    text.stylize(cursor, start, end)
            selection = self.text_selection
            selected = selection.get_span(index) if selection is not None else None
            if selected is not None:
                start, end = selected
                text.stylize(self.screen.get_component_rich_style("screen--selection"), start,
                             len(text) if end == -1 else end)
            strip = Strip(text.render(self.app.console), text.cell_len)
            if selection is None:
                self._strips[index] = strip
        return strip.crop_extend(scroll_x, scroll_x + width, rich_style).apply_offsets(scroll_x, index)


def _wrap(plain: str, breaks: list[int], width: int) -> list[int]:
    """Start offsets of the lines ``plain`` wraps to at ``width`` cells, cutting only at ``breaks``
    (a piece wider than the line is cut where it must). Trailing spaces may hang past the edge."""
    if cell_len(plain.rstrip()) <= width:
        return [0]
    cuts = [0]
    used = 0  # cells on the current line
    for start, end in zip(breaks, [*breaks[1:], len(plain)]):
        piece = plain[start:end]
        if used + cell_len(piece.rstrip()) <= width:
            used += cell_len(piece)
            continue
        if start > cuts[-1]:
            cuts.append(start)
            used = 0
        while used + cell_len(plain[cuts[-1]:end].rstrip()) > width:  # wider than a line: fold it
            cut = cuts[-1] + 1
            while cut < end and cell_len(plain[cuts[-1]:cut + 1]) <= width:
                cut += 1
            cuts.append(cut)
        used = cell_len(plain[cuts[-1]:end])
    return cuts
