"""The command line: ``evalsuite tasks | show | check | new-task | run | merge | finetune | leaderboard | report |
compare | cache``.

Heavy libraries are imported inside the commands, so listing tasks or asking for help starts fast.
Errors of the :class:`~evalsuite.errors.EvalsuiteError` family print one line and exit with status 2, and so does
a file or folder that cannot be read or written (an ``OSError``). When the reader of the output goes away
(``evalsuite tasks | head``), a command stops quietly with status 141, as tools killed by SIGPIPE do.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import select
import signal
import sys
from pathlib import Path
from typing import Any


def _task_dirs(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--task-dir", action="append", default=[], type=Path, metavar="DIR",
                        help="extra folder of task YAML files (repeatable; overrides built-in tasks of the same name)")
    parser.add_argument("--prompt-dir", action="append", default=[], type=Path, metavar="DIR",
                        help="extra folder of prompt templates, laid out as DIR/<task>/<variant>.jinja (repeatable)")


def _data_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data-dir", type=Path, default=None, metavar="DIR",
                        help="folder of raw benchmark files (default: $EVALSUITE_DATA_DIR; else the Hugging Face hub)")


def _cache_dir(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache-dir", type=Path, default=None, metavar="DIR",
                        help="folder of the request cache requests.sqlite (default: $EVALSUITE_CACHE_DIR, "
                        "else ~/.cache/evalsuite)")


def _absolute_paths(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--absolute-paths", action="store_true",
                        help="show models and adapters given as absolute paths as they are (default: relative to "
                        "the current folder, since published files are made to be shared)")


def _chat(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--chat-template", action="store_true",
                        help="format prompts as conversations through the model's chat template")
    parser.add_argument("--system-prompt", default=None, metavar="TEXT|@FILE",
                        help="a system message before each conversation (its text, or @FILE for a file's); implies "
                             "--chat-template")
    parser.add_argument("--fewshot-as-multiturn", action="store_true",
                        help="each few-shot example as a user turn and an assistant answer; implies --chat-template")


def _tasks_command(commands: Any) -> None:
    """The ``tasks`` command's arguments."""
    from evalsuite.spec import CATEGORIES

    tasks = commands.add_parser("tasks", help="list tasks: name, category, source, size, license")
    tasks.add_argument("--category", choices=CATEGORIES)
    tasks.add_argument("--json", action="store_true", help="print JSON instead of a table")
    tasks.add_argument("--sizes", action="store_true",
                       help="load each task's evaluated split to count its documents ('?' where the data cannot be loaded)")
    _task_dirs(tasks)
    _data_dir(tasks)


def _show_command(commands: Any) -> None:
    """The ``show`` command's arguments."""
    show = commands.add_parser("show", help="print the rendered prompt of each variant for one document")
    show.add_argument("task")
    show.add_argument("--prompt", default="all", help="variant name or 'all' (default)")
    show.add_argument("--shots", type=int, default=0)
    show.add_argument("--doc", type=int, default=0, help="document index in the evaluated split")
    show.add_argument("--seed", type=int, default=0)
    show.add_argument("--data-seed", type=int, default=None, help="a generated task's items from this seed instead")
    show.add_argument("--permute-choices", action="store_true", help="with the options rotated, as run shows them")
    _chat(show)
    show.add_argument("--tokenizer", default=None, metavar="MODEL",
                      help="with chat formatting, also show the text this model's chat template makes of it")
    _task_dirs(show)
    _data_dir(show)


def _check_command(commands: Any) -> None:
    """The ``check`` command's arguments."""
    from evalsuite.spec import DEFAULT_SHOTS

    check = commands.add_parser("check", help="check tasks without a model: every split, document, prompt variant, "
                                "zero-shot and few-shot; report every problem")
    check.add_argument("tasks", nargs="+", metavar="TASK", help="task names, tags, categories, or 'all'")
    check.add_argument("--prompts", default="all", help="prompt variants: comma-separated names or 'all' (default)")
    check.add_argument("--shots", type=int, action="append", default=None, metavar="K",
                       help=f"few-shot examples per prompt, repeatable (default: 0 and {DEFAULT_SHOTS})")
    check.add_argument("--seed", type=int, default=0, help="seed of the few-shot examples' choice (default 0)")
    _task_dirs(check)
    _data_dir(check)


