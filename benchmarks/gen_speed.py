"""Chain-of-thought generation speed: evalsuite against lm-evaluation-harness ``generate_until``.

Both tools generate greedily with the same model (SmolLM2-135M-Instruct) from byte-identical prompts rendered
by evalsuite (a generated task's cot variant zero-shot, a data task's cot variant few-shot with the fixed
sampler), with the prompt's own token budget (lm-eval's ``max_gen_toks``) and stop strings (``until``).
lm-eval reads the prompts from a JSONL dataset through a generated task (as in mc_speed.py). The tools
alternate, one process per tool and repetition, each loading the model outside the timed part and warming
up on two documents. Printed per engine and case: generated tokens per second (tokens of the returned texts,
counted with the model's tokenizer for both tools), documents per second, the ratio, and how many greedy
outputs are identical.

Self-consistency: the transformers engine draws ``--samples`` answers per document of the first case at
``--temperature``, batched (at each of ``--sc-batch-sizes``, by default ``--batch-size``) and one sample at a
time (batch size 1, as sampled requests ran before they were batched); printed per batch size: the speedup,
and whether every sampled text is the same as one at a time.

    python benchmarks/gen_speed.py --lmeval-python benchmarks/.venv-lmeval/bin/python
    python benchmarks/gen_speed.py --engines hf --limit 10 --repeats 1      # a quick look

lm-eval==0.4.13 lives in an environment of its own (see mc_speed.py).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
from pathlib import Path

from mc_speed import EVALSUITE_LOAD, LMEVAL_LOAD, ROOT, lmeval_python, run_worker, worker_env, write_lmeval_task

CASES = "gen_syllogisms:cot:0,commonsenseqa:cot:3"  # task:variant:shots


# -- preparation ------------------------------------------------------------------------------------
def prepare(cases: list[str], limit: int, seed: int, data_dir: Path, out: Path, max_tokens: int | None) -> list[dict]:
    """Render every task × variant × shots once with evalsuite; write lm-eval task files beside the JSONL docs.

    Each case generates up to its prompt's token budget, or ``max_tokens`` when given."""
    sys.path.insert(0, str(ROOT))
    from evalsuite.api import load_tasks
    from evalsuite.data import load_split
    from evalsuite.pipeline.render import render_instances
    from evalsuite.prompting import PromptRenderer

    catalog = load_tasks()
    prepared = []
    for item in cases:
        name, variant, shots = item.split(":")
        task = catalog[name]
        prompt = task.prompt(variant)
        instances, _, _ = render_instances(
            task, PromptRenderer(task, prompt), lambda t, s: load_split(t, s, data_dir), shots=int(shots), seed=seed,
            limit=limit, sampler="fixed" if int(shots) else None,
        )
        case = f"gen_{name}_{variant}_{shots}shot"
        budget = max_tokens or prompt.max_tokens
        docs = [{"context": i.context} for i in instances]
        # JSON strings are YAML strings: stop strings keep their newlines exactly.
        write_lmeval_task(out, case, docs, "output_type: generate_until\ndoc_to_text: context\ndoc_to_target: ''\n"
                          "target_delimiter: ''\ngeneration_kwargs:\n"
                          f"  until: {json.dumps(list(prompt.stop))}\n  max_gen_toks: {budget}\n  do_sample: false\n"
                          "  temperature: 0.0\nmetric_list:\n  - metric: exact_match\n")
        prepared.append({"case": case, "task": name, "variant": variant, "shots": int(shots), "docs": docs,
                         "max_tokens": budget, "stop": list(prompt.stop)})
    return prepared


