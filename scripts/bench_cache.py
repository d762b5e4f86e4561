"""The request cache's own cost per request: computing keys, storing answers, looking them up.

    PYTHONPATH=. python scripts/bench_cache.py [--requests 5000] [--context 1000]

Prints microseconds per request for each step and the database size; no model is involved.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from evalsuite.engines.base import ContinuationScore, LoglikelihoodRequest
from evalsuite.engines.cache import RequestCache, _encode_scores, request_key


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5000)
    parser.add_argument("--context", type=int, default=1000, help="context tokens per request")
    args = parser.parse_args()
    rng = random.Random(0)
    requests = [LoglikelihoodRequest(tuple(rng.randrange(50_000) for _ in range(args.context)),
                                     tuple(tuple(rng.randrange(50_000) for _ in range(5)) for _ in range(4)))
                for _ in range(args.requests)]
    described = {"engine": "hf", "model_sha256": "a" * 64, "dtype": "float32", "max_length": 8192}
    answer = _encode_scores([ContinuationScore(-12.345678901234, False, 5)] * 4)
    with tempfile.TemporaryDirectory() as folder, RequestCache(folder) as cache:
        started = time.perf_counter()
        keys = [request_key(r, described) for r in requests]
        keyed = time.perf_counter()
        for key in keys:
            cache.put(key, "loglikelihood", described["model_sha256"], "/models/m", answer)
        stored = time.perf_counter()
        found = cache.get_many(keys)
        looked_up = time.perf_counter()
        assert len(found) == len(keys)
        per = 1e6 / len(keys)
        print(f"{len(keys)} requests, {args.context} context tokens each")
        print(f"key:    {(keyed - started) * per:8.1f} us/request")
        print(f"store:  {(stored - keyed) * per:8.1f} us/answer (one transaction each)")
        print(f"lookup: {(looked_up - stored) * per:8.1f} us/answer")
        print(f"size:   {cache.size_bytes() / len(keys):8.0f} bytes/answer")


if __name__ == "__main__":
    main()
