"""Engine start time and documents per second, transformers (hf) against vLLM, on one task.

    python benchmarks/engines.py --model smollm2 --task copa --prompt plain --limit 100 [--shots 0]
        [--engines hf,vllm] [--engine-arg vllm:data_parallel_size=2] [--data-dir DIR]

Both engines score the same token ids (the pipeline's), so the script also prints how far apart their
per-choice log-likelihoods are and whether their predictions agree.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np


def requests_for(tokenizer, task_name: str, prompt: str, limit: int, shots: int, data_dir: str | None):
    from evalsuite.api import load_tasks
    from evalsuite.pipeline.render import render_instances
    from evalsuite.data import default_data_dir, load_split
    from evalsuite.engines import encode_choices
    from evalsuite.prompting import PromptRenderer

    task = load_tasks()[task_name]
    folder = data_dir or default_data_dir()
    instances, _, _ = render_instances(task, PromptRenderer(task, task.prompt(prompt)), lambda t, s: load_split(t, s, folder),
                                 shots=shots, seed=0, limit=limit, sampler=None)
    return [encode_choices(tokenizer, i.context, i.continuations) for i in instances]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--task", default="copa")
    parser.add_argument("--prompt", default="plain")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--shots", type=int, default=0)
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--engine-arg", action="append", default=[], metavar="ENGINE:KEY=VALUE")
    parser.add_argument("--data-dir", default=os.environ.get("EVALSUITE_DATA_DIR"))
    args = parser.parse_args()

    from evalsuite.engines import load_engine

    options: dict[str, dict] = {}
    for item in args.engine_arg:
        engine, _, pair = item.partition(":")
        key, _, value = pair.partition("=")
        try:
            options.setdefault(engine, {})[key] = json.loads(value)
        except ValueError:
            options.setdefault(engine, {})[key] = value

    scores = {}
    print(f"{args.model}, {args.task}/{args.prompt}, {args.shots}-shot, first {args.limit} documents, "
          f"{len(os.sched_getaffinity(0))} CPU cores")
    print(f"{'engine':<8} {'start_s':>8} {'score_s':>8} {'docs/s':>8}  notes")
    for name in args.engines.split(","):
        started = time.perf_counter()
        engine = load_engine(name, args.model, **options.get(name, {}))
        start_s = time.perf_counter() - started
        requests = requests_for(engine.tokenizer, args.task, args.prompt, args.limit, args.shots, args.data_dir)
        started = time.perf_counter()
        scores[name] = engine.loglikelihood(requests)
        score_s = time.perf_counter() - started
        notes = dict(getattr(engine, "stats", {}))
        print(f"{name:<8} {start_s:>8.1f} {score_s:>8.1f} {len(requests) / score_s:>8.2f}  {notes or ''}", flush=True)
        if hasattr(engine, "close"):
            engine.close()
    if len(scores) > 1:
        (a, sa), (b, sb) = list(scores.items())[:2]
        diff = max(abs(x.logprob - y.logprob) for ra, rb in zip(sa, sb) for x, y in zip(ra, rb))
        same = sum(int(np.argmax([s.logprob for s in ra])) == int(np.argmax([s.logprob for s in rb])) for ra, rb in zip(sa, sb))
        print(f"{a} vs {b}: largest per-choice log-likelihood difference {diff:.2e}; same prediction on {same}/{len(sa)}")


if __name__ == "__main__":  # vLLM starts processes of its own
    main()
