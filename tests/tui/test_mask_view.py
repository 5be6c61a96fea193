"""The Template step's token view, driven with the keyboard on the demo (real tokenizer, real masks)."""

from __future__ import annotations

import pytest

from sftwizard.core.config import apply_overrides
from sftwizard.tui.widgets.mask_view import ID_SEP, TRAINED_CLOSE, TRAINED_OPEN, VISIBLE_WHITESPACE, MaskView
from tests.tui.helpers import screen_text, settle


def cell(token: dict) -> str:
    """How the token view writes one token."""
    body = f"{token['text'].translate(VISIBLE_WHITESPACE)}{ID_SEP}{token['id']}"
    return f"{TRAINED_OPEN}{body}{TRAINED_CLOSE}" if token["trained"] else body


def trained_spans(tokens: list[dict]) -> list[tuple[int, int]]:
    spans, start = [], None
    for i, token in enumerate([*tokens, {"trained": False}]):
        if token["trained"] and start is None:
            start = i
        elif not token["trained"] and start is not None:
            spans.append((start, i))
            start = None
    return spans


def mask_region_text(app) -> str:
    """The screen's lines inside the mask view's border."""
    view = app.screen.query_one(MaskView)
    region = view.region
    lines = screen_text(app).splitlines()
    return "\n".join(line[region.x:region.right] for line in lines[region.y:region.bottom])


async def test_the_token_view_shows_every_token_with_its_id_and_a_mark_on_trained_ones(make_app):
    app = make_app(start_step="template")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        view = app.screen.query_one(MaskView)
        tokens = app.wizard.context.preview.tokens
        assert not view.token_view and ID_SEP not in view.as_text().plain
        app.screen.query_one("#f-training-max-length #control").focus()  # a focused Input lets it through
        await pilot.press("f2")
        await pilot.pause()
        assert view.token_view
        text = view.as_text().plain
        # Every token, in order, as a cell: its text (whitespace visible) and its id; nothing else.
        cells = text.split()
        assert cells == [cell(t) for t in tokens]
        assert text.count(TRAINED_OPEN) == text.count(TRAINED_CLOSE) == view.trained_count > 0
        # On screen too, and in plain text: the first lines of the row as cells.
        shown = mask_region_text(app)
        assert " ".join(cell(t) for t in tokens[:3]) in shown, shown
        # The end-of-turn token trains and the newline after it does not — readable without colour.
        first, end = trained_spans(tokens)[0]
        assert tokens[end - 1]["text"] == "<|im_end|>" and tokens[end]["text"] == "\n"
        assert f"{cell(tokens[end - 1])} {cell(tokens[end])}" in text
        assert cell(tokens[end]).startswith("↵") and TRAINED_OPEN not in cell(tokens[end])
        # The token view stays on for the next row; F2 (or ctrl+y) brings the text back.
        await pilot.press("ctrl+down")
        await settle(pilot)
        assert view.token_view and view.as_text().plain.split() == [
            cell(t) for t in app.wizard.context.preview.tokens]
        await pilot.press("ctrl+y")
        await pilot.pause()
        assert not view.token_view and "<|im_end|>↵" in view.as_text().plain


async def test_trained_tokens_keep_a_mark_on_a_terminal_without_colour(make_app, monkeypatch):
    """NO_COLOR: Textual turns every colour grey; the brackets and the underline remain."""
    monkeypatch.setenv("NO_COLOR", "1")
    app = make_app(start_step="template")
    async with app.run_test(size=(120, 40)) as pilot:
        assert app.no_color
        await settle(pilot)
        await pilot.press("f2")
        await pilot.pause()
        view = app.screen.query_one(MaskView)
        update = app.screen._compositor.render_update(full=True)
        region = view.content_region
        cells: list[list] = []  # every cell on screen: its (character, style) pairs
        for y, line in enumerate(update.strips):
            if not region.y <= y < region.bottom:
                continue
            chars = [(ch, seg.style) for strip in line for seg in strip for ch in seg.text][region.x:region.right]
            current: list = []
            for ch, style in [*chars, (" ", None)]:
                if ch == " ":
                    if current:
                        cells.append(current)
                    current = []
                else:
                    current.append((ch, style))
        trained = [c for c in cells if c[0][0] == TRAINED_OPEN]
        masked = [c for c in cells if c[0][0] != TRAINED_OPEN and any(ch == ID_SEP for ch, _ in c)]
        assert trained and masked
        for ch, style in [pair for c in cells for pair in c]:
            color = style.color if style is not None else None
            if color is not None and color.triplet is not None:
                r, g, b = color.triplet
                assert r == g == b, f"{ch!r} is coloured on a no-colour terminal"
        # Each trained cell is bracketed and underlined; a masked one is neither.
        assert all(c[-1][0] == TRAINED_CLOSE and all(style.underline for _, style in c) for c in trained)
        assert not any(style.underline for c in masked for _, style in c)
        assert TRAINED_OPEN in mask_region_text(app)


