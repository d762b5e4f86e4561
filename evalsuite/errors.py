"""One exception family, so the command line can print a single clear message instead of a traceback."""

from __future__ import annotations

import errno


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


class OutputError(EvalsuiteError):
    """A file or folder could not be written: read-only, a file where a folder should be, or the disk is full."""


# What an operating-system error means for the user, and the way out.
_OS_PROBLEMS = {
    errno.ENOSPC: "no space left on the device: free some space, or choose a folder on another disk",
    errno.EDQUOT: "disk quota exceeded: free some space, or choose a folder on another disk",
    errno.EROFS: "read-only file system: choose a folder you can write to",
    errno.EACCES: "permission denied: check its permissions, or choose another place",
    errno.EPERM: "operation not permitted: check its permissions, or choose another place",
    errno.EEXIST: "a file is in the way where a folder should be: remove it, or choose another place",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose a folder",
    errno.EISDIR: "it is a folder, not a file",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "the name is too long",
}


def os_problem(exc: OSError) -> str:
    """An operating-system error in words, with the way out (``exc.strerror`` when it is an unusual one)."""
    return _OS_PROBLEMS.get(exc.errno, exc.strerror or str(exc))
