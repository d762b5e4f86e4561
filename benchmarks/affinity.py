"""Prefix affinity on and off over several vLLM servers: prefix-cache hit rate and documents per second.

    python benchmarks/affinity.py --urls http://127.0.0.1:8101,http://127.0.0.1:8102 --tasks copa --prompts cot
        --shots 5 [--fewshot-sampler fixed] [--max-new-tokens 32] [--limit 100] [--repeats 2] [--tokenizer smollm2]
        [--engine-arg KEY=VALUE]

Measure generation prompts: vLLM computes prompt log-probabilities (what log-likelihood scoring over
``/v1/completions`` asks for) without reading its prefix cache, so scoring runs show no prefix-cache queries.

The settings alternate (off, on, then on, off, ...) on the same servers. Each timed run uses a seed of its
own, so its few-shot examples (and with the ``fixed`` sampler, the prefix its documents share) are new to the
servers' caches: every run starts cold, and neither setting reuses what the other left. (vLLM's
``POST /reset_prefix_cache`` would empty the caches instead, but in vLLM 0.32 its prefix-cache counters stop
counting after it.) The hit rate is the servers' ``vllm:prefix_cache_hits_total`` over
``vllm:prefix_cache_queries_total`` (prompt tokens found in the cache over prompt tokens looked up) during
the run, read from ``/metrics``; documents per second count every document of every task over the run's wall
time. A last, untimed run with affinity on repeats the first run's seed and must give its scores.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time

import httpx

COUNTERS = ("vllm:prefix_cache_queries_total", "vllm:prefix_cache_hits_total")


def counters(url: str) -> dict[str, float]:
    """The prefix-cache counters of one server (summed over its engines)."""
    totals = dict.fromkeys(COUNTERS, 0.0)
    for line in httpx.get(url.rstrip("/") + "/metrics", timeout=30).text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in totals:
            totals[name] += float(line.rsplit(" ", 1)[1])
    return totals


def one_run(urls: list[str], affinity: bool, seed: int, args: argparse.Namespace, extra: dict) -> dict:
    from evalsuite import evaluate

    before = [counters(u) for u in urls]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as output:
        result = evaluate(",".join(urls), args.tasks, engine="server", shots=args.shots, limit=args.limit,
                          prompts=args.prompts, max_new_tokens=args.max_new_tokens, seed=seed,
                          fewshot_sampler=args.fewshot_sampler, engine_args={"tokenizer": args.tokenizer,
                                                                             "affinity": affinity, **extra},
                          output=output, progress=False, cache=False, n_boot=10)
    seconds = time.perf_counter() - started
    after = [counters(u) for u in urls]
    queries, hits = (sum(a[c] - b[c] for a, b in zip(after, before)) for c in COUNTERS)
    docs = sum(ev["n"] for ev in result.record["evaluations"])
    return {"affinity": affinity, "seed": seed, "docs": docs, "seconds": seconds, "docs_per_s": docs / seconds,
            "queries": queries, "hits": hits, "hit_rate": hits / queries if queries else 0.0,
            "answered": {u: c["answered"] for u, c in result.record["endpoints"].items()},
            "scores": {(ev["task"], ev["variant"]): ev["metrics"][ev["main_metric"]]["value"]
                       for ev in result.record["evaluations"]}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--urls", required=True, help="comma-separated server URLs")
    parser.add_argument("--tasks", default="copa")
    parser.add_argument("--prompts", default="cot")
    parser.add_argument("--shots", type=int, default=5)
    parser.add_argument("--fewshot-sampler", default="fixed")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--limit", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--tokenizer", default="smollm2")
    parser.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE")
    args = parser.parse_args()
    urls = [u.strip() for u in args.urls.split(",") if u.strip()]
    extra = {}
    for item in args.engine_arg:
        key, _, value = item.partition("=")
        try:
            extra[key] = json.loads(value)
        except ValueError:
            extra[key] = value

    print(f"{len(urls)} servers, {args.tasks} ({args.prompts}), {args.shots}-shot ({args.fewshot_sampler} sampler), "
          f"max {args.max_new_tokens} new tokens, first "
          f"{args.limit} documents, {len(os.sched_getaffinity(0))} CPU cores here")
    print(f"{'affinity':<9} {'docs':>5} {'seconds':>8} {'docs/s':>7} {'queried':>9} {'hits':>9} {'hit rate':>8}  "
          "answered per endpoint")
    runs = []
    for rep in range(args.repeats):
        for affinity in (False, True) if rep % 2 == 0 else (True, False):
            r = one_run(urls, affinity, 1 + len(runs), args, extra)
            runs.append(r)
            print(f"{'on' if affinity else 'off':<9} {r['docs']:>5} {r['seconds']:>8.1f} {r['docs_per_s']:>7.2f} "
                  f"{r['queries']:>9.0f} {r['hits']:>9.0f} {r['hit_rate']:>8.3f}  "
                  f"{', '.join(str(n) for n in r['answered'].values())}", flush=True)
    for affinity in (False, True):
        mine = [r for r in runs if r["affinity"] == affinity]
        print(f"median, affinity {'on' if affinity else 'off'}: "
              f"{statistics.median(r['docs_per_s'] for r in mine):.2f} docs/s, "
              f"hit rate {statistics.median(r['hit_rate'] for r in mine):.3f}")
    again = one_run(urls, not runs[0]["affinity"], runs[0]["seed"], args, extra)
    print("scores of the first run's seed identical with affinity on and off:", again["scores"] == runs[0]["scores"])


if __name__ == "__main__":
    main()