def _new_task_command(commands: Any) -> None:
    """The ``new-task`` command's arguments."""
    new_task = commands.add_parser("new-task", help="write a task file and its three prompt variants for a data "
                                   "file of your own (JSONL, JSON, CSV, TSV, Parquet)")
    new_task.add_argument("name", help="task name: lower-case letters, digits, '_', '-' or '.'")
    new_task.add_argument("--data", required=True, type=Path, metavar="FILE", help="the data file")
    new_task.add_argument("--output", type=Path, default=Path("my_tasks"), metavar="DIR",
                          help="folder written: DIR/tasks/NAME.yaml, DIR/prompts/NAME/*.jinja (default: my_tasks)")
    new_task.add_argument("--force", action="store_true", help="replace files that exist")


def _run_command(commands: Any) -> None:
    """The ``run`` command's arguments."""
    from evalsuite.spec import DEFAULT_SHOTS, DTYPES, MODES, SAMPLERS

    run = commands.add_parser("run", help="evaluate a model and write a run folder")
    run.add_argument("--model", required=True, help="model folder, hub id, or 'smollm2' (the packaged SmolLM2-135M-Instruct)")
    run.add_argument("--engine", default="hf", help="inference engine: hf (default), vllm, server or chat "
                     "(then --model is a comma-separated list of endpoint URLs: /v1/completions, or "
                     "/v1/chat/completions for chat), or one an installed package registers")
    run.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE",
                     help="option for the engine's constructor, repeatable; VALUE is read as JSON when it parses "
                          "(e.g. max_model_len=2048, data_parallel_size=2, model_name=NAME, concurrency=16)")
    run.add_argument("--tokenizer", default=None, metavar="MODEL",
                     help="server and chat engines: model folder, alias or hub id with the served model's tokenizer "
                     "(for chat it only measures thinking and answer lengths in tokens)")
    run.add_argument("--adapter", default=None, metavar="DIR", help="PEFT/LoRA adapter folder")
    run.add_argument("--tasks", default="starter", help="comma-separated task names, tags, categories, or 'all' (default: starter)")
    run.add_argument("--mode", default=None, choices=MODES,
                     help="default: few-shot when --shots > 0, else zero-shot")
    run.add_argument("--shots", type=int, default=None, help=f"few-shot examples per prompt (default {DEFAULT_SHOTS} in few-shot mode)")
    run.add_argument("--prompts", default=None, help="prompt variants: comma-separated names or 'all' (default: each task's first)")
    run.add_argument("--limit", type=int, default=None, help="evaluate only the first N documents of each task")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--batch-size", type=int, default=8)
    run.add_argument("--dtype", default="float32", choices=DTYPES)
    run.add_argument("--fewshot-sampler", default=None, choices=SAMPLERS,
                     help="default: each task's own setting")
    run.add_argument("--fewshot-draws", type=int, default=1, metavar="K",
                     help="answer each document K times, each draw with its own seeded few-shot examples (draw 0: "
                          "those of a run without this option); intervals resample documents with all their draws")
    _chat(run)
    run.add_argument("--max-new-tokens", type=int, default=None, metavar="N",
                     help="generation prompts: at most N new tokens, instead of each prompt's own max_tokens")
    run.add_argument("--think", action="store_true",
                     help="thinking model: remove <think>...</think> (and a server's reasoning_content) before "
                          "reading the answer; an unclosed block is unparseable; lengths are recorded")
    run.add_argument("--think-tags", nargs=2, default=None, metavar=("OPEN", "CLOSE"),
                     help="the tags of a thinking block (default: <think> </think>); implies --think")
    run.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for intervals (default 1000)")
    run.add_argument("--data-seed", type=int, default=None, metavar="S",
                     help="draw generated tasks from seed S instead of their own (a fresh, unseen test set)")
    run.add_argument("--permute-choices", action="store_true",
                     help="rotate every document's options by one position, the gold answer following (a circular "
                          "check for contamination; pairs with the same run without it in the report)")
    run.add_argument("--samples", type=int, default=None, metavar="N",
                     help="generation prompts: N sampled answers per document, majority vote (needs --temperature > 0)")
    run.add_argument("--seeds", default=None, metavar="S1,S2,...",
                     help="generation prompts: one sampled answer per seed, with these sampling seeds (default: "
                          "seed*1000+k for sample k of --samples)")
    run.add_argument("--temperature", type=float, default=0.0, metavar="T",
                     help="generation prompts: sampling temperature (default 0: greedy)")
    run.add_argument("--shard", default=None, metavar="I/N",
                     help="evaluate only the I-th of N contiguous parts of each task's documents (I from 0), for "
                          "a cluster's array jobs; 'evalsuite merge' combines the N shard folders into the run")
    run.add_argument("--output", type=Path, default=Path("results"), help="folder for run folders (default: results/)")
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--skip-unavailable", action="store_true",
                     help="leave out tasks whose data cannot be loaded (e.g. hub-only tasks offline) instead of stopping")
    run.add_argument("--no-cache", action="store_true",
                     help="neither read nor store answers in the request cache (a killed run then starts over)")
    _cache_dir(run)
    _task_dirs(run)
    _data_dir(run)


