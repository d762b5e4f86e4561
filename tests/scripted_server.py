"""A scripted OpenAI-compatible server on 127.0.0.1 (a real threaded http.server) and its engine helpers.

The server lists one model, ``tiny``, and answers ``/v1/completions`` and ``/v1/chat/completions`` in the shape
vLLM's server gives. Its ``Script`` says what happens next: a queue of failures (status, delay), what a
successful answer holds, and whether the answer trickles out one byte at a time; it keeps every request. Import the fixtures ``server`` and ``tokenizer_dir``
into a test module to use them.
"""

from __future__ import annotations

import json
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable

import pytest

from evalsuite.engines import LoglikelihoodRequest, load_engine
from evalsuite.engines.server import ServerEngine
from tiny_models import byte_tokenizer


def completion(body: dict) -> dict:
    """An echo answer in the shape vLLM gives: token i's log-probability is -i/10, top-1 is itself."""
    choices = []
    for k, prompt in enumerate(body["prompt"] if isinstance(body["prompt"][0], list) else [body["prompt"]]):
        values = [None] + [-i / 10 for i in range(1, len(prompt))] + [-0.5]
        tops = [None] + [{f"t{i}": v} for i, v in enumerate(values[1:], 1)]
        choices.append({"index": k, "text": "generated text. more", "logprobs": {"token_logprobs": values, "top_logprobs": tops}})
    return {"choices": choices}


def chat_reply(content: str | None, reasoning: str | None = None) -> dict:
    """A chat completion in the shape vLLM gives, with ``reasoning_content`` when ``reasoning`` is given."""
    message = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {"choices": [{"index": 0, "message": message, "finish_reason": "stop"}]}


class Script:
    """What the scripted server answers: a queue of (status, delay) failures, then ``answer(request body)``
    (``chat_answer`` for chat completions). ``requests`` holds every (path, body) it was sent, in order.

    ``trickle`` ("headers" or "body") sends that part of a completion one byte every ``trickle_delay`` s.
    """

    def __init__(self):
        self.failures: list[tuple[int, float]] = []
        self.answer: Callable[[dict], dict] = completion
        self.chat_answer: Callable[[dict], dict] = lambda body: chat_reply("Answer: True")
        self.max_model_len = 64
        self.gets = 0
        self.requests: list[tuple[str, dict]] = []
        self.trickle: str | None = None
        self.trickle_delay = 0.25
        self.posts = 0
        self.auth: list[str | None] = []
        self.lock = threading.Lock()


@pytest.fixture
def server():
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status: int, body: dict, trickle: str | None = None) -> None:
            # json.dumps writes NaN and Infinity as the bare words a broken server may send.
            data = json.dumps(body).encode()
            head = (f"HTTP/1.0 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {len(data)}\r\n\r\n").encode()
            try:
                for part, slow in ((head, trickle == "headers"), (data, trickle == "body")):
                    for piece in ([part[i : i + 1] for i in range(len(part))] if slow else [part]):
                        self.wfile.write(piece)
                        self.wfile.flush()
                        if slow:
                            time.sleep(script.trickle_delay)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up, as timeout tests want
                pass

        def do_GET(self):
            with script.lock:
                script.gets += 1
            self.reply(200, {"data": [{"id": "tiny", "root": "/nowhere/tiny", "max_model_len": script.max_model_len}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                script.posts += 1
                script.auth.append(self.headers.get("Authorization"))
                script.requests.append((self.path, body))
                status, delay = script.failures.pop(0) if script.failures else (200, 0.0)
            time.sleep(delay)
            if status == 200:
                answer = script.chat_answer if self.path.endswith("/chat/completions") else script.answer
                self.reply(200, answer(body), script.trickle)
            else:
                self.reply(status, {"error": {"message": f"scripted {status}"}})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", script
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("tok")
    byte_tokenizer().save_pretrained(path)
    return str(path)


def engine(url: str, tokenizer_dir: str, **options) -> ServerEngine:
    options = {"max_retries": 3, "backoff": 0.01, "tokenizer": tokenizer_dir, **options}
    return load_engine("server", url, **options)


def request(n_ctx: int = 3) -> LoglikelihoodRequest:
    return LoglikelihoodRequest(tuple(range(1, n_ctx + 1)), ((50, 51), (60,)))
