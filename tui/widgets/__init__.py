"""Reusable widgets: mask view, memory bar, loss chart, GPU panel, log pane, run monitor."""