def _merge_command(commands: Any) -> None:
    """The ``merge`` command's arguments."""
    merge = commands.add_parser("merge", help="combine the shard folders of a run (run --shard I/N) into one run")
    merge.add_argument("shards", nargs="+", type=Path, metavar="SHARD_DIR", help="the run folder of every shard")
    merge.add_argument("--output", type=Path, default=Path("results"),
                       help="folder for the merged run's folder (default: results/)")


def _finetune_command(commands: Any) -> None:
    """The ``finetune`` command's arguments."""
    from evalsuite.finetune.config import TrainConfig

    default = TrainConfig()  # one source of truth for the defaults
    tune = commands.add_parser("finetune", help="fine-tune a model on a task's train split (head for encoders, LoRA for causal LMs)")
    tune.add_argument("--task", required=True, help="task name (it needs a train split)")
    tune.add_argument("--model", required=True, help="model folder, hub id, or 'minilm' / 'smollm2' (packaged models)")
    tune.add_argument("--method", default=None, choices=("classifier", "lora"),
                      help="default: lora for causal LMs, a classification head otherwise")
    tune.add_argument("--output", type=Path, default=None, help="checkpoint folder (default: checkpoints/<model>-<task>[-lora])")
    tune.add_argument("--overwrite", action="store_true", help="replace an existing --output folder")
    tune.add_argument("--learning-rate", type=float, default=None, help="default: 5e-5 (classifier), 2e-4 (lora)")
    tune.add_argument("--epochs", type=int, default=default.epochs, help="default: %(default)s")
    tune.add_argument("--batch-size", type=int, default=default.batch_size, help="default: %(default)s")
    tune.add_argument("--weight-decay", type=float, default=default.weight_decay,
                      help="AdamW weight decay, not on biases and norms (default: %(default)s)")
    tune.add_argument("--warmup-ratio", type=float, default=default.warmup_ratio,
                      help="share of steps warming the learning rate up (default: %(default)s)")
    tune.add_argument("--max-grad-norm", type=float, default=default.max_grad_norm,
                      help="gradient clipping norm (default: %(default)s)")
    tune.add_argument("--patience", type=int, default=default.patience,
                      help="epochs without improvement before stopping (default: %(default)s)")
    tune.add_argument("--monitor", default=default.monitor, choices=("loss", "accuracy"),
                      help="validation quantity to improve (default: %(default)s)")
    tune.add_argument("--max-length", type=int, default=None, help="tokens per example (default: 128 classifier, 1024 lora)")
    tune.add_argument("--seed", type=int, default=default.seed)
    tune.add_argument("--validation-fraction", type=float, default=default.validation_fraction,
                      help="share of train held out when the task has no validation split (default: %(default)s)")
    tune.add_argument("--limit", type=int, default=None, help="train on the first N training documents only")
    tune.add_argument("--validation-limit", type=int, default=None, help="validate on the first N documents only")
    tune.add_argument("--prompt", default=None, help="lora: the prompt variant trained on (default: the task's first)")
    tune.add_argument("--lora-r", type=int, default=default.lora_r, help="LoRA rank (default: %(default)s)")
    tune.add_argument("--lora-alpha", type=int, default=default.lora_alpha, help="LoRA scaling alpha (default: %(default)s)")
    tune.add_argument("--lora-dropout", type=float, default=default.lora_dropout, help="default: %(default)s")
    tune.add_argument("--lora-targets", default=None, help="comma-separated module names (default: peft's for the model)")
    tune.add_argument("--threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    tune.add_argument("--no-progress", action="store_true")
    _task_dirs(tune)
    _data_dir(tune)


def _leaderboard_command(commands: Any) -> None:
    """The ``leaderboard`` command's arguments."""
    board = commands.add_parser("leaderboard", help="build leaderboard.md/.csv/.json from run folders")
    board.add_argument("runs", nargs="*", type=Path, default=[Path("results")], help="run folders or folders of runs (default: results/)")
    board.add_argument("--output", type=Path, default=Path("leaderboards"))
    board.add_argument("--metric", default=None, help="show this metric (e.g. f1) where a task has it, instead of "
                       "the task's main metric (an error when no task has it)")
    _absolute_paths(board)


def _report_command(commands: Any) -> None:
    """The ``report`` command's arguments."""
    report = commands.add_parser("report", help="write leaderboards/index.html: rankings, plots, paired tests, errors")
    report.add_argument("runs", nargs="*", type=Path, default=[Path("results")], help="run folders or folders of runs (default: results/)")
    report.add_argument("--output", type=Path, default=Path("leaderboards"))
    _absolute_paths(report)


def _compare_command(commands: Any) -> None:
    """The ``compare`` command's arguments."""
    comp = commands.add_parser("compare", help="paired significance test per task between two runs or leaderboard rows")
    comp.add_argument("a", metavar="A", help="run folder, or a leaderboard row: model=M,setting=S[,prompt=P][,adapter=D]")
    comp.add_argument("b", metavar="B", help="the same for the other side")
    comp.add_argument("--runs", action="append", type=Path, default=None, metavar="DIR",
                      help="folder of runs that selectors pick rows from (repeatable; default: results/)")
    comp.add_argument("--metric", default="accuracy", help="metric to compare, or 'main' for each task's main metric (default: accuracy)")
    comp.add_argument("--bootstrap", type=int, default=10000, help="paired bootstrap resamples (default 10000)")
    comp.add_argument("--seed", type=int, default=0)
    comp.add_argument("--json", action="store_true", help="print JSON instead of a table")


def _cache_command(commands: Any) -> None:
    """The ``cache`` command's arguments."""
    cache = commands.add_parser("cache", help="size of the request cache and entries per model; clear it; merge others "
                                "into it")
    cache_commands = cache.add_subparsers(dest="cache_command", required=True, metavar="ACTION")
    info = cache_commands.add_parser("info", help="location, size, entries per model")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    _cache_dir(info)
    clear = cache_commands.add_parser("clear", help="delete entries: all of them, or those matching the options")
    clear.add_argument("--older-than", type=float, default=None, metavar="DAYS",
                       help="only entries stored more than DAYS days ago")
    clear.add_argument("--model", default=None,
                       help="only this model's entries: its path as shown by 'cache info', or a fingerprint prefix")
    _cache_dir(clear)
    merge = cache_commands.add_parser("merge", help="copy the answers of other request caches (one per machine or "
                                      "shard, say) into this one; never share one cache over a network file system")
    merge.add_argument("sources", nargs="+", type=Path, metavar="CACHE_DIR",
                       help="a cache's folder (holding requests.sqlite), or the file itself")
    _cache_dir(merge)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="evalsuite", description="Reasoning evaluation for language models.")
    parser.add_argument("--version", action="version", version="evalsuite 0.1.0")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _tasks_command(commands)
    _show_command(commands)
    _check_command(commands)
    _new_task_command(commands)
    _run_command(commands)
    _merge_command(commands)
    _finetune_command(commands)
    _leaderboard_command(commands)
    _report_command(commands)
    _compare_command(commands)
    _cache_command(commands)
    return parser


