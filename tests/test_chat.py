"""Chat runs without vLLM: the chat engine against a scripted OpenAI-compatible server (a real http.server on
127.0.0.1), and the transformers engine on tiny random models with chat templates of their own.

Checks: conversations (system prompt, few-shot turns) go out as they are stored, and the request cache keys them
with the sampling parameters; a log-likelihood prompt, a system prompt the template cannot take and
``--max-new-tokens`` beyond the context window stop before any request; API keys are written nowhere;
thinking (``reasoning_content`` and ``<think>`` blocks) is removed before answers are read, an unclosed block is
unparseable, and lengths reach samples, results and the report. The real chat server is in test_chat_vllm.py.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import pytest

from evalsuite import evaluate
from evalsuite.cli import main
from evalsuite.errors import SpecError
from evalsuite.leaderboard.report import build_report
from evalsuite.results import read_samples
from evalsuite.spec import RunSpec
from scripted_server import chat_reply, server, tokenizer_dir  # noqa: F401 - fixtures
from tiny_models import tiny_llama

RETRY = {"max_retries": 1, "backoff": 0.01}
THINKING_TEMPLATE = ("{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}\n{% endfor %}"
                     "{% if add_generation_prompt %}<|assistant|><think>\n{% endif %}")
NO_SYSTEM_TEMPLATE = ("{% for m in messages %}{% if m['role'] != 'system' %}<|{{ m['role'] }}|>{{ m['content'] }}\n"
                      "{% endif %}{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
REFUSING_TEMPLATE = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}"
                     "{% endif %}" + NO_SYSTEM_TEMPLATE)


@pytest.fixture
def chat_server(server):
    """The scripted server with a window that holds the prompts' generation budgets (320 tokens)."""
    url, script = server
    script.max_model_len = 4096
    return url, script


def chat_run(url: str, tmp_path: Path, **options):
    engine_args = {**RETRY, **options.pop("engine_args", {})}
    return evaluate(url, "gen_deduction", engine="chat", prompts="cot", limit=options.pop("limit", 3),
                    output=tmp_path / "runs", progress=False, n_boot=50, engine_args=engine_args, **options)


def chats(script) -> list[dict]:
    return [body for path, body in script.requests if path == "/v1/chat/completions"]


def test_conversations_go_out_as_stored_and_key_the_cache(chat_server, tmp_path):
    url, script = chat_server
    script.chat_answer = lambda body: chat_reply("The rule applies.\nAnswer: True")
    result = chat_run(url, tmp_path, shots=2, system_prompt="Answer briefly.", fewshot_as_multiturn=True)
    sent, samples = chats(script), read_samples(result.path)
    assert len(sent) == 3
    assert sorted(json.dumps(b["messages"]) for b in sent) == sorted(json.dumps(s["messages"]) for s in samples)
    for body, sample in zip(sent, samples):
        roles = [m["role"] for m in body["messages"]]
        assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
        assert body["messages"][0]["content"] == "Answer briefly."
        assert body["messages"][2]["content"].endswith(("Answer: True", "Answer: False", "Answer: Unknown"))
        assert (body["max_tokens"], body["stop"], body["temperature"]) == (320, ["\n\n\n", "Facts and rules:"], 0.0)
        assert "seed" not in body and "prompt" not in body
        assert sample["extracted"] == "True" and sample["pred"] == 0
    assert result.record["config"]["chat_template"] is True  # implied by the system prompt
    assert result.record["model"]["engine"] == "chat"

    again = chat_run(url, tmp_path, shots=2, system_prompt="Answer briefly.", fewshot_as_multiturn=True)
    assert len(chats(script)) == 3 and again.record["cache"]["hits"] == 3  # answered from the cache
    chat_run(url, tmp_path, shots=2, system_prompt="Think hard.", fewshot_as_multiturn=True)
    assert len(chats(script)) == 6  # other messages, other keys
    chat_run(url, tmp_path, shots=2, system_prompt="Think hard.", fewshot_as_multiturn=True, max_new_tokens=100)
    assert len(chats(script)) == 9 and chats(script)[-1]["max_tokens"] == 100


