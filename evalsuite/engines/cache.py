"""The request cache: every answer an engine computes is stored at once, so a killed run resumes.

One sqlite database (``<cache dir>/requests.sqlite``, WAL mode, so several runs can share it) holds one row
per answered request. A row's key is the SHA-256 of a canonical JSON of everything that can change the
answer and nothing else:

- ``kind`` (``loglikelihood`` or ``generation``) and the engine-independent request: token ids, and for
  generation ``max_tokens``, ``stop`` and ``temperature``, and the conversation (``messages``) of a request to
  an engine that sends conversations (``chat``);
- ``model_sha256`` (the config and weight files, not the path), ``adapter_sha256`` and ``dtype``;
- ``window``, the engine's context window, only for a request longer than it (the engine truncates it);
- for sampled generation (temperature > 0) also the ``seed`` and the engine's name: a seed fixes a sample
  only within one engine.

The engine's name is otherwise left out on purpose: log-likelihoods and greedy generations are shared
by engines that receive the same token ids (``hf``, ``vllm``, ``server``).

sqlite's locks and its write-ahead log's shared memory work between processes of one machine only: a cache
must not be shared by machines over a network file system (NFS and the like), where it can be damaged. Runs on
several machines (the shards of a run, say) each keep a cache of their own, and :meth:`RequestCache.merge_from`
(``evalsuite cache merge``) gathers them afterwards. :class:`CachedEngine` wraps any
engine: it answers what it can from the database, forwards only the misses, and stores each answer from
the inner engine's ``progress`` callback, as soon as it is computed.

Only valid answers are stored: a log-likelihood answer must pass
:func:`~evalsuite.engines.base.check_scores` (finite, not above 0), else the call stops with
:class:`~evalsuite.engines.base.InvalidAnswer`. A stored answer that fails it (written before this check
existed) counts as a miss and is deleted, so the recomputed answer takes its place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from evalsuite.engines.base import (
    ContinuationScore,
    Engine,
    Generation,
    GenerationRequest,
    InvalidAnswer,
    LoglikelihoodRequest,
    Progress,
    check_scores,
)
from evalsuite.engines.models import cache_dir, file_lock
from evalsuite.errors import EngineError, os_problem

log = logging.getLogger(__name__)

DB_NAME = "requests.sqlite"
KEY_VERSION = 1  # bump when the meaning of a stored answer changes: old rows then simply miss
_BUSY_TIMEOUT_S = 120.0
_LOOKUP_CHUNK = 500  # keys per SELECT (sqlite's parameter limit is 32766)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (
    key TEXT PRIMARY KEY,        -- sha256 of the canonical request (see the module docstring)
    kind TEXT NOT NULL,          -- loglikelihood | generation
    model_sha256 TEXT NOT NULL,
    model TEXT NOT NULL,         -- model path or name, for 'evalsuite cache info'
    answer TEXT NOT NULL,        -- JSON
    created REAL NOT NULL        -- unix time the answer was stored
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS answers_by_model ON answers (model_sha256);
CREATE INDEX IF NOT EXISTS answers_by_created ON answers (created);
"""


@dataclass(frozen=True)
class ModelEntries:
    model: str
    model_sha256: str
    entries: int
    oldest: float
    newest: float


