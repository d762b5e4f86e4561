"""What a run asks for: the whole request as a frozen ``RunSpec``, its mode and number of few-shot examples,
and the dtypes engines compute in.

A ``RunSpec`` is made of plain values, so it can be logged, hashed and written into the run record as it is
(its ``config``). Every check that needs no data and no model happens when it is built, before either loads.
The command line offers these values, and leaderboards name a run's setting by them.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from evalsuite.errors import SpecError

MODES = ("zero-shot", "few-shot", "fine-tuned")
DEFAULT_SHOTS = 5
DTYPES = ("float32", "bfloat16", "float16")
THINK_TAGS = ("<think>", "</think>")  # what opens and closes a thinking block, unless a run names others
# Engine options whose values are secrets (api_key, ...): never written into a run record.
SECRET_OPTION = re.compile(r"(^|_)(key|secret|password|token)$", re.IGNORECASE)
REDACTED = "<redacted>"


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


def parse_shard(value: str | Sequence[int] | None) -> tuple[int, int] | None:
    """A shard as ``(index, count)``, from ``"i/N"`` or a pair; None for a whole run. :class:`SpecError` unless
    0 <= index < count."""
    if value is None:
        return None
    text = value if isinstance(value, str) else "/".join(map(str, value))
    found = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if not found or not int(found[1]) < int(found[2]):
        raise SpecError(f"--shard {text}: expected INDEX/COUNT with 0 <= INDEX < COUNT, e.g. --shard 0/4 for the "
                        "first of four shards")
    return int(found[1]), int(found[2])


def parse_seeds(value: str | Sequence[int] | None) -> tuple[int, ...] | None:
    """Sampling seeds from ``"S1,S2,..."`` or a sequence of integers; None when not given. :class:`SpecError`
    unless there is at least one, each an integer 0 or more, none twice (two equal seeds give one sample twice)."""
    if value is None:
        return None
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        seeds = tuple(int(p.strip()) if isinstance(p, str) else p for p in parts)
        if not all(type(s) is int for s in seeds):
            raise ValueError
    except ValueError:
        seeds = ()
    text = value if isinstance(value, str) else ",".join(map(str, value))
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise SpecError(f"--seeds {text}: expected distinct integers 0 or more separated by commas, e.g. --seeds "
                        "1,2,3 (one sampled answer per seed)")
    return seeds


def read_system_prompt(value: str | None) -> str | None:
    """A system prompt given as text, or as ``@FILE``: the file's text (UTF-8, without its final newline)."""
    if value is None or not value.startswith("@"):
        return value
    path = Path(value[1:]).expanduser()
    try:
        return path.read_text(encoding="utf-8").removesuffix("\n")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise SpecError(f"--system-prompt {value}: cannot read the file {path} ({reason})") from None


