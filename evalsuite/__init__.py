"""evalsuite: reasoning evaluation for language models.

>>> from evalsuite import evaluate
>>> run = evaluate("smollm2", tasks="copa,piqa", mode="few-shot", shots=5, limit=100)
>>> run.metric("copa", "accuracy")
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["EvalsuiteError", "RunResult", "RunSpec", "build_leaderboard", "evaluate", "finetune", "load_tasks", "__version__"]

# Imported on first use so that `evalsuite --help` does not pay for torch and transformers.
_LAZY = {
    "evaluate": "evalsuite.api",
    "RunResult": "evalsuite.api",
    "RunSpec": "evalsuite.spec",
    "load_tasks": "evalsuite.spec",
    "build_leaderboard": "evalsuite.leaderboard",
    "finetune": "evalsuite.finetune",
    "EvalsuiteError": "evalsuite.errors",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'evalsuite' has no attribute {name!r}")
