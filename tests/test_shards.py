"""A run split into shards (``run --shard i/N``) and merged (``evalsuite merge``) equals the unsharded run; merge
refuses incomplete and mismatched sets; leaderboards refuse shards; request caches merge."""

from __future__ import annotations

import functools
import json
import sqlite3

import pytest

from evalsuite.api import evaluate
from evalsuite.cli import main
from evalsuite.engines.cache import DB_NAME, RequestCache
from evalsuite.errors import EngineError, EvalsuiteError, SpecError
from evalsuite.leaderboard import gather
from evalsuite.pipeline.merge import merge
from evalsuite.pipeline.render import shard_range
from evalsuite.results import find_runs, read_samples
from test_chunks import ContentEngine

# What a merged run's results.json may differ in from the unsharded run's: its identity and time, the time
# the work took and the cache's counts (summed over the shards), and the names of its shards.
RUN_SPECIFIC = {"run_id", "created", "timings", "cache", "merged_from"}
EVALUATION_SPECIFIC = {"timing_s", "docs_per_s"}

CASES = {
    "few-shot, every variant, a few-shot split of its own": dict(tasks="copa,rte", shots=2, limit=20, prompts="all"),
    "generated task, balanced few-shot from its train split": dict(tasks="gen_deduction", shots=3, limit=17,
                                                                    prompts="plain,cot"),
    "self-consistency": dict(tasks="gen_syllogisms", prompts="cot", samples=3, temperature=0.7, limit=10),
    "graded task": dict(tasks="stsb", limit=11),
    "clustered task (intervals resample stories)": dict(tasks="folio", limit=14),
    "few-shot draws": dict(tasks="copa", shots=2, limit=10, fewshot_draws=3),
    "classification head": dict(tasks="rte", mode="fine-tuned", limit=13, head=True),
}


@pytest.fixture(autouse=True)
def catalog_read_once(monkeypatch):
    """The task catalog read once for the many runs here, not once per run (its specs are frozen)."""
    import evalsuite.pipeline as pipeline

    monkeypatch.setattr(pipeline, "load_tasks", _catalog)


@functools.cache
def _catalog(task_dirs, prompt_dirs):
    from evalsuite.spec import load_tasks

    return load_tasks(task_dirs, prompt_dirs)


@pytest.fixture(scope="module")
def byte_tok():
    from tiny_models import byte_tokenizer

    return byte_tokenizer()


def _run(tmp_path, data_dir, byte_tok, folder, head=False, **options):
    options = {"n_boot": 200, "seed": 3, "cache": False, **options}
    return evaluate("scripted", engine=ContentEngine(byte_tok, head), data_dir=data_dir, output=tmp_path / folder,
                    progress=False, **options)


def _shards(tmp_path, data_dir, byte_tok, count=3, folder="shards", **options):
    return [_run(tmp_path, data_dir, byte_tok, folder, shard=f"{i}/{count}", **options) for i in range(count)]


def _differences(a: dict, b: dict) -> set[str]:
    """The keys where two results.json records differ (``evaluations.KEY`` for a key inside an evaluation)."""
    found = {key for key in set(a) | set(b) if key != "evaluations" and a.get(key) != b.get(key)}
    assert len(a["evaluations"]) == len(b["evaluations"])
    for x, y in zip(a["evaluations"], b["evaluations"]):
        found |= {f"evaluations.{key}" for key in set(x) | set(y) if x.get(key) != y.get(key)}
    return found