class RequestCache:
    """A sqlite table of answers, safe to share between processes (WAL, busy timeout, one row per answer)."""

    def __init__(self, folder: str | Path | None = None):
        """``folder``: where ``requests.sqlite`` lives; default ``$EVALSUITE_CACHE_DIR`` or ``~/.cache/evalsuite``."""
        self.folder = Path(folder) if folder is not None else cache_dir()
        self.path = self.folder / DB_NAME
        try:
            # Switching a new database to WAL fails at once (no busy wait) while another process does the
            # same, so processes set the database up one at a time.
            with file_lock(self.folder / (DB_NAME + ".lock")):
                self._db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S, isolation_level=None,
                                           check_same_thread=False)
                self._db.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
                self._db.execute("PRAGMA journal_mode = WAL")
                # In WAL mode a commit survives a killed process without an fsync per answer; only a power
                # cut can lose the last few answers, and a lost answer is simply computed again.
                self._db.execute("PRAGMA synchronous = NORMAL")
                self._db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise self._unusable("open", exc) from None
        self._lock = threading.Lock()  # engines may report answers from a worker thread

    def _unusable(self, doing: str, exc: Exception) -> EngineError:
        reason = os_problem(exc) if isinstance(exc, OSError) else str(exc)
        return EngineError(f"cannot {doing} the request cache {self.path}: {reason}. Use --cache-dir (or "
                           "EVALSUITE_CACHE_DIR) to put it elsewhere, or --no-cache")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RequestCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- answers ------------------------------------------------------------------------------------
    def get_many(self, keys: Sequence[str]) -> dict[str, Any]:
        """Stored answers (decoded JSON) for those of ``keys`` that are present."""
        found: dict[str, Any] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            try:
                for start in range(0, len(unique), _LOOKUP_CHUNK):
                    chunk = unique[start : start + _LOOKUP_CHUNK]
                    marks = ",".join("?" * len(chunk))
                    rows = self._db.execute(f"SELECT key, answer FROM answers WHERE key IN ({marks})", chunk)
                    found.update((key, json.loads(answer)) for key, answer in rows)
            except sqlite3.Error as exc:  # e.g. a damaged database file
                raise self._unusable("read", exc) from None
        return found

    def put(self, key: str, kind: str, model_sha256: str, model: str, answer: Any) -> None:
        """Store one answer now (its own transaction); the first answer stored for a key stays."""
        try:
            text = json.dumps(answer, allow_nan=False)
        except ValueError:
            raise EngineError(f"refusing to cache a non-finite answer of model {model}: {answer!r:.200}") from None
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR IGNORE INTO answers (key, kind, model_sha256, model, answer, created) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (key, kind, model_sha256, model, text, time.time()),
                )
            except sqlite3.Error as exc:  # e.g. its disk is full
                raise self._unusable("store an answer in", exc) from None

    def discard(self, keys: Sequence[str]) -> None:
        """Delete the answers stored for ``keys`` (invalid ones, so that recomputed answers can replace them)."""
        with self._lock:
            for start in range(0, len(keys), _LOOKUP_CHUNK):
                chunk = list(keys[start : start + _LOOKUP_CHUNK])
                self._db.execute(f"DELETE FROM answers WHERE key IN ({','.join('?' * len(chunk))})", chunk)

    def merge_from(self, source: str | Path) -> tuple[int, int]:
        """Copy another cache's answers (``source``: its folder, or its ``requests.sqlite``) into this one; an
        answer stored here already stays, as with :meth:`put`. Returns (answers added, answers in ``source``)."""
        path = Path(source)
        path = path / DB_NAME if path.is_dir() else path
        if not path.is_file():
            raise EngineError(f"{source}: no request cache there (no {DB_NAME}): give the --cache-dir folder of a run")
        if path.resolve() == self.path.resolve():
            raise EngineError(f"{source}: this is the cache merged into (--cache-dir): give the other caches")
        with self._lock:
            try:
                self._db.execute("ATTACH DATABASE ? AS source", (str(path),))
                try:
                    total = self._db.execute("SELECT COUNT(*) FROM source.answers").fetchone()[0]
                    added = self._db.execute(
                        "INSERT OR IGNORE INTO answers (key, kind, model_sha256, model, answer, created) "
                        "SELECT key, kind, model_sha256, model, answer, created FROM source.answers").rowcount
                finally:
                    self._db.execute("DETACH DATABASE source")
            except sqlite3.Error as exc:
                raise EngineError(f"{path}: cannot merge it into the request cache {self.path}: {exc}; is it an "
                                  "evalsuite request cache?") from None
        return added, total

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM answers").fetchone()[0]

    # -- housekeeping -------------------------------------------------------------------------------
    def size_bytes(self) -> int:
        """The database with its write-ahead log."""
        return sum(p.stat().st_size for p in (self.path, self.path.with_name(DB_NAME + "-wal")) if p.exists())

    def models(self) -> list[ModelEntries]:
        """Entries per model fingerprint, most entries first."""
        with self._lock:
            rows = self._db.execute(
                "SELECT MAX(model), model_sha256, COUNT(*), MIN(created), MAX(created) FROM answers "
                "GROUP BY model_sha256 ORDER BY COUNT(*) DESC, MAX(model)"
            ).fetchall()
        return [ModelEntries(*row) for row in rows]

    def clear(self, *, older_than_days: float | None = None, model: str | None = None) -> int:
        """Delete entries (all, those stored more than N days ago, and/or one model's); returns the count.

        ``model`` matches a model path or name as shown by :meth:`models`, or a prefix (at least 8
        characters) of its fingerprint.
        """
        if older_than_days is not None and not older_than_days >= 0:  # a negative age would match everything
            raise EngineError(f"--older-than must be a number of days, 0 or more, got {older_than_days}")
        where, params = [], []
        if older_than_days is not None:
            where.append("created < ?")
            params.append(time.time() - older_than_days * 86400)
        if model is not None:
            where.append("(model = ? OR (length(?) >= 8 AND model_sha256 LIKE ? || '%'))")
            params += [model, model, model.lower()]
        sql = "DELETE FROM answers" + (" WHERE " + " AND ".join(where) if where else "")
        with self._lock:
            deleted = self._db.execute(sql, params).rowcount
            self._db.execute("PRAGMA busy_timeout = 1000")
            try:  # give the space back; skipped when another process is using the database
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.execute("VACUUM")
            except sqlite3.OperationalError:
                pass
            finally:
                self._db.execute(f"PRAGMA busy_timeout = {int(_BUSY_TIMEOUT_S * 1000)}")
        return deleted

    def integrity_check(self) -> str:
        with self._lock:
            return self._db.execute("PRAGMA integrity_check").fetchone()[0]


