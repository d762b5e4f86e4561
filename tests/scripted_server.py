"""A scripted OpenAI-compatible server on 127.0.0.1 (a real threaded http.server) and its engine helpers.

The server lists one model, ``tiny``, and answers ``/v1/completions`` and ``/v1/chat/completions`` in the shape
vLLM's server gives. Its ``Script`` says what happens next: a queue of failures (status, delay), what a
successful answer holds, and whether the answer trickles out one byte at a time; it keeps every request. Import the fixtures ``server`` and ``tokenizer_dir``
into a test module to use them; ``servers`` starts as many as a test asks for, and ``Script.kill`` crashes one.
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
        # Routing tests: a delay before every answer (or a function of the requests in flight); beyond
        # ``capacity`` requests in flight, HTTP 429 with ``Retry-After``; ``down``: every connection is dropped
        # unanswered; ``times``: when each POST came, ``rejected``: when each 429 went out.
        self.delay: float | Callable[[int], float] = 0.0
        self.capacity: int | None = None
        self.retry_after = "1"
        self.down = False
        self.times: list[float] = []
        self.rejected: list[float] = []
        self.in_flight = self.peak = 0
        self.kill: Callable[[], None] = lambda: None


def start_server() -> tuple[str, Script, Callable[[], None]]:
    """A scripted server in a thread: its URL, its script, and the function that stops it."""
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def reply(self, status: int, body: dict, trickle: str | None = None, headers: str = "") -> None:
            # json.dumps writes NaN and Infinity as the bare words a broken server may send.
            data = json.dumps(body).encode()
            head = (f"HTTP/1.0 {status} {HTTPStatus(status).phrase}\r\nContent-Type: application/json\r\n{headers}"
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
            if script.down:
                return  # the connection closes unanswered: a crashed server, as far as the client can tell
            with script.lock:
                script.gets += 1
            self.reply(200, {"data": [{"id": "tiny", "root": "/nowhere/tiny", "max_model_len": script.max_model_len}]})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            with script.lock:
                if script.down:
                    return
                script.posts += 1
                script.times.append(time.monotonic())
                script.auth.append(self.headers.get("Authorization"))
                script.requests.append((self.path, body))
                status, delay = script.failures.pop(0) if script.failures else (200, script.delay)
                over = script.capacity is not None and script.in_flight >= script.capacity
                if over:
                    script.rejected.append(time.monotonic())
                else:
                    script.in_flight += 1
                    script.peak = max(script.peak, script.in_flight)
                    delay = delay(script.in_flight) if callable(delay) else delay
            if over:
                return self.reply(429, {"error": {"message": "scripted 429"}},
                                  headers=f"Retry-After: {script.retry_after}\r\n")
            try:
                time.sleep(delay)
            finally:
                with script.lock:
                    script.in_flight -= 1
            if script.down:
                return
            if status == 200:
                answer = script.chat_answer if self.path.endswith("/chat/completions") else script.answer
                self.reply(200, answer(body), script.trickle)
            else:
                self.reply(status, {"error": {"message": f"scripted {status}"}})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    stopped = threading.Event()

    def stop() -> None:
        if not stopped.is_set():
            stopped.set()
            httpd.shutdown()
            httpd.server_close()

    def kill() -> None:
        """Crash: requests in flight are dropped unanswered and new connections are refused."""
        script.down = True
        stop()

    script.kill = kill
    return f"http://127.0.0.1:{httpd.server_address[1]}", script, stop


@pytest.fixture
def server():
    url, script, stop = start_server()
    yield url, script
    stop()


@pytest.fixture
def servers():
    """``servers(n)``: n scripted servers, stopped after the test."""
    started = []

    def start(n: int) -> list[tuple[str, Script]]:
        new = [start_server() for _ in range(n)]
        started.extend(new)
        return [(url, script) for url, script, _ in new]

    yield start
    for _, _, stop in started:
        stop()


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