def test_loglikelihood_prompt_stops_before_any_request(chat_server, tmp_path, capsys):
    url, script = chat_server
    code = main(["run", "--engine", "chat", "--model", url, "--tasks", "gen_deduction", "--limit", "2",
                 "--output", str(tmp_path / "runs"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.startswith("evalsuite: error: ") and err.count("\n") == 1
    assert "prompts/gen_deduction/plain.jinja" in err and "log-likelihoods" in err and "--prompts cot" in err
    assert script.gets == script.posts == 0  # not even the model list was asked for
    assert not (tmp_path / "runs").exists()


def test_api_keys_are_written_nowhere(chat_server, tmp_path, capsys, caplog, monkeypatch):
    url, script = chat_server
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-SECRET-2")
    caplog.set_level(logging.DEBUG)
    common = ["run", "--engine", "chat", "--model", url, "--tasks", "gen_deduction", "--prompts", "cot",
              "--limit", "2", "--engine-arg", "max_retries=1", "--output", str(tmp_path / "runs"),
              "--cache-dir", str(tmp_path / "cache"), "--no-progress"]
    assert main([*common, "--engine-arg", "api_key=sk-arg-SECRET-1"]) == 0
    assert main([*common, "--system-prompt", "Be brief."]) == 0
    assert main(["report", str(tmp_path / "runs"), "--output", str(tmp_path / "report")]) == 0
    # Each key was sent: the option's first, the environment's without it.
    assert script.auth == ["Bearer sk-arg-SECRET-1"] * 2 + ["Bearer sk-env-SECRET-2"] * 2
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert {p.name for p in written} >= {"results.json", "samples.jsonl", "requests.sqlite", "index.html"}
    assert [p for p in written if b"SECRET" in p.read_bytes()] == []
    out = capsys.readouterr()
    assert "SECRET" not in out.out + out.err + caplog.text
    records = [json.loads(p.read_text()) for p in written if p.name == "results.json"]
    assert sorted(r["config"]["engine_args"].get("api_key", "-") for r in records) == ["-", "<redacted>"]


# What the scripted server answers, document by document (concurrency 1 keeps the order), and what is read.
THINKING_CASES = [
    (chat_reply("Answer: True", reasoning="Maybe the answer is Unknown."), "True", 28, 12, 0),
    (chat_reply("<think>Answer: Unknown?</think>\nAnswer: False"), "False", 16, 14, 0),
    (chat_reply("<think>Still thinking. Answer: True"), None, 28, 0, 1),  # never closed: unparseable
    (chat_reply(None, reasoning="Out of budget. Answer: True"), None, 27, 0, 1),  # the server gave no answer
    (chat_reply("Answer: False <think>Wait, Answer: True</think>"), "False", 18, 14, 0),
    (chat_reply("Answer: Unknown"), "Unknown", 0, 15, 0),
    (chat_reply("Answer: True", reasoning="Let me see. " * 10), "True", 120, 12, 0),
]


@pytest.mark.parametrize("tokenizer", [None, "bytes"])
def test_thinking_is_removed_before_reading_and_measured(chat_server, tokenizer_dir, tmp_path, tokenizer):
    url, script = chat_server
    replies = iter(case[0] for case in THINKING_CASES)
    script.chat_answer = lambda body: next(replies)
    options = {"concurrency": 1, **({"tokenizer": tokenizer_dir} if tokenizer else {})}
    result = chat_run(url, tmp_path, limit=7, think=True, engine_args=options)
    samples = read_samples(result.path)
    unit = "tokens" if tokenizer else "characters"  # the byte tokenizer: one token per character here
    for sample, (_, extracted, thinking, answer, unclosed) in zip(samples, THINKING_CASES):
        assert sample["extracted"] == extracted
        assert sample["thinking"] == {"thinking": thinking, "answer": answer, "unit": unit, "unclosed": unclosed}
    assert samples[0]["reasoning"] == "Maybe the answer is Unknown." and samples[0]["generation"] == "Answer: True"
    assert [s["pred"] >= 0 for s in samples] == [True, True, False, False, True, True, True]
    [evaluation] = result.record["evaluations"]
    assert evaluation["thinking"] == {"unit": unit, "mean_thinking": 33.857, "mean_answer": 9.571,
                                        "unclosed_rate": 0.285714}
    assert evaluation["metrics"]["unparseable_rate"]["value"] == pytest.approx(2 / 7)

    # Without --think the same answers (from the cache, reasoning included) are read as before: the last
    # "Answer: X" anywhere in the text.
    plain = chat_run(url, tmp_path, limit=7, engine_args=options)
    assert plain.record["cache"]["hits"] == 7 and len(chats(script)) == 7
    read = read_samples(plain.path)
    assert [s["extracted"] for s in read] == ["True", "False", "True", None, "True", "Unknown", "True"]
    assert [s.get("reasoning") for s in read] == [s.get("reasoning") for s in samples]
    assert "thinking" not in plain.record["evaluations"][0]

    page = build_report([result.path], tmp_path / "report").read_text()
    section = page[page.index('<section id="thinking">'):]
    section = section[: section.index("</section>")]
    assert f">{unit}<" in section and ">0.286<" in section  # the unclosed share
    buckets = re.findall(r"<td>(0|\d+–\d+)</td><td class=\"num\" data-v=\"[\d.]+\">(\d+)</td>", section)
    assert buckets == [("0", "1"), ("1–64", "5"), ("65–256", "1")]  # documents per bucket of thinking length


def test_max_new_tokens_overrides_every_prompt_and_must_fit(chat_server, tmp_path):
    url, script = chat_server
    script.max_model_len = 8192
    chat_run(url, tmp_path, limit=2, max_new_tokens=3000, cache=False)
    assert [b["max_tokens"] for b in chats(script)] == [3000, 3000]
    with pytest.raises(SpecError, match=r"--max-new-tokens 9000 does not fit the 8192-token context window of tiny "
                                        r"\(chat engine\)"):
        chat_run(url, tmp_path, limit=2, max_new_tokens=9000, cache=False)
    assert len(chats(script)) == 2  # none sent


@pytest.fixture
def no_generation(monkeypatch):
    """Fails a test whose run reaches the model's generation."""
    from evalsuite.engines.hf import HFEngine

    def refuse(self, requests, progress=None):
        raise AssertionError("generation started")

    monkeypatch.setattr(HFEngine, "generate", refuse)


@pytest.mark.parametrize("template, problem", [
    (NO_SYSTEM_TEMPLATE, "has no system role"),
    (REFUSING_TEMPLATE, "rejects a system message.*System role not supported"),
])
def test_system_prompt_needs_a_system_role(tmp_path, template, problem, no_generation):
    model = tiny_llama(tmp_path / "model", chat_template=template)
    with pytest.raises(SpecError, match=rf"--system-prompt: the chat template of {model} {problem}"):
        evaluate(str(model), "gen_deduction", prompts="cot", limit=1, system_prompt="Be brief.",
                 output=tmp_path / "runs", progress=False)
    assert not (tmp_path / "runs").exists()


def test_max_new_tokens_beyond_a_local_models_context(tiny_model, tmp_path, no_generation):
    with pytest.raises(SpecError, match=r"--max-new-tokens 600 does not fit the 512-token context window .*hf engine"):
        evaluate(str(tiny_model), "gen_deduction", prompts="cot", limit=1, max_new_tokens=600,
                 output=tmp_path / "runs", progress=False)


def test_a_thinking_template_that_never_closes_leaves_no_answer(tmp_path):
    """A chat template that opens <think> for the model; a random model never closes it within 1500 tokens."""
    model = tiny_llama(tmp_path / "model", chat_template=THINKING_TEMPLATE, max_positions=4096, stops=False)
    result = evaluate(str(model), "gen_deduction", prompts="cot", limit=2, max_new_tokens=1500, think=True,
                      fewshot_as_multiturn=True, shots=1, output=tmp_path / "runs", progress=False, n_boot=50)
    samples = read_samples(result.path)
    for sample in samples:
        assert sample["prompt"].endswith("<|assistant|><think>\n")
        assert [m["role"] for m in sample["messages"]] == ["user", "assistant", "user"]
        assert sample["extracted"] is None and sample["pred"] == -1
        assert sample["thinking"]["unclosed"] == 1 and sample["thinking"]["answer"] == 0
        assert sample["thinking"]["thinking"] >= 1000 and sample["thinking"]["unit"] == "tokens"
    assert result.record["evaluations"][0]["thinking"]["unclosed_rate"] == 1.0


def test_show_prints_the_conversation_and_its_template_text(tmp_path, capsys):
    model = tiny_llama(tmp_path / "model", chat_template=NO_SYSTEM_TEMPLATE)
    (tmp_path / "system.txt").write_text("Be brief.\n", encoding="utf-8")
    code = main(["show", "gen_syllogisms", "--prompt", "cot", "--shots", "1", "--system-prompt",
                 f"@{tmp_path / 'system.txt'}", "--fewshot-as-multiturn", "--tokenizer", str(model)])
    out = capsys.readouterr().out
    assert code == 0
    assert out.index("--- system ---\nBe brief.\n--- user ---\nPremises:") < out.index("--- assistant ---\nAnswer: ")
    assert out.count("--- user ---") == 2 and f"--- as the chat template of {model} makes it ---\n<|user|>" in out
    assert main(["show", "gen_syllogisms", "--system-prompt", f"@{tmp_path / 'missing.txt'}"]) == 2
    assert f"--system-prompt @{tmp_path / 'missing.txt'}: cannot read the file" in capsys.readouterr().err


def test_run_options_are_checked_when_the_spec_is_built(tmp_path):
    spec = RunSpec("smollm2", fewshot_as_multiturn=True, think=True, engine_args={"api_key": "k", "hf_token": "t"})
    assert spec.chat_template and spec.system_prompt is None
    config = spec.config("hf", None, [])
    assert config["engine_args"] == {"api_key": "<redacted>", "hf_token": "<redacted>"}
    assert (config["think"], config["think_tags"]) == (True, ["<think>", "</think>"])
    for options, message in [({"think_tags": ("<t>", "<t>")}, "--think-tags <t> <t>: give two different"),
                             ({"max_new_tokens": 0}, "--max-new-tokens must be at least 1")]:
        with pytest.raises(SpecError, match=message):
            RunSpec("smollm2", **options)