@pytest.mark.parametrize("case", CASES)
def test_merged_shards_equal_the_unsharded_run(case, tmp_path, data_dir, byte_tok):
    options = dict(CASES[case])
    whole = _run(tmp_path, data_dir, byte_tok, "whole", **options)
    shards = _shards(tmp_path, data_dir, byte_tok, **options)
    merged = merge([s.path for s in reversed(shards)], tmp_path / "merged")  # any order of folders

    # Every shard is a normal run folder holding its contiguous part of each task's documents.
    n = whole.record["evaluations"][0]["n"]
    for i, shard in enumerate(shards):
        part = shard_range(n, (i, 3))
        assert shard.record["shard"]["index"] == i and shard.record["shard"]["count"] == 3
        assert {s["doc_id"] for s in read_samples(shard.path)} == set(part)
        assert all(ev["n"] == len(part) for ev in shard.record["evaluations"])
    assert (merged.path / "samples.jsonl").read_bytes() == (whole.path / "samples.jsonl").read_bytes()
    assert merged.record["merged_from"] == [s.record["run_id"] for s in shards]
    assert _differences(merged.record, whole.record) <= RUN_SPECIFIC | {f"evaluations.{k}" for k in EVALUATION_SPECIFIC}
    metrics = [[ev["metrics"] for ev in run.record["evaluations"]] for run in (merged, whole)]
    assert metrics[0] == metrics[1]
    assert [ev.get("cluster") for ev in merged.record["evaluations"]] == [
        ev.get("cluster") for ev in whole.record["evaluations"]]
    # The shards' run ids and the merged run's share the digest of the configuration and weights.
    assert {r.record["run_id"][-8:] for r in [whole, merged, *shards]} == {whole.record["run_id"][-8:]}
    # Written as on disk, the merged record is the one returned.
    assert json.loads((merged.path / "results.json").read_text()) == merged.record


def test_merge_refuses_incomplete_duplicated_and_mismatched_sets(tmp_path, data_dir, byte_tok, capsys):
    options = dict(tasks="copa", shots=2, limit=12)
    shards = _shards(tmp_path, data_dir, byte_tok, **options)
    other_seed = _run(tmp_path, data_dir, byte_tok, "other", shard="1/3", **{**options, "seed": 4})
    four = _run(tmp_path, data_dir, byte_tok, "four", shard="1/4", **options)
    whole = _run(tmp_path, data_dir, byte_tok, "whole", **options)
    out = tmp_path / "merged"

    def refused(*folders) -> str:
        assert main(["merge", *map(str, folders), "--output", str(out)]) == 2
        message = capsys.readouterr().err
        assert message.startswith("evalsuite: error: ") and message.count("\n") == 1  # one line, no traceback
        return message

    paths = [s.path for s in shards]
    message = refused(paths[0], paths[2])
    assert "incomplete: shard 1/3 is missing (given: 0/3, 2/3): run the same command with --shard 1/3" in message
    message = refused(paths[0], paths[1], paths[1], paths[2])
    assert f"{paths[1]} (shard 1/3) is given twice" in message
    message = refused(paths[0], other_seed.path, paths[2])
    assert str(other_seed.path) in message and "config.seed is 4 in the first and 3 in the second" in message
    message = refused(paths[0], four.path, paths[2])
    assert str(four.path) in message and "share their count" in message
    message = refused(paths[0], whole.path, paths[2])
    assert f"{whole.path} is a whole run, not a shard" in message
    assert not out.exists()  # nothing written by a refused merge
    # A shard whose samples are not its part of the documents (a truncated file, say) is refused too.
    samples = paths[1] / "samples.jsonl"
    samples.write_text("".join(samples.read_text().splitlines(keepends=True)[:-1]))
    message = refused(*paths)
    assert str(samples) in message and "documents 4 to 7 of 12" in message
    assert not out.exists()


def test_a_shard_without_documents_is_refused_before_the_model_loads(tmp_path, data_dir):
    with pytest.raises(SpecError, match=r"--shard 0/3: task 'copa' has 2 documents to evaluate, too few for 3"):
        evaluate("no-such-model", "copa", limit=2, shard="0/3", data_dir=data_dir, output=tmp_path, progress=False)
    for bad in ("3/3", "1", "-1/2", "a/b"):
        with pytest.raises(SpecError, match="expected INDEX/COUNT with 0 <= INDEX < COUNT"):
            evaluate("no-such-model", "copa", shard=bad, data_dir=data_dir, output=tmp_path)
    assert not list(tmp_path.iterdir())


def test_leaderboards_refuse_a_shard_and_take_the_merged_run(tmp_path, data_dir, byte_tok, capsys):
    shards = _shards(tmp_path, data_dir, byte_tok, count=2, tasks="rte", limit=10)
    with pytest.raises(EvalsuiteError, match=r"shard 0/2 of a run, not a whole run: combine its set with 'evalsuite "
                                             r"merge"):
        gather([shards[0].path])
    assert main(["compare", str(shards[0].path), str(shards[1].path)]) == 2
    assert "shard 0/2 of a run, not a whole run" in capsys.readouterr().err
    merged = merge([s.path for s in shards], tmp_path / "merged")
    long = gather([merged.path])
    assert list(long["n"]) == [10] and find_runs([tmp_path / "merged"]) == [merged.path]


