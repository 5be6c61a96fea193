"""The ``sft-wizard`` command line: one face over ``sftwizard.core`` (and the one place that opens
the TUI). Entry point: :func:`sftwizard.cli.main.main`."""