def cmd_tasks(args: argparse.Namespace) -> int:
    from evalsuite.api import load_tasks

    rows, size_of = [], _Sizes(args.data_dir)
    catalog = load_tasks(args.task_dir, args.prompt_dir)
    if catalog.broken:
        print(f"{len(catalog.broken)} task file(s) could not be loaded (only runs that select them fail):",
              file=sys.stderr)
        for file in catalog.broken:
            print(f"  {file.error}", file=sys.stderr)
    for task in sorted(catalog.values(), key=lambda t: (t.category, t.name)):
        if args.category and task.category != args.category:
            continue
        row = {"name": task.name, "category": task.category, "source": task.source_names,
               "gated": bool(task.hub and task.hub.gated),
               "split": task.eval_split, "prompts": [p.name for p in task.prompts],
               "metrics": list(task.metrics), "license": task.license}
        if args.sizes:
            row["size"] = size_of(task)
        rows.append(row)
    if size_of.notes:
        print(f"size '?': the data of {len(size_of.notes)} task(s) could not be loaded here:", file=sys.stderr)
        for line in size_of.notes:
            print(f"  {line}", file=sys.stderr)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    columns = ["name", "category", "split"] + (["size"] if args.sizes else []) + ["prompts", "source", "license"]
    table = [[", ".join(r[c]) if isinstance(r[c], list) else str("?" if r[c] is None else r[c]) for c in columns]
             for r in rows]
    widths = [max(len(c), *(len(t[i]) for t in table)) if table else len(c) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip())
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths)).rstrip())
    return 0


