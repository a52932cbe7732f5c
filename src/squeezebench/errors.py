"""Exceptions that reach the user as one clear line."""


class SqueezebenchError(Exception):
    """A problem with the user's input or environment; the message names it and what to do."""


class NotApplicable(SqueezebenchError):
    """A method or runtime does not apply to this model/device; the variant is recorded as skipped."""
