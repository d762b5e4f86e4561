"""One exception family, so the command line can print a single clear message instead of a traceback."""

from __future__ import annotations


class EvalsuiteError(Exception):
    """Base class: the message names the file, field or URL at fault and what to do about it."""


class SpecError(EvalsuiteError):
    """A task, prompt or run specification is malformed."""


class TemplateError(EvalsuiteError):
    """A prompt template failed to render (missing variable, forbidden access, bad syntax)."""


class DataError(EvalsuiteError):
    """A dataset could not be found, read or parsed."""


class EngineError(EvalsuiteError):
    """An inference engine could not be loaded or failed to answer."""


class MetricError(EvalsuiteError):
    """An unknown metric, or one that does not apply to the task."""