class _Sizes:
    """Counts each task's evaluated documents (after its filter) for ``tasks --sizes``, noting the tasks whose
    data cannot be loaded. Once a hub dataset fails, the hub is not asked again: each attempt waits for retries."""

    def __init__(self, data_dir: Path | None):
        from evalsuite.data import default_data_dir

        self.data_dir = data_dir or default_data_dir()
        self.notes: list[str] = []
        self.hub_failed: str | None = None

    def __call__(self, task) -> int | None:
        from evalsuite.data import load_split
        from evalsuite.errors import DataError

        from_hub = task.hub is not None and (self.data_dir is None or task.local is None)
        if from_hub and self.hub_failed:
            self.notes.append(f"{task.name}: not tried (the hub failed for {self.hub_failed})")
            return None
        try:
            return len(load_split(task, task.eval_split, self.data_dir).docs)
        except DataError as exc:
            self.notes.append(f"{task.name}: {str(exc).split(': ', 1)[-1][:120]}")
            self.hub_failed = self.hub_failed or (task.name if from_hub else None)
            return None


def cmd_show(args: argparse.Namespace) -> int:
    from evalsuite.api import load_tasks, show_prompts

    tasks = load_tasks(args.task_dir, args.prompt_dir)
    for name, text in show_prompts(tasks, args.task, args.prompt, args.shots, args.doc, args.seed, args.data_dir,
                                   args.data_seed, chat_template=args.chat_template, system_prompt=args.system_prompt,
                                   fewshot_as_multiturn=args.fewshot_as_multiturn, tokenizer=args.tokenizer,
                                   permute_choices=args.permute_choices):
        print(f"===== {args.task} / {name} ({args.shots}-shot, document {args.doc}) =====")
        print(text)
        print()
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from evalsuite.pipeline.check import check_tasks, describe_report

    items = [item.strip() for arg in args.tasks for item in arg.split(",") if item.strip()]
    report = check_tasks(items, task_dirs=args.task_dir, prompt_dirs=args.prompt_dir, data_dir=args.data_dir,
                         prompts=args.prompts, shots=args.shots, seed=args.seed)
    print("\n".join(describe_report(report)))
    return 2 if report.problems else 0


