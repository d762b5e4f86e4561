"""Peak memory and speed of a generated task as its size grows: memory must not grow with the documents.

A user task folder in a temporary directory holds a copy of a generated task (default ``gen_propositional``,
the shortest prompts) whose test split has n documents. Each n is evaluated in a fresh process through the
real pipeline (``evalsuite.evaluate``, the ``hf`` engine, request cache off, default ``n_boot``), which
reports its peak resident memory (``ru_maxrss``) once the model is loaded and at the end, and documents per
second over the whole ``evaluate`` call (data generation, prompts, model, samples file, metrics).

The model is a one-layer Llama of hidden size 32 with random weights and the tests' byte tokenizer
(``tests/tiny_models.py``): a real transformers model, fast enough for 100,000 documents on a CPU. What is
measured is the pipeline's memory, not the model's; a real model adds its weights and activations, which do
not depend on the number of documents either.

    python benchmarks/memory.py                                  # n = 1000, 10000, 100000
    python benchmarks/memory.py --sizes 1000 10000 --task gen_syllogisms
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def smallest_llama(folder: Path) -> Path:
    """A one-layer Llama (hidden size 32) with random weights and the tests' byte tokenizer."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    sys.path.insert(0, str(ROOT / "tests"))
    from tiny_models import byte_tokenizer

    tokenizer = byte_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
        num_attention_heads=1, num_key_value_heads=1, head_dim=32, max_position_embeddings=1024,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def child(model: Path, task: str, task_dir: Path, output: Path, batch_size: int) -> None:
    """One evaluation in this process; prints one JSON line."""
    sys.path.insert(0, str(ROOT))
    from evalsuite import evaluate
    from evalsuite.engines import load_engine

    engine = load_engine("hf", str(model), batch_size=batch_size)
    loaded = peak_mib()
    started = time.perf_counter()
    run = evaluate(str(model), task, engine=engine, task_dirs=[task_dir], output=output, cache=False, progress=False)
    seconds = time.perf_counter() - started
    [ev] = run.record["evaluations"]
    print(json.dumps({"n": ev["n"], "loaded_mib": loaded, "peak_mib": peak_mib(), "seconds": seconds,
                      "accuracy": ev["metrics"]["accuracy"]["value"]}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--task", default="gen_propositional", help="a generated built-in task")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", nargs=4, metavar=("MODEL", "TASK", "TASK_DIR", "OUTPUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        model, task, task_dir, output = args.child
        return child(Path(model), task, Path(task_dir), Path(output), args.batch_size)

    spec = yaml.safe_load((next((ROOT / "tasks").rglob(f"{args.task}.yaml"))).read_text())
    with tempfile.TemporaryDirectory() as tmp:
        model = smallest_llama(Path(tmp) / "model")
        print(f"task {args.task}, hf engine on a one-layer random Llama, batch size {args.batch_size}, cache off")
        print("| documents | peak RSS after model load (MiB) | peak RSS (MiB) | growth (MiB) | seconds | docs/s |")
        print("|---:|---:|---:|---:|---:|---:|")
        for n in args.sizes:
            spec["source"]["generated"]["splits"]["test"]["n"] = n
            task_dir = Path(tmp) / f"tasks-{n}"
            task_dir.mkdir()
            (task_dir / f"{args.task}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
            command = [sys.executable, __file__, "--batch-size", str(args.batch_size),
                       "--child", str(model), args.task, str(task_dir), str(Path(tmp) / "runs")]
            done = subprocess.run(command, capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"n = {n} failed:\n{done.stderr}")
            row = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"| {row['n']:,} | {row['loaded_mib']:.0f} | {row['peak_mib']:.0f} | "
                  f"{row['peak_mib'] - row['loaded_mib']:.0f} | {row['seconds']:.1f} | {row['n'] / row['seconds']:.0f} |",
                  flush=True)


if __name__ == "__main__":
    main()
