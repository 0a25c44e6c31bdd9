"""The one base class of errors a person can fix, printed by the entry points as one paragraph
(its traceback to the run's log); any other exception is a bug and keeps its traceback."""

from __future__ import annotations


class UserError(Exception):
    """An error whose message names the thing (as on disk or on the command line) and the fix."""
