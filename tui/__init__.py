"""The Textual face of sft-wizard."""
