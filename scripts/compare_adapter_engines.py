"""Evaluate a LoRA adapter with the transformers engine and with vLLM, and compare per-sample scores.

    python scripts/compare_adapter_engines.py --model smollm2 --adapter checkpoints/SmolLM2-135M-Instruct-rte-lora \
        --tasks rte --limit 300 --data-dir ../shared/data --output results/

Both runs go through ``evalsuite.evaluate`` (``--mode fine-tuned --adapter``), so their run folders join a
leaderboard. With ``--vllm-reference raw`` the vLLM side is scored by vLLM's own API on the token ids the
pipeline builds (``encode_choices``), without evalsuite's vLLM engine. Prints, per task, both engines'
accuracy, the largest and mean absolute difference of per-choice log-likelihoods, and how many predictions
agree; exits 1 when a difference exceeds ``--tolerance`` or a prediction differs.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def raw_vllm_logprobs(model: str, adapter: str, samples: list[dict], rank: int) -> list[list[float]]:
    """Per-choice log-likelihoods from vLLM's API (prompt_logprobs) with the adapter as a LoRARequest."""
    from transformers import AutoTokenizer
    from vllm import LLM, SamplingParams
    from vllm.inputs import TokensPrompt
    from vllm.lora.request import LoRARequest

    from evalsuite.engines import encode_choices
    from evalsuite.engines.models import resolve_model

    path = resolve_model(model)
    tokenizer = AutoTokenizer.from_pretrained(path)
    prompts, owners = [], []
    for index, sample in enumerate(samples):
        request = encode_choices(tokenizer, sample["prompt"], sample["choices"])
        for continuation in request.continuations:
            prompts.append(TokensPrompt(prompt_token_ids=list(request.context) + list(continuation)))
            owners.append((index, len(continuation)))
    llm = LLM(model=path, dtype="float32", max_model_len=2048, enforce_eager=True, gpu_memory_utilization=0.3,
              enable_lora=True, max_lora_rank=max(rank, 8), max_loras=1, enable_prefix_caching=False)
    outputs = llm.generate(prompts, SamplingParams(temperature=0, max_tokens=1, prompt_logprobs=0),
                           lora_request=LoRARequest("adapter", 1, str(Path(adapter).resolve())))
    scores: list[list[float]] = [[] for _ in samples]
    for output, prompt, (index, length) in zip(outputs, prompts, owners):
        ids = prompt["prompt_token_ids"]
        entries = output.prompt_logprobs[-length:]
        scores[index].append(sum(entry[token].logprob for entry, token in zip(entries, ids[-length:])))
    return scores


def main() -> int:
    from evalsuite import evaluate
    from evalsuite.results import read_samples

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--adapter", required=True)
    parser.add_argument("--tasks", required=True)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--output", default="results")
    parser.add_argument("--vllm-reference", choices=("engine", "raw"), default="engine",
                        help="engine: evalsuite's vllm engine (default); raw: vLLM's API on the pipeline's token ids")
    parser.add_argument("--tolerance", type=float, default=2e-3, help="largest allowed |log-likelihood difference|")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the transformers engine")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)

    # No request cache: the cache shares greedy answers across engines, so the second engine would only
    # read the first one's answers back.
    common = dict(mode="fine-tuned", adapter=args.adapter, limit=args.limit, data_dir=args.data_dir,
                  output=args.output, progress=False, cache=False)
    hf_run = evaluate(args.model, args.tasks, engine="hf", **common)
    hf = read_samples(hf_run.path)
    if args.vllm_reference == "engine":
        vllm_run = evaluate(args.model, args.tasks, engine="vllm", **common)
        vllm = [s["logprobs"] for s in read_samples(vllm_run.path)]
        print(f"runs: hf {hf_run.path}, vllm {vllm_run.path}")
    else:
        rank = json.loads((Path(args.adapter) / "adapter_config.json").read_text())["r"]
        vllm = raw_vllm_logprobs(args.model, args.adapter, hf, rank)
        print(f"runs: hf {hf_run.path}; vllm scored through its own API")

    failed = False
    print(f"{'task':<16} {'n':>5} {'hf acc':>8} {'vllm acc':>9} {'max |dlp|':>10} {'mean |dlp|':>11} {'same pred':>10}")
    for task in dict.fromkeys(s["task"] for s in hf):
        rows = [(s, v) for s, v in zip(hf, vllm) if s["task"] == task]
        a = np.array([s["logprobs"] for s, _ in rows], dtype=float)
        b = np.array([v for _, v in rows], dtype=float)
        gold = np.array([s["gold"] for s, _ in rows])
        pa, pb = a.argmax(axis=1), b.argmax(axis=1)
        diff = np.abs(a - b)
        same = int((pa == pb).sum())
        print(f"{task:<16} {len(rows):>5} {np.mean(pa == gold):>8.4f} {np.mean(pb == gold):>9.4f} "
              f"{diff.max():>10.2e} {diff.mean():>11.2e} {same:>5}/{len(rows)}")
        failed |= bool(diff.max() > args.tolerance or same != len(rows))
    print("MATCH" if not failed else f"MISMATCH (tolerance {args.tolerance})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
