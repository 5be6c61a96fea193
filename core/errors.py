"""The one base class of the errors a user can fix.

Every engine error whose message is a sentence for the user (a bad preset, a missing file, a
row that cannot be read, a run that cannot resume) derives from :class:`UserError`. The faces
translate it in one way each: the CLI prints the sentence and exits 2; the TUI shows it beside
the field or in the step. Anything else is a bug: its traceback goes to the log.
"""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input or an impossible request: its message is one sentence."""


EXIT_USER_ERROR = 2