# -- workers (each runs in its own process) ----------------------------------------------------------
EVALSUITE_WORKER = EVALSUITE_LOAD + r"""
from evalsuite.engines import GenerationRequest, encode_context
samples, temperature = spec.get("samples", 1), spec.get("temperature", 0.0)

def requests(case, docs):
    # As the pipeline asks: sample k of every document has seed seed * 1000 + k.
    return [GenerationRequest(encode_context(engine.tokenizer, d["context"]), case["max_tokens"], tuple(case["stop"]),
                              temperature, 1000 + k) for d in docs for k in range(samples)]

first = spec["cases"][0]
engine.generate([GenerationRequest(r.context, 16, r.stop, r.temperature, r.seed) for r in requests(first, first["docs"][:2])])
out = {"load_s": load_s, "cases": {}}
for case in spec["cases"]:
    t0 = time.perf_counter()
    texts = engine.generate(requests(case, case["docs"]))
    out["cases"][case["case"]] = {"seconds": time.perf_counter() - t0, "texts": texts}
if hasattr(engine, "close"):
    engine.close()
json.dump(out, open(OUT, "w"))
"""

LMEVAL_WORKER = LMEVAL_LOAD + r"""
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
manager = TaskManager(include_path=spec["task_dir"])
out = {"load_s": load_s, "cases": {}}
simple_evaluate(model=lm, tasks=[spec["cases"][0]["case"]], task_manager=manager, limit=2, bootstrap_iters=0,
                num_fewshot=0, gen_kwargs="max_gen_toks=16")
for case in spec["cases"]:
    t0 = time.perf_counter()
    result = simple_evaluate(model=lm, tasks=[case["case"]], task_manager=manager, log_samples=True,
                             bootstrap_iters=0, num_fewshot=0)
    seconds = time.perf_counter() - t0
    samples = sorted(result["samples"][case["case"]], key=lambda s: s["doc_id"])
    out["cases"][case["case"]] = {"seconds": seconds, "texts": [s["resps"][0][0] for s in samples]}
json.dump(out, open(OUT, "w"))
"""