def test_shard_caches_merge_into_the_cache_of_the_unsharded_run(tmp_path, data_dir, byte_tok, capsys):
    options = dict(tasks="copa,gen_deduction", shots=2, limit=9, prompts="plain,cot")
    _run(tmp_path, data_dir, byte_tok, "whole", cache=tmp_path / "cache-whole", **options)
    shard_caches = [tmp_path / f"cache-{i}" for i in range(3)]
    for i, cache in enumerate(shard_caches):
        _run(tmp_path, data_dir, byte_tok, "shards", cache=cache, shard=f"{i}/3", **options)

    merged = tmp_path / "cache-merged"
    assert main(["cache", "merge", *map(str, shard_caches), "--cache-dir", str(merged)]) == 0
    printed = capsys.readouterr().out
    sizes = [len(RequestCache(c)) for c in shard_caches]
    assert all(f"{c}: {n} of its {n} entries added" in printed for c, n in zip(shard_caches, sizes))

    def rows(folder):
        with sqlite3.connect(folder / DB_NAME) as db:
            return set(db.execute("SELECT key, kind, model_sha256, model, answer FROM answers"))

    assert rows(merged) == rows(tmp_path / "cache-whole") and len(rows(merged)) == sum(sizes)
    # Merging again adds nothing; the unsharded run rerun on the merged cache computes nothing.
    assert main(["cache", "merge", str(shard_caches[0]), "--cache-dir", str(merged)]) == 0
    assert f"0 of its {sizes[0]} entries added" in capsys.readouterr().out
    rerun = _run(tmp_path, data_dir, byte_tok, "rerun", cache=merged, **options)
    assert rerun.record["cache"]["computed"] == 0 and rerun.record["cache"]["hits"] == rerun.record["cache"]["requests"]


def test_cache_merge_refuses_what_is_not_another_cache(tmp_path):
    with RequestCache(tmp_path / "into") as cache:
        with pytest.raises(EngineError, match=r"no request cache there \(no requests.sqlite\)"):
            cache.merge_from(tmp_path / "nowhere")
        with pytest.raises(EngineError, match="this is the cache merged into"):
            cache.merge_from(tmp_path / "into")
        (tmp_path / "junk").mkdir()
        (tmp_path / "junk" / DB_NAME).write_bytes(b"not a database, only some bytes" * 100)
        with pytest.raises(EngineError, match=r"junk/requests.sqlite: cannot merge it .* is it an evalsuite request"):
            cache.merge_from(tmp_path / "junk")
        assert len(cache) == 0


def test_real_model_shards_merge_to_the_unsharded_run(tmp_path, data_dir, hf_smollm2):
    """SmolLM2 through the transformers engine. A shard batches other documents together than the unsharded run
    does, and float32 sums in another order can move a log-likelihood in its last digits (up to 2e-5 seen with 30
    documents, as another --batch-size does): everything else in the samples, and every metric, is the same."""
    options = dict(tasks="copa", shots=2, limit=4, n_boot=200, cache=False, progress=False, data_dir=data_dir)
    whole = evaluate("smollm2", engine=hf_smollm2, output=tmp_path / "whole", **options)
    shards = [evaluate("smollm2", engine=hf_smollm2, output=tmp_path / "shards", shard=f"{i}/2", **options)
              for i in range(2)]
    merged = merge([s.path for s in shards], tmp_path / "merged")
    merged_samples, whole_samples = read_samples(merged.path), read_samples(whole.path)
    assert len(merged_samples) == len(whole_samples) == 4
    for x, y in zip(merged_samples, whole_samples):
        assert {k: v for k, v in x.items() if k != "logprobs"} == {k: v for k, v in y.items() if k != "logprobs"}
        assert x["logprobs"] == pytest.approx(y["logprobs"], rel=0, abs=1e-4)
    assert _differences(merged.record, whole.record) <= RUN_SPECIFIC | {f"evaluations.{k}" for k in EVALUATION_SPECIFIC}
    assert merged.record["model"]["model_sha256"] == whole.record["model"]["model_sha256"]
