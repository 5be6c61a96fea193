"""Screens: the wizard, a run's monitor, the list of runs."""
