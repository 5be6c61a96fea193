"""The headless engine of sft-wizard. Never imports textual or the TUI."""
