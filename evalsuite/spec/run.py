"""What a run may ask for: its mode and number of few-shot examples, and the dtypes engines compute in.

The command line offers these values, ``evaluate`` checks them and leaderboards name a run's setting by them.
"""

from __future__ import annotations

from evalsuite.errors import SpecError

MODES = ("zero-shot", "few-shot", "fine-tuned")
DEFAULT_SHOTS = 5
DTYPES = ("float32", "bfloat16", "float16")


def mode_and_shots(mode: str | None, shots: int | None) -> tuple[str, int]:
    """A run's mode and number of examples, each filled in from the other when missing.

    No mode: few-shot when ``shots`` > 0, else zero-shot. No shots: :data:`DEFAULT_SHOTS` in few-shot mode,
    else 0. A few-shot run needs shots > 0 and the other modes 0, else :class:`SpecError`.
    """
    if mode is None:
        mode = "few-shot" if (shots or 0) > 0 else "zero-shot"
    if mode not in MODES:
        raise SpecError(f"unknown mode {mode!r}; use one of {', '.join(MODES)}")
    shots = (DEFAULT_SHOTS if mode == "few-shot" else 0) if shots is None else shots
    if shots < 0 or (mode == "few-shot") != (shots > 0):
        raise SpecError(f"mode {mode!r} does not fit --shots {shots}: few-shot needs shots > 0, other modes 0")
    return mode, shots


def setting_label(mode: str | None, shots: int | None) -> str:
    """How tables name a run's setting: 'zero-shot', '5-shot' or 'fine-tuned' (runs recorded without a mode
    count as few-shot when they have shots)."""
    if mode == "few-shot" or (mode is None and shots):
        return f"{shots}-shot"
    return str(mode or "zero-shot")