async def test_keys_jump_between_trained_spans_and_to_a_problem(make_app):
    app = make_app(start_step="template")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        view = app.screen.query_one(MaskView)
        await pilot.press("f2")
        await pilot.pause()
        spans = trained_spans(app.wizard.context.preview.tokens)
        assert len(spans) >= 2
        assert view.max_scroll_y > 0, "the demo row should not fit in 80x24 (the jump must scroll)"
        app.screen.query_one("#f-template-source #control").focus()  # so does a Select
        await pilot.press("shift+down")
        await pilot.pause()
        assert (view.cursor.start, view.cursor.end) == spans[0]
        app.screen.query_one("#f-training-max-length #control").focus()
        await pilot.press("shift+down")
        await pilot.pause()
        assert (view.cursor.start, view.cursor.end) == spans[1]
        # The span jumped to is on screen, and the border says which one it is.
        assert view.scroll_offset.y <= view.line_of(spans[1][0]) < view.scroll_offset.y + view.scrollable_content_region.height
        start, end = spans[1]
        assert cell(app.wizard.context.preview.tokens[end - 1]) in mask_region_text(app)
        assert f"trained span 2/{len(spans)}" in screen_text(app)
        await pilot.press("shift+up")
        await pilot.pause()
        assert (view.cursor.start, view.cursor.end) == spans[0]
        assert view.scroll_offset.y <= view.line_of(spans[0][0])
        # Tab reaches the view; then the arrows scroll it (the step's keys still work there).
        view.focus()
        await pilot.press("home")
        await pilot.pause()
        assert view.scroll_offset.y == 0
        await pilot.press("down")
        await pilot.pause()
        assert view.scroll_offset.y == 1
        await pilot.press("shift+down")
        await pilot.pause()
        assert (view.cursor.start, view.cursor.end) == spans[1]
        # No problem in this row: F3 says so. A max_length that cuts the row is one, at the cut.
        await pilot.press("f3")
        await pilot.pause()
        assert view.cursor.start == spans[1][0]
        assert any("no problem" in n.message for n in app._notifications)
        app.wizard.set_draft(apply_overrides(app.wizard.draft, ["training.max_length=40"]))
        await settle(pilot)
        tokens = app.wizard.context.preview.tokens
        cut = next(i for i, t in enumerate(tokens) if t.get("truncated"))
        assert view.cursor is None  # new tokens: the position starts over
        await pilot.press("f3")
        await pilot.pause()
        assert view.cursor.start == cut and "problem 1/1" in view.cursor.label
        assert "✂" in mask_region_text(app)


@pytest.mark.parametrize("width", [24, 80])
async def test_lines_fit_the_width_and_tokens_know_their_line(make_app, width):
    app = make_app(start_step="template")
    async with app.run_test(size=(width + 10, 30)) as pilot:
        await settle(pilot)
        await pilot.press("f2")
        await pilot.pause()
        view = app.screen.query_one(MaskView)
        from rich.cells import cell_len

        usable = view.scrollable_content_region.width
        assert all(cell_len(line.plain.rstrip()) <= usable for line in view.lines)
        for i, token in enumerate(app.wizard.context.preview.tokens):
            assert cell(token).split(ID_SEP)[0].lstrip(TRAINED_OPEN)[:1] in view.lines[view.line_of(i)].plain


async def test_the_palette_offers_the_token_view(make_app):
    app = make_app(start_step="dataset")
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await pilot.press("ctrl+p")
        await pilot.pause()
        await pilot.press(*list("token view"))
        await pilot.pause(0.3)
        await pilot.press("enter")
        await settle(pilot)
        assert app.wizard.current_step.step_id == "template"
        assert app.screen.query_one(MaskView).token_view


