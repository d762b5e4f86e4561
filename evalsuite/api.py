"""The Python face: ``evalsuite.evaluate(...)`` does what ``evalsuite run`` does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evalsuite.data import default_data_dir
from evalsuite.engines import Engine
from evalsuite.errors import SpecError
from evalsuite.pipeline import RunResult, run
from evalsuite.pipeline.check import check_fewshot_pool
from evalsuite.pipeline.merge import merge
from evalsuite.pipeline.load import Splits, select_tasks, variants
from evalsuite.pipeline.render import render_instances
from evalsuite.prompting import ChatFormat, PromptRenderer, chat_text
from evalsuite.scoring import describe_flexible
from evalsuite.spec import RunSpec, TaskSpec, load_tasks
from evalsuite.spec.run import read_system_prompt

__all__ = ["RunResult", "RunSpec", "evaluate", "load_tasks", "merge", "select_tasks", "show_prompts"]


def evaluate(model: str | RunSpec, tasks: str | list[str] = "starter", *, engine: str | Engine = "hf",
             **options: Any) -> RunResult:
    """Evaluate ``model`` on ``tasks`` and write a run folder under ``output``; the options are the fields of
    :class:`~evalsuite.spec.RunSpec`, or pass a ``RunSpec`` as ``model``.

    ``mode``: ``zero-shot`` (0 examples), ``few-shot`` (``shots`` examples, default 5) or ``fine-tuned``
    (a fine-tuned checkpoint or ``adapter``, zero-shot prompts). ``prompts``: ``None`` for each task's
    default variant, ``"all"``, or names. ``engine`` is an engine name or an already built engine;
    ``engine_args`` are passed to its constructor (e.g. ``{"max_model_len": 2048}`` for ``vllm``,
    ``{"tokenizer": "smollm2"}`` for ``server``, whose ``model`` is a comma-separated list of endpoint URLs).
    ``data_seed`` replaces the seeds of generated tasks (a fresh test set). For generation prompts,
    ``temperature`` > 0 samples, and ``samples`` > 1 draws that many answers per document (seeds
    ``seed * 1000 + k``, or ``seeds``, one answer per seed) and takes their majority vote (self-consistency);
    log-likelihood prompts ignore them. ``fewshot_draws`` K > 1 answers each document K times, each draw with
    its own seeded few-shot examples (draw 0: those of a run without draws).
    Every task's data is loaded before the model: with ``skip_unavailable`` a task whose data cannot be
    loaded (e.g. a hub-only task offline) is left out and listed under ``skipped`` in the record, else the
    run stops with that error.
    ``cache``: the request cache (:mod:`evalsuite.engines.cache`) in its default folder (``True``), in a
    given folder, or off (``False``); with it, a killed run resumes where it stopped when rerun.
    Chat formatting: ``chat_template`` wraps prompts in the model's chat template; ``system_prompt`` (text, or
    ``"@FILE"``) adds a system message and ``fewshot_as_multiturn`` makes few-shot examples user/assistant
    turns, both implying ``chat_template`` (the ``chat`` engine sends the conversation itself).
    ``max_new_tokens`` replaces every generation prompt's ``max_tokens``; ``think`` removes thinking between
    ``think_tags`` (and a server's ``reasoning_content``) before answers are read and records its length.
    ``shard`` (``"i/N"``) evaluates the i-th of N contiguous parts of each task's documents and writes a shard's
    run folder; :func:`merge` combines the folders of a complete set into the run.
    ``permute_choices`` rotates every document's options by one position, the gold answer following its option
    (:mod:`evalsuite.prompting.permute`): paired with the same run without it, a circular contamination check.
    """
    if isinstance(model, RunSpec):
        if options or tasks != "starter":
            raise SpecError("evaluate(RunSpec) takes no further options: put them in the RunSpec")
        return run(model, None if isinstance(engine, str) else engine)
    name = engine if isinstance(engine, str) else "hf"
    try:
        spec = RunSpec(model, tasks, engine=name, **options)
    except TypeError as exc:  # an unknown option
        raise SpecError(f"evaluate(): {exc}") from None
    return run(spec, None if isinstance(engine, str) else engine)


def show_prompts(
    catalog: dict[str, TaskSpec], name: str, prompt: str = "all", shots: int = 0, doc: int = 0,
    seed: int = 0, data_dir: str | Path | None = None, data_seed: int | None = None, *,
    chat_template: bool = False, system_prompt: str | None = None, fewshot_as_multiturn: bool = False,
    tokenizer: str | None = None, permute_choices: bool = False,
) -> list[tuple[str, str]]:
    """The rendered prompt of each variant for one document: context, then the scored answers
    (``data_seed``: as in :func:`evaluate`, a generated task's fresh test set). With chat formatting (the
    options of :func:`evaluate`), the conversation instead, and with ``tokenizer`` (a model folder, alias or hub
    id) also the text its chat template makes of it; ``permute_choices``: with the options rotated, as
    :func:`evaluate` rotates them."""
    if doc < 0 or shots < 0:
        raise SpecError(f"--doc and --shots must be 0 or more, got --doc {doc} --shots {shots}")
    task = select_tasks(catalog, name)[0]
    splits = Splits(Path(data_dir) if data_dir else default_data_dir(), data_seed)
    check_fewshot_pool(task, splits, shots)
    system_prompt = read_system_prompt(system_prompt)
    chat = ChatFormat(system_prompt, fewshot_as_multiturn)
    chatting = chat_template or system_prompt is not None or fewshot_as_multiturn
    template = _tokenizer(tokenizer) if chatting and tokenizer else None
    shown = []
    for variant in variants(task, None if prompt == "default" else prompt):
        renderer = PromptRenderer(task, variant, chat, permute_choices)
        instances, _, _ = render_instances(task, renderer, splits, shots=shots, seed=seed, limit=doc + 1, sampler=None)
        if not 0 <= doc < len(instances):
            raise SpecError(f"task '{task.name}' has {len(instances)} documents in split '{task.eval_split}'; --doc {doc} is out of range")
        inst = instances[doc]
        text = inst.context
        if chatting:
            text = "\n".join(f"--- {role} ---\n{content}" for role, content in inst.messages)
            if template is not None:
                text += f"\n--- as the chat template of {tokenizer} makes it ---\n{chat_text(template, inst.messages)}"
        if variant.method == "loglikelihood":
            answers = "\n".join(f"  [{'x' if k == inst.gold else ' '}] {c!r}" for k, c in enumerate(inst.continuations))
            tail = f"\n--- scored continuations ([x] = gold) ---\n{answers}"
        else:
            gold = inst.answer_values[inst.gold] if 0 <= inst.gold < len(inst.answer_values) else inst.gold_text
            rule = variant.answer
            tail = (f"\n--- generated; gold: {gold!r} ---\nstrict rule: the last match of /{rule.pattern}/ naming one "
                    f"of {list(inst.answer_values) or 'the gold text'}\nflexible rule: the strict answer, else "
                    f"{describe_flexible(rule.flexible, inst.answer_values)}")
        shown.append((variant.name, text + tail))
    return shown


def _tokenizer(model: str):
    from transformers import AutoTokenizer

    from evalsuite.engines.models import resolve_model

    try:
        return AutoTokenizer.from_pretrained(resolve_model(model))
    except Exception as exc:  # noqa: BLE001
        raise SpecError(f"--tokenizer {model}: cannot load its tokenizer ({type(exc).__name__}: {exc})") from None