def cmd_new_task(args: argparse.Namespace) -> int:
    from evalsuite.scaffold import new_task

    written, mapping = new_task(args.name, args.data, args.output, force=args.force)
    print("guessed: " + ", ".join(f"{k}: {v}" for k, v in mapping.items()))
    for path in written:
        print(f"wrote {path}")
    tasks, prompts = args.output / "tasks", args.output / "prompts"
    print(f"edit them, then: evalsuite check {args.name} --task-dir {tasks} --prompt-dir {prompts}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from evalsuite.api import evaluate
    from evalsuite.spec import mode_and_shots
    from evalsuite.spec.run import THINK_TAGS

    mode, shots = mode_and_shots(args.mode, args.shots)
    engine_args = _engine_args(args.engine_arg)
    if args.tokenizer:
        engine_args["tokenizer"] = args.tokenizer
    result = evaluate(
        args.model, args.tasks, engine=args.engine, adapter=args.adapter, mode=mode, shots=shots,
        prompts=args.prompts, limit=args.limit, seed=args.seed, batch_size=args.batch_size, dtype=args.dtype,
        data_dir=args.data_dir, output=args.output, task_dirs=args.task_dir, prompt_dirs=args.prompt_dir,
        fewshot_sampler=args.fewshot_sampler, chat_template=args.chat_template, n_boot=args.bootstrap,
        progress=not args.no_progress, data_seed=args.data_seed, samples=args.samples, temperature=args.temperature,
        seeds=args.seeds, fewshot_draws=args.fewshot_draws, skip_unavailable=args.skip_unavailable,
        cache=False if args.no_cache else (args.cache_dir or True),
        engine_args=engine_args, system_prompt=args.system_prompt, fewshot_as_multiturn=args.fewshot_as_multiturn,
        max_new_tokens=args.max_new_tokens, think=args.think or args.think_tags is not None,
        think_tags=tuple(args.think_tags or THINK_TAGS), shard=args.shard, permute_choices=args.permute_choices,
    )
    _print_evaluations(result.record)
    shard = result.record.get("shard")
    if shard:
        print(f"shard {shard['index']}/{shard['count']}: its metrics cover its part of the documents; "
              "'evalsuite merge' combines the folders of all its shards into the run")
    elif len({ev["variant"] for ev in result.record["evaluations"]}) > 1:
        from evalsuite.leaderboard import gather
        from evalsuite.leaderboard.variants import render_variants

        print()
        print(render_variants(gather([result.path])))
    print(f"results: {result.path}")
    return 0


def _print_evaluations(record: dict) -> None:
    """A line per evaluation with its main metric, where each task's documents came from, and the tasks skipped."""
    from evalsuite.results.records import data_sources

    for ev in record["evaluations"]:
        main = ev["metrics"][ev["main_metric"]]
        by_draw = ev.get("by_draw")  # the main metric of each few-shot draw alone
        draws = f"  by draw: {' '.join(f'{v:.3f}' for v in by_draw['values'])}" if by_draw else ""
        print(f"{ev['task']:<20} {ev['variant']:<10} n={ev['n']:<5} {ev['main_metric']}={main['value']:.3f} "
              f"[{main['low']:.3f}, {main['high']:.3f}]{draws}")
    for task, source in data_sources(record).items():
        print(f"{task:<20} data: {source}")
    for skipped in record.get("skipped", []):
        print(f"skipped {skipped['task']}: {skipped['reason']}")


def cmd_merge(args: argparse.Namespace) -> int:
    from evalsuite.pipeline.merge import merge

    result = merge(args.shards, args.output)
    _print_evaluations(result.record)
    print(f"merged {len(result.record['merged_from'])} shards: {result.path}")
    return 0


def cmd_finetune(args: argparse.Namespace) -> int:
    from evalsuite.finetune import TrainConfig, finetune

    config = TrainConfig(
        learning_rate=args.learning_rate, epochs=args.epochs, batch_size=args.batch_size,
        weight_decay=args.weight_decay, warmup_ratio=args.warmup_ratio, max_grad_norm=args.max_grad_norm,
        patience=args.patience, monitor=args.monitor, max_length=args.max_length, seed=args.seed,
        validation_fraction=args.validation_fraction, limit=args.limit, validation_limit=args.validation_limit,
        prompt=args.prompt, lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        lora_targets=tuple(t.strip() for t in args.lora_targets.split(",")) if args.lora_targets else None,
    )
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    folder = finetune(args.task, args.model, output=args.output, method=args.method, config=config,
                      data_dir=args.data_dir, task_dirs=args.task_dir, prompt_dirs=args.prompt_dir,
                      overwrite=args.overwrite, progress=not args.no_progress)
    card = json.loads((folder / "training_card.json").read_text())
    best = card["curve"][card["best_epoch"]]
    accuracy = best.get("validation_accuracy")
    print(f"best epoch {card['best_epoch']} of {card['epochs_run']}: validation loss {best['validation_loss']:.4f}"
          + (f", accuracy {accuracy:.4f}" if accuracy is not None else "") + f"; trained in {card['train_time_s']:.0f} s")
    flag = f"--model {folder}" if card["method"] == "classifier" else f"--model {card['base_model']['model']} --adapter {folder}"
    print(f"saved: {folder}\nevaluate: evalsuite run --mode fine-tuned {flag} --tasks {card['task']['name']}")
    return 0


def _engine_args(items: list[str]) -> dict:
    from evalsuite.errors import SpecError

    parsed = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise SpecError(f"--engine-arg {item!r}: expected KEY=VALUE with KEY a name, e.g. max_model_len=2048")
        try:
            parsed[key.strip()] = json.loads(value)
        except ValueError:
            parsed[key.strip()] = value
    return parsed


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from evalsuite.leaderboard import build_leaderboard

    written = build_leaderboard(args.runs, args.output, args.metric, absolute_paths=args.absolute_paths)
    for path in written.values():
        print(f"wrote {path}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from evalsuite.leaderboard.report import build_report

    print(f"wrote {build_report(args.runs, args.output, absolute_paths=args.absolute_paths)}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from evalsuite.leaderboard.compare import compare, parse_side, render_text
    from evalsuite.scoring import resolve_metric

    if args.metric != "main":
        resolve_metric(args.metric)
    runs, cache = args.runs or [Path("results")], {}
    result = compare(parse_side(args.a, runs, cache), parse_side(args.b, runs, cache), args.metric,
                     n_boot=args.bootstrap, seed=args.seed)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2, allow_nan=False, default=str))
    else:
        print(render_text(result), end="")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    from dataclasses import asdict
    from datetime import datetime

    from evalsuite.engines.cache import RequestCache

    with RequestCache(args.cache_dir) as cache:
        if args.cache_command == "clear":
            deleted = cache.clear(older_than_days=args.older_than, model=args.model)
            print(f"deleted {deleted} entries from {cache.path}; {len(cache)} left ({cache.size_bytes() / 1e6:.1f} MB)")
            return 0
        if args.cache_command == "merge":
            for source in args.sources:
                added, total = cache.merge_from(source)
                print(f"{source}: {added} of its {total} entries added ({total - added} were there already)")
            print(f"{cache.path}: {len(cache)} entries, {cache.size_bytes() / 1e6:.1f} MB")
            return 0
        models = cache.models()
        if args.json:
            print(json.dumps({"path": str(cache.path), "size_bytes": cache.size_bytes(),
                              "entries": sum(m.entries for m in models),
                              "models": [asdict(m) for m in models]}, indent=2))
            return 0
        print(f"{cache.path}: {sum(m.entries for m in models)} entries, {cache.size_bytes() / 1e6:.1f} MB")
        for m in models:
            newest = datetime.fromtimestamp(m.newest).strftime("%Y-%m-%d %H:%M")
            print(f"  {m.entries:>9}  {m.model_sha256[:12]}  {m.model}  (newest {newest})")
    return 0


COMMANDS = {"tasks": cmd_tasks, "show": cmd_show, "check": cmd_check, "new-task": cmd_new_task, "run": cmd_run,
            "merge": cmd_merge, "finetune": cmd_finetune, "leaderboard": cmd_leaderboard, "report": cmd_report,
            "compare": cmd_compare, "cache": cmd_cache}


def _interrupted(args: argparse.Namespace) -> str:
    if args.command != "run":
        return "evalsuite: interrupted"
    if args.no_cache:
        return ("evalsuite: interrupted; the run was not finished and used no cache (--no-cache): "
                "rerunning it starts over")
    from evalsuite.engines.cache import DB_NAME
    from evalsuite.engines.models import cache_dir

    where = (args.cache_dir or cache_dir()) / DB_NAME
    return (f"evalsuite: interrupted; the run was not finished. The answers computed so far are stored in {where}: "
            "rerun the same command to resume where it stopped")


def _stdout_reader_gone() -> bool:
    """Whether standard output is a pipe whose reading end was closed."""
    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError):  # not a real file (a test's capture), or closed
        return False


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from evalsuite.errors import EvalsuiteError, os_problem

    # evalsuite's own INFO messages (such as the request cache's hits) go to stderr; other libraries' do not.
    logger = logging.getLogger("evalsuite")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("evalsuite: %(message)s"))
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        status = COMMANDS[args.command](args)
        sys.stdout.flush()  # so that a reader gone away shows here, not as a traceback at exit
        return status
    except EvalsuiteError as exc:
        print(f"evalsuite: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
            # `evalsuite tasks | head`: the reader has all it wanted. Stop quietly, as tools killed by SIGPIPE do.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 128 + signal.SIGPIPE
        # A file or folder the user named (--output, --cache-dir, ...) that cannot be read or written.
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"evalsuite: error: {where}{' '.join(os_problem(exc).split())}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(_interrupted(args), file=sys.stderr)
        return 130
    finally:
        logger.removeHandler(handler)


if __name__ == "__main__":
    sys.exit(main())