async def test_problems_with_a_place_are_jump_targets_in_token_order():
    """The places a preview may give: a problem's ``token`` or ``span``, a token's ``problem``."""
    from textual.app import App

    tokens = [{"id": i, "text": f"t{i}", "trained": 3 <= i < 6} for i in range(10)]
    tokens[8]["problem"] = "odd piece"
    problems = [
        {"code": "a", "message": "header trained", "severity": "warning", "span": [3, 5], "turn": 1},
        {"code": "b", "message": "no place", "severity": "info"},
        {"code": "c", "message": "this one", "severity": "warning", "token": 1},
        {"code": "d", "message": "and this", "severity": "info", "span": [1, 2]},
    ]

    class Host(App):
        def compose(self):
            yield MaskView()

    app = Host()
    async with app.run_test(size=(40, 10)) as pilot:
        view = app.query_one(MaskView)
        view.show(tokens, problems)
        await pilot.pause()
        assert [(s.start, s.end) for s in view.problem_spots()] == [(1, 2), (3, 5), (8, 9)]
        assert view.jump("problem", 1).label == "problem 1/3: this one; and this"
        assert view.jump("problem", 1).label == "problem 2/3: header trained"
        assert view.jump("problem", 1).label == "problem 3/3: odd piece"
        assert view.jump("problem", 1).start == 1  # wraps around
        assert view.jump("problem", -1).start == 8
        assert [(s.start, s.end) for s in view.turn_spots()] == [(3, 6)]
        view.show([])
        assert view.jump("turn", 1) is None and view.jump("problem", 1) is None


async def test_whitespace_and_empty_tokens_are_visible_in_the_token_view():
    from textual.app import App

    texts = [" a", "\t", "\r\n", "", "b c", "\x07"]
    tokens = [{"id": i, "text": t, "trained": i == 2} for i, t in enumerate(texts)]

    class Host(App):
        def compose(self):
            yield MaskView()

    app = Host()
    async with app.run_test(size=(40, 10)) as pilot:
        view = app.query_one(MaskView)
        view.show(tokens)
        view.token_view = True
        await pilot.pause()
        assert view.as_text().plain.splitlines() == ["·a│0 →│1 ⟦␍↵│2⟧", "∅│3 b·c│4 ∅│5"]
        assert [view.line_of(i) for i in range(len(tokens))] == [0, 0, 0, 1, 1, 1]
        view.token_view = False
        await pilot.pause()
        assert view.as_text().plain.splitlines() == [" a    ↵", "b c"]


async def test_a_mouse_selection_copies_the_cells_shown():
    from textual.app import App
    from textual.geometry import Offset
    from textual.selection import Selection

    tokens = [{"id": 10 + i, "text": t, "trained": i >= 2} for i, t in enumerate(["Hi", "\n", "yes", "\n"])]

    class Host(App):
        def compose(self):
            yield MaskView()

    app = Host()
    async with app.run_test(size=(40, 10)) as pilot:
        view = app.query_one(MaskView)
        view.show(tokens)
        view.token_view = True
        await pilot.pause()
        app.screen.selections = {view: Selection.from_offsets(Offset(0, 0), Offset(8, 1))}
        await pilot.pause()
        assert app.screen.get_selected_text() == "Hi│10 ↵│11\n⟦yes│12⟧"
        # The selection is drawn (in the screen's selection style) on the lines it covers.
        selected = app.screen.get_component_rich_style("screen--selection")
        first = view.render_line(0)
        assert any(seg.style and seg.style.bgcolor == selected.bgcolor for seg in first if seg.text.strip())


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_the_view_takes_the_height_the_terminal_leaves(make_app, size):
    """At 120x40 the row used to take 12 lines and leave the rest of the screen empty."""
    app = make_app(start_step="template")
    async with app.run_test(size=size) as pilot:
        await settle(pilot)
        view = app.screen.query_one(MaskView)
        step = app.wizard.current_step
        nav = app.screen.query_one("#nav")
        assert not step.query_one(".doctor-notes").display
        assert view.region.bottom == step.region.bottom == nav.region.y  # down to the Back/Next bar
        assert view.region.width >= size[0] - 4
        assert view.region.height >= (size[1] - 16 if size[1] > 24 else 8)