@dataclass(frozen=True)
class RunSpec:
    """What to evaluate and how (see :func:`evalsuite.evaluate` for each option)."""

    model: str
    tasks: str | tuple[str, ...] = "starter"
    engine: str = "hf"
    mode: str | None = None  # None: few-shot when shots > 0, else zero-shot
    shots: int | None = None  # None: 5 in few-shot mode, else 0
    prompts: str | tuple[str, ...] | None = None
    limit: int | None = None
    seed: int = 0
    batch_size: int = 8
    dtype: str = "float32"
    adapter: str | None = None
    data_dir: Path | None = None
    output: Path = Path("results")
    task_dirs: tuple[Path, ...] = ()
    prompt_dirs: tuple[Path, ...] = ()
    fewshot_sampler: str | None = None
    chat_template: bool = False
    n_boot: int = 1000
    progress: bool = True
    data_seed: int | None = None
    samples: int | None = None  # None: one per seed of ``seeds``, else 1
    temperature: float = 0.0
    skip_unavailable: bool = False
    cache: bool | Path = True
    engine_args: Mapping[str, Any] = field(default_factory=dict)
    system_prompt: str | None = None  # text, or "@FILE"; implies chat_template
    fewshot_as_multiturn: bool = False  # implies chat_template
    max_new_tokens: int | None = None  # None: each generation prompt's own max_tokens
    think: bool = False
    think_tags: tuple[str, str] = THINK_TAGS
    shard: str | tuple[int, int] | None = None  # "i/N" or (i, N): the i-th of N parts of the documents
    permute_choices: bool = False  # every document's options rotated by one position (evalsuite.prompting.permute)
    fewshot_draws: int = 1  # each document answered this many times, each draw with its own few-shot examples
    seeds: str | Sequence[int] | None = None  # "S1,S2,..." or ints: the sampling seed of each sampled answer

    def __post_init__(self) -> None:
        mode, shots = mode_and_shots(self.mode, self.shots)
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 - frozen dataclass
        set_("mode", mode)
        set_("shots", shots)
        for name in ("tasks", "prompts"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                set_(name, tuple(value))
        set_("task_dirs", tuple(Path(p) for p in self.task_dirs))
        set_("prompt_dirs", tuple(Path(p) for p in self.prompt_dirs))
        set_("output", Path(self.output))
        if self.data_dir is not None:
            set_("data_dir", Path(self.data_dir))
        if self.cache is None:
            set_("cache", False)
        elif self.cache is not True and self.cache is not False:
            set_("cache", Path(self.cache))
        set_("engine_args", dict(self.engine_args or {}))
        set_("system_prompt", read_system_prompt(self.system_prompt))
        if self.system_prompt is not None or self.fewshot_as_multiturn:
            set_("chat_template", True)  # a system message or turns exist only in a chat template
        tags = tuple(self.think_tags)
        if len(tags) != 2 or not all(isinstance(t, str) and t for t in tags) or tags[0] == tags[1]:
            raise SpecError(f"--think-tags {' '.join(map(str, tags))}: give two different, non-empty tags, the one "
                            "opening and the one closing a thinking block (default: <think> </think>)")
        set_("think_tags", tags)
        set_("shard", parse_shard(self.shard))
        if self.max_new_tokens is not None and self.max_new_tokens < 1:
            raise SpecError(f"--max-new-tokens must be at least 1, got {self.max_new_tokens}")
        for option, value in (("--limit", self.limit), ("--batch-size", self.batch_size), ("--bootstrap", self.n_boot)):
            if value is not None and value < 1:
                raise SpecError(f"{option} must be at least 1, got {value}")
        if self.seed < 0:
            raise SpecError(f"--seed must be 0 or more, got {self.seed}")
        if self.fewshot_draws < 1:
            raise SpecError(f"--fewshot-draws must be at least 1, got {self.fewshot_draws}")
        if self.fewshot_draws > 1 and shots == 0:
            raise SpecError(f"--fewshot-draws {self.fewshot_draws} needs few-shot examples (--shots above 0): a "
                            f"{mode} prompt is the same in every draw")
        temperature = self.temperature
        seeds = parse_seeds(self.seeds)
        set_("seeds", seeds)
        if seeds is not None:
            if self.samples is not None and self.samples != len(seeds):
                raise SpecError(f"--samples {self.samples} --seeds {','.join(map(str, seeds))}: --seeds gives one "
                                f"sample per seed ({len(seeds)}); leave out --samples or make it {len(seeds)}")
            if not temperature > 0:
                raise SpecError(f"--seeds {','.join(map(str, seeds))} needs --temperature above 0: greedy decoding "
                                "uses no seed")
        set_("samples", len(seeds) if seeds is not None else 1 if self.samples is None else self.samples)
        if self.samples < 1 or not (math.isfinite(temperature) and temperature >= 0) or (
                self.samples > 1 and temperature == 0):
            raise SpecError(f"--samples {self.samples} --temperature {temperature}: samples must be at least 1, the "
                            "temperature a number at least 0, and several samples need a temperature above 0 to differ")

    def config(self, engine_name: str, data_dir: Path | None, tasks: Sequence[str]) -> dict[str, Any]:
        """The ``config`` entry of results.json: the request as run (the engine as it named itself, the data
        folder actually used, the tasks actually evaluated)."""
        return {
            "model": self.model,
            "engine": engine_name,
            "adapter": self.adapter,
            "mode": self.mode,
            "shots": self.shots,
            "seed": self.seed,
            "tasks": list(tasks),
            "prompts": list(self.prompts) if isinstance(self.prompts, tuple) else self.prompts,
            "limit": self.limit,
            "batch_size": self.batch_size,
            "dtype": self.dtype,
            "data_dir": str(data_dir) if data_dir else None,
            "fewshot_sampler": self.fewshot_sampler,
            "chat_template": self.chat_template,
            "n_boot": self.n_boot,
            "data_seed": self.data_seed,
            "samples": self.samples,
            "temperature": self.temperature,
            "engine_args": {k: REDACTED if SECRET_OPTION.search(k) else v for k, v in self.engine_args.items()},
            "system_prompt": self.system_prompt,
            "fewshot_as_multiturn": self.fewshot_as_multiturn,
            "max_new_tokens": self.max_new_tokens,
            "think": self.think,
            "think_tags": list(self.think_tags),
            # Written only when set, so that the configuration (and the run id) of a run without them is unchanged.
            **({"permute_choices": True} if self.permute_choices else {}),
            **({"fewshot_draws": self.fewshot_draws} if self.fewshot_draws > 1 else {}),
            **({"seeds": list(self.seeds)} if self.seeds is not None else {}),
        }

    def sampling_seeds(self) -> tuple[int, ...]:
        """The seed of each sampled answer to a document: ``seeds`` when given, else ``seed * 1000 + k`` for
        sample k (samples differ, and each is reproducible)."""
        return self.seeds if self.seeds is not None else tuple(self.seed * 1000 + k for k in range(self.samples))
