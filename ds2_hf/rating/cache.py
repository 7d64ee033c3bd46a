"""A persistent request cache: every answer the rater paid for, in one SQLite file.

`Dataset.map` cannot resume (it deletes its partial file when the process dies), so this cache is
the resume mechanism: each answer is committed the moment it arrives, and a rerun of the same job
finds it instead of sending the request again.

    >>> cache = RequestCache("/tmp/ratings.sqlite")
    >>> key = request_key({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
    >>> cache.put(key, Completion(text='{"Overall rating": 7}'))
    >>> cache.get(key).text
    '{"Overall rating": 7}'

WAL journaling lets several processes (``ds.map(..., num_proc=N)``) read and write at once;
``synchronous=NORMAL`` makes a commit survive the writing process being killed (not a power cut).
Keep the file on a local disk: SQLite's locking is unreliable on network file systems.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["Completion", "RequestCache", "default_cache_path", "request_key"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS responses (
    key TEXT PRIMARY KEY,
    text TEXT,
    finish_reason TEXT,
    prompt_tokens INTEGER,
    completion_tokens INTEGER,
    model TEXT,
    template TEXT,
    created REAL
)
"""


@dataclass
class Completion:
    """One generated answer (what the cache stores)."""

    text: str | None
    finish_reason: str | None = None
    prompt_tokens: int | None = None
    completion_tokens: int | None = None


def request_key(payload: dict[str, Any]) -> str:
    """sha256 of a canonical JSON rendering of everything that determines an answer."""
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


def default_cache_path() -> Path:
    """``$DS2_HF_CACHE/rating/requests.sqlite``, else ``$HF_HOME/ds2_hf/rating/requests.sqlite``."""
    from ds2_hf.models import _cache_root

    return _cache_root() / "rating" / "requests.sqlite"


class RequestCache:
    """SQLite-backed map from request key to `Completion`, safe across threads and processes."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._pid: int | None = None

    def _connection(self) -> sqlite3.Connection:
        # One connection per process: a connection inherited through fork is not safe to use.
        if self._conn is None or self._pid != os.getpid():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=60.0, isolation_level=None, check_same_thread=False)
            try:
                conn.execute("PRAGMA journal_mode=WAL")
            except sqlite3.OperationalError as err:
                raise OSError(
                    f"Cannot open the rating cache {self.path} ({err}). Pass cache_path= on a local, "
                    "writable disk, or cache=False to rate without resume."
                ) from err
            conn.execute("PRAGMA synchronous=NORMAL")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.execute(_SCHEMA)
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def get(self, key: str) -> Completion | None:
        with self._lock:
            row = self._connection().execute(
                "SELECT text, finish_reason, prompt_tokens, completion_tokens FROM responses WHERE key = ?", (key,)
            ).fetchone()
        return None if row is None else Completion(*row)

    def put(self, key: str, completion: Completion, *, model: str | None = None, template: str | None = None) -> None:
        """Store an answer now (autocommit); the first answer stored under a key is kept."""
        with self._lock:
            self._connection().execute(
                "INSERT OR IGNORE INTO responses VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    completion.text,
                    completion.finish_reason,
                    completion.prompt_tokens,
                    completion.completion_tokens,
                    model,
                    template,
                    time.time(),
                ),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT COUNT(*) FROM responses").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __getstate__(self) -> dict[str, Any]:
        return {"path": self.path}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"])
