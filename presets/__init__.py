"""Presets shipped with sft-wizard (YAML files beside this module)."""
