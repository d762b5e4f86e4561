"""The chat engine for real: vLLM's OpenAI-compatible server (CPU build) serving SmolLM2-135M-Instruct on
127.0.0.1, asked through ``/v1/chat/completions``, against the transformers engine with the model's own chat
template. One server serves the module.

Checks: with a system prompt and few-shot examples as turns, both engines render the same conversations and
give the same greedy answers; the window the server reports bounds ``--max-new-tokens`` before any request.
"""

from __future__ import annotations

import pytest

from vllm_support import Server, core_groups, require_vllm

require_vllm()

from evalsuite import evaluate  # noqa: E402
from evalsuite.engines.models import resolve_model  # noqa: E402
from evalsuite.errors import SpecError  # noqa: E402
from evalsuite.results import read_samples  # noqa: E402

TASKS = "gen_deduction,gen_syllogisms"
SYSTEM = "You are a careful logician. Give the final answer in the format the question asks for."
RUN = {"prompts": "cot", "shots": 2, "limit": 4, "max_new_tokens": 48, "system_prompt": SYSTEM,
       "fewshot_as_multiturn": True, "progress": False, "n_boot": 50, "cache": False}


@pytest.fixture(scope="module")
def chat_server(tmp_path_factory):
    server = Server(resolve_model("smollm2"), core_groups(1)[0], tmp_path_factory.mktemp("server") / "server.log",
                    max_model_len=2048)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


def test_chat_endpoint_and_chat_template_give_the_same_conversations_and_answers(chat_server, hf_smollm2, tmp_path):
    chat = evaluate(chat_server.url, TASKS, engine="chat", output=tmp_path / "chat", **RUN)
    local = evaluate("smollm2", TASKS, engine=hf_smollm2, output=tmp_path / "hf", **RUN)
    served, templated = read_samples(chat.path), read_samples(local.path)
    assert [(s["task"], s["doc_id"]) for s in served] == [(s["task"], s["doc_id"]) for s in templated]
    assert len(served) == 8
    for s in served:
        assert [m["role"] for m in s["messages"]] == ["system", "user", "assistant", "user", "assistant", "user"]
        assert s["messages"][0]["content"] == SYSTEM
    assert [s["messages"] for s in served] == [s["messages"] for s in templated]
    # The transformers engine's prompt is the chat template's text of the same messages, as vLLM renders it.
    assert all(s["prompt"].startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>") for s in templated)
    # Both engines decode greedily from the same token ids in float32: the same text.
    assert [s["generation"] for s in served] == [s["generation"] for s in templated]
    assert [s["pred"] for s in served] == [s["pred"] for s in templated]
    assert chat.record["model"]["max_length"] == 2048 and chat.record["model"]["engine"] == "chat"


def test_max_new_tokens_must_fit_the_window_the_server_reports(chat_server, tmp_path):
    with pytest.raises(SpecError, match=r"--max-new-tokens 2048 does not fit the 2048-token context window"):
        evaluate(chat_server.url, "gen_deduction", engine="chat", output=tmp_path, **{**RUN, "max_new_tokens": 2048})