# -- keys -------------------------------------------------------------------------------------------


def request_key(request: LoglikelihoodRequest | GenerationRequest, described: dict[str, Any]) -> str:
    """The cache key of one request for the engine that ``described`` comes from (see the module docstring)."""
    if isinstance(request, LoglikelihoodRequest):
        kind = "loglikelihood"
        fields: dict[str, Any] = {"context": request.context, "continuations": request.continuations}
        length = len(request.context) + sum(len(c) for c in request.continuations)
    else:
        kind = "generation"
        fields = {"context": request.context, "max_tokens": request.max_tokens, "stop": list(request.stop),
                  "temperature": float(request.temperature)}
        if request.messages is not None:
            fields["messages"] = [list(message) for message in request.messages]
        if request.temperature > 0:
            fields.update(seed=request.seed, engine=described.get("engine"))
        length = len(request.context) + request.max_tokens
    window = described.get("max_length")
    key = {
        "version": KEY_VERSION,
        "kind": kind,
        "model_sha256": described.get("model_sha256"),
        "adapter_sha256": described.get("adapter_sha256"),
        "dtype": described.get("dtype"),
        "request": fields,
        # Only a request the engine must truncate depends on its window.
        "window": window if window is not None and length > window else None,
    }
    canonical = json.dumps(key, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _encode_scores(scores: Sequence[ContinuationScore]) -> list[list[Any]]:
    return [[s.logprob, s.greedy, s.tokens] for s in scores]


def _decode_scores(stored: list[list[Any]]) -> tuple[ContinuationScore, ...]:
    return tuple(ContinuationScore(lp, bool(g), int(n)) for lp, g, n in stored)


def _encode_generation(answer: str | Generation) -> str | dict[str, Any]:
    """A plain string as itself; an answer with separate reasoning as {"text", "reasoning"}."""
    return answer if isinstance(answer, str) else {"text": answer.text, "reasoning": answer.reasoning}


def _decode_generation(stored: str | dict[str, Any]) -> str | Generation:
    return Generation(stored.get("text"), stored.get("reasoning")) if isinstance(stored, dict) else str(stored)


@dataclass
class CacheStats:
    """Counts over one run: ``requests`` asked, ``hits`` answered from the cache, ``computed`` by the model."""

    requests: int = 0
    hits: int = 0
    computed: int = 0


class CachedEngine:
    """Any engine behind the request cache: misses go to the inner engine, answers are stored as they come.

    Identical requests within one call are computed once. ``stats`` counts what this wrapper did.
    """

    def __init__(self, inner: Engine, cache: RequestCache):
        self.inner, self.cache = inner, cache
        self.described = inner.describe()
        if not self.described.get("model_sha256"):
            raise EngineError("the engine reports no weights fingerprint (model_sha256), so its answers cannot be cached")
        self.model_label = str(self.described.get("model_path") or self.described.get("model") or "?")
        self.stats = CacheStats()

    @property
    def tokenizer(self) -> Any:
        return self.inner.tokenizer

    @property
    def conversational(self) -> bool:
        return getattr(self.inner, "conversational", False)

    def describe(self) -> dict[str, Any]:
        return self.described

    def endpoint_stats(self) -> dict[str, Any] | None:
        """The inner engine's per-endpoint counts, when it has endpoints."""
        stats = getattr(self.inner, "endpoint_stats", None)
        return stats() if stats else None

    def summary(self) -> dict[str, Any]:
        """The ``cache`` section of a run record: the database and this run's counts."""
        return {"path": str(self.cache.path), **asdict(self.stats)}

    def loglikelihood(
        self, requests: Sequence[LoglikelihoodRequest], progress: Progress | None = None
    ) -> list[tuple[ContinuationScore, ...]]:
        source = f"model {self.model_label}"
        return self._answer("loglikelihood", requests, self.inner.loglikelihood, _encode_scores, _decode_scores,
                            progress, lambda scores, index: check_scores(scores, source, index))

    def generate(
        self, requests: Sequence[GenerationRequest], progress: Progress | None = None
    ) -> list[str | Generation]:
        return self._answer("generation", requests, self.inner.generate, _encode_generation, _decode_generation,
                            progress)

    def _answer(
        self,
        kind: str,
        requests: Sequence[Any],
        compute: Callable[..., list[Any]],
        encode: Callable[[Any], Any],
        decode: Callable[[Any], Any],
        progress: Progress | None,
        check: Callable[[Any, int], Any] = lambda answer, index: answer,
    ) -> list[Any]:
        """``check(answer, index)`` returns a valid answer to request ``index`` and raises
        :class:`InvalidAnswer` for one that must be neither used nor stored."""
        keys = [request_key(r, self.described) for r in requests]
        stored = self.cache.get_many(keys)
        answers: list[Any] = [None] * len(requests)
        waiting: dict[str, list[int]] = {}  # key -> indices of the requests it answers
        invalid = set()
        for index, key in enumerate(keys):
            if key in stored and key not in invalid:
                try:
                    answers[index] = check(decode(stored[key]), index)
                    continue
                except (InvalidAnswer, TypeError, ValueError):  # stored before answers were checked, or damaged
                    invalid.add(key)
            waiting.setdefault(key, []).append(index)
        if invalid:
            log.warning("%d stored %s answers are invalid (e.g. NaN): computing them again", len(invalid), kind)
            self.cache.discard(sorted(invalid))
        misses = list(waiting)
        hits = len(requests) - sum(len(v) for v in waiting.values())
        self.stats.requests += len(requests)
        self.stats.hits += hits
        self.stats.computed += len(misses)
        log.info("%d %s requests: %d from the cache, %d to compute", len(requests), kind, hits, len(misses))
        if progress:
            for index, answer in enumerate(answers):
                if answer is not None:
                    progress(index, answer)
        if not misses:
            return answers
        saved = set()

        def store(miss_index: int, answer: Any) -> None:
            key = misses[miss_index]
            answer = check(answer, miss_index)  # whatever the engine checked itself: never store a bad answer
            self.cache.put(key, kind, self.described["model_sha256"], self.model_label, encode(answer))
            saved.add(miss_index)
            for index in waiting[key]:
                answers[index] = answer
                if progress:
                    progress(index, answer)

        try:
            computed = compute([requests[waiting[key][0]] for key in misses], progress=store)
            for miss_index, answer in enumerate(computed):  # an engine that did not report every answer
                if miss_index not in saved:
                    store(miss_index, answer)
        except InvalidAnswer as exc:  # numbered among the misses: renumber it as the caller's request
            raise exc.at(waiting[misses[exc.index]][0]) from None
        return answers