def count_tokens(tokenizer, texts: list[str]) -> int:
    return sum(len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default=CASES, help="task:variant:shots, comma-separated")
    parser.add_argument("--limit", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=None, help="token budget of every case (default: the prompt's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--engines", default="hf,vllm")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--samples", type=int, default=8, help="self-consistency samples per document (0: skip)")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--sc-limit", type=int, default=8, help="documents of the first case for self-consistency")
    parser.add_argument("--sc-batch-sizes", default=None, help="batch sizes of self-consistency, comma-separated "
                        "(default: --batch-size)")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("EVALSUITE_DATA_DIR", ROOT.parent / "shared" / "data")))
    parser.add_argument("--lmeval-python", default=None, help="python of an environment with lm-eval==0.4.13")
    parser.add_argument("--skip-lmeval", action="store_true")
    parser.add_argument("--json", type=Path, default=None, help="also write all figures here")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from transformers import AutoTokenizer

    from evalsuite.engines.models import resolve_model

    model = resolve_model("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(model)
    workdir = Path(tempfile.mkdtemp(prefix="gen-speed-"))
    cases = prepare(args.cases.split(","), args.limit, args.seed, args.data_dir, workdir, args.max_tokens)
    env = worker_env()
    engines = [e for e in args.engines.split(",") if e]  # none: self-consistency only

    def spec(engine: str, **extra) -> dict:
        return {"model": model, "engine": engine, "dtype": args.dtype, "batch_size": args.batch_size,
                "task_dir": str(workdir), "cases": cases,
                "engine_args": {"max_model_len": 2048, "gpu_memory_utilization": 0.3} if engine == "vllm" else {},
                **extra}

    runs_of: dict[tuple[str, str], tuple[str, str, dict]] = {}  # (engine, tool) -> worker
    for engine in engines:
        runs_of[engine, "evalsuite"] = (sys.executable, EVALSUITE_WORKER, spec(engine))
        if not args.skip_lmeval:
            runs_of[engine, "lm-eval"] = (lmeval_python(args.lmeval_python, engine), LMEVAL_WORKER, spec(engine))
    if args.samples > 1:
        sc_cases = [{**cases[0], "docs": cases[0]["docs"][: args.sc_limit]}]
        sc_sizes = [int(n) for n in (args.sc_batch_sizes or str(args.batch_size)).split(",")]
        for size in [*sc_sizes, 1]:
            runs_of["self-consistency", f"batch size {size}"] = (sys.executable, EVALSUITE_WORKER, {
                **spec("hf", samples=args.samples, temperature=args.temperature), "batch_size": size,
                "cases": sc_cases})
    runs: dict[tuple[str, str], list[dict]] = {key: [] for key in runs_of}
    for rep in range(args.repeats):
        for key, (python, source, worker_spec) in runs_of.items():  # alternate the tools
            print(f"repetition {rep + 1}/{args.repeats}: {' '.join(key)} ...", file=sys.stderr, flush=True)
            runs[key].append(run_worker(python, source, worker_spec, workdir, env))
            timed = ", ".join(f"{name} {c['seconds']:.1f} s" for name, c in runs[key][-1]["cases"].items())
            print(f"    {timed}", file=sys.stderr, flush=True)  # each run's times, not only the medians

    import torch

    def figures(key: tuple[str, str], case: dict) -> dict:
        name = case["case"]
        seconds = statistics.median(r["cases"][name]["seconds"] for r in runs[key])
        texts = runs[key][0]["cases"][name]["texts"]
        return {"seconds": seconds, "texts": texts, "docs_per_s": len(case["docs"]) / seconds,
                "tokens_per_s": count_tokens(tokenizer, texts) / seconds}

    rows = []
    print(f"\nmodel SmolLM2-135M-Instruct, {args.dtype}, greedy, {args.limit} documents per case, batch size "
          f"{args.batch_size} (hf), median of {args.repeats} runs; torch {torch.__version__}, {os.cpu_count()} CPU "
          "threads\n")
    header = "| engine | case | budget | evalsuite tok/s | docs/s |"
    if not args.skip_lmeval:
        header += " lm-eval tok/s | docs/s | docs/s ratio | identical outputs |"
    if engines:
        print(header)
        print("|" + "---|" * (header.count("|") - 1))
    for engine in engines:
        for case in cases:
            a = figures((engine, "evalsuite"), case)
            row = {"engine": engine, "case": case["case"], "evalsuite": a}
            line = (f"| {engine} | {case['task']} {case['variant']} {case['shots']}-shot | {case['max_tokens']} |"
                    f" {a['tokens_per_s']:.1f} | {a['docs_per_s']:.3f} |")
            if not args.skip_lmeval:
                b = figures((engine, "lm-eval"), case)
                same = sum(x == y for x, y in zip(a["texts"], b["texts"]))
                row.update({"lm-eval": b, "ratio": a["docs_per_s"] / b["docs_per_s"], "identical": same})
                line += (f" {b['tokens_per_s']:.1f} | {b['docs_per_s']:.3f} | {row['ratio']:.2f}× |"
                         f" {same}/{len(a['texts'])} |")
            print(line)
            rows.append(row)
    if args.samples > 1:
        case = runs_of["self-consistency", "batch size 1"][2]["cases"][0]
        alone = figures(("self-consistency", "batch size 1"), case)
        print(f"\nself-consistency, hf: {len(case['docs'])} documents of {case['task']} {case['variant']} × "
              f"{args.samples} samples at temperature {args.temperature}; one at a time {alone['seconds']:.1f} s "
              f"({alone['tokens_per_s']:.1f} tok/s)")
        for size in sc_sizes:
            batched = figures(("self-consistency", f"batch size {size}"), case)
            same = sum(x == y for x, y in zip(batched["texts"], alone["texts"]))
            speedup = alone["seconds"] / batched["seconds"]
            print(f"    batch size {size}: {batched['seconds']:.1f} s ({batched['tokens_per_s']:.1f} tok/s), speedup "
                  f"{speedup:.2f}×; sampled texts identical to one at a time: {same}/{len(batched['texts'])}")
            rows.append({"self_consistency": {"batch_size": size, "batched": batched, "one_at_a_time": alone,
                                              "speedup": speedup, "identical": same}})
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
