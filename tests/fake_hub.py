"""FAKE HUB: a local HTTP server answering the few Hugging Face Hub API calls an upload makes.

This is a fake for testing the upload path without network; it is not the Hub. It answers what
``huggingface_hub`` 2.x sends for ``HfApi.create_repo`` and ``HfApi.create_commit`` (read from the
client's source: ``hf_api.create_repo``, ``_commit_api._fetch_upload_modes`` and ``_send_commit``):

- ``POST /api/repos/create`` with JSON ``{"name", "organization", "type", "visibility"?}`` ->
  ``{"url": ...}``; 409 with a ``url`` when the repo exists (the client tolerates it with ``exist_ok``);
- ``POST /api/{type}s/{repo}/preupload/{revision}`` with ``{"files": [{"path", "sample", "size"}]}``
  -> every file ``"uploadMode": "regular"`` (so contents come inline in the commit; no LFS/Xet);
- ``POST /api/{type}s/{repo}/commit/{revision}``, an NDJSON body: a ``header`` line, then ``file``
  lines with base64 ``content`` (and ``deletedFile`` lines) -> ``{"commitUrl", "commitOid"}``;
- ``POST /api/validate-yaml`` (sent by ``create_commit`` when README.md is in the commit) -> a few of
  the Hub's metadata rules checked locally (`_check_card_yaml`); 400 with ``errors`` otherwise;
- ``GET /api/{type}s/{repo}/tree/{revision}`` (``HfApi.list_repo_files``) -> the stored files, one
  page (no ``Link`` header).

Everything else is a recorded 404. Every request is recorded (method, path, lower-cased headers, body) and
committed files are kept per repo, so tests can assert exactly what was sent.

    >>> with FakeHub() as hub:
    ...     HfApi(endpoint=hub.url, token="hf_x").create_repo("me/data", repo_type="dataset")
    ...     hub.requests[0]["path"]
    '/api/repos/create'
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class FakeHub:
    """A FAKE Hugging Face Hub on 127.0.0.1 (see the module docstring). Use as a context manager."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.repos: dict[str, dict[str, Any]] = {}  # "dataset:org/name" -> {"files": {path: bytes}, "commits": [...]}
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

            def _reply(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                record = {"method": self.command, "path": self.path.split("?")[0], "query": self.path.partition("?")[2],
                          "headers": {k.lower(): v for k, v in self.headers.items()}, "body": body}
                with hub._lock:
                    hub.requests.append(record)
                    status, payload, headers = hub._route(self.command, record["path"], body)
                self._reply(status, payload, headers)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    # -- lifecycle --
    def __enter__(self) -> "FakeHub":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()

    # -- what tests read --
    def files(self, repo_id: str, repo_type: str = "dataset") -> dict[str, bytes]:
        return dict(self.repos[f"{repo_type}:{repo_id}"]["files"])

    def commits(self, repo_id: str, repo_type: str = "dataset") -> list[dict[str, Any]]:
        return list(self.repos[f"{repo_type}:{repo_id}"]["commits"])

    # -- routing --
    def _route(self, method: str, path: str, body: bytes) -> tuple[int, Any, dict[str, str] | None]:
        not_found = (404, {"error": f"FAKE HUB: no route for {method} {path}"}, {"X-Error-Code": "EntryNotFound"})
        if method == "POST" and path == "/api/repos/create":
            data = json.loads(body)
            repo_type = data.get("type") or "model"
            repo_id = f"{data['organization']}/{data['name']}" if data.get("organization") else data["name"]
            prefix = "" if repo_type == "model" else f"{repo_type}s/"
            url = f"{self.url}/{prefix}{repo_id}"
            key = f"{repo_type}:{repo_id}"
            if key in self.repos:
                return 409, {"error": "You already created this repo", "url": url}, None
            self.repos[key] = {"files": {}, "commits": [], "visibility": data.get("visibility")}
            return 200, {"url": url, "name": repo_id}, None
        if method == "POST" and path == "/api/validate-yaml":
            errors = _check_card_yaml(json.loads(body)["content"])
            return (400 if errors else 200), {"errors": [{"message": e} for e in errors], "warnings": []}, None
        m = re.fullmatch(r"/api/(dataset|model|space)s/([^/]+/[^/]+)/tree/([^/]+)(/.*)?", path)
        if m is not None and method == "GET":
            repo = self.repos.get(f"{m.group(1)}:{m.group(2)}")
            if repo is None:
                return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
            prefix = (m.group(4) or "").lstrip("/")
            return 200, [
                {"type": "file", "path": p, "size": len(c), "oid": hashlib.sha1(c).hexdigest()}
                for p, c in sorted(repo["files"].items()) if p.startswith(prefix)
            ], None
        m = re.fullmatch(r"/api/(dataset|model|space)s/([^/]+/[^/]+)/(preupload|commit)/(.+)", path)
        if m is None or method != "POST":
            return not_found
        repo_type, repo_id, action, revision = m.groups()
        repo = self.repos.get(f"{repo_type}:{repo_id}")
        if repo is None:
            return 404, {"error": "Repository not found"}, {"X-Error-Code": "RepoNotFound"}
        if action == "preupload":
            files = json.loads(body)["files"]
            return 200, {"files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False} for f in files]}, None
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        header = next(line["value"] for line in lines if line["key"] == "header")
        written = []
        for line in lines:
            if line["key"] == "file":
                value = line["value"]
                content = base64.b64decode(value["content"]) if value.get("encoding") == "base64" else value["content"].encode()
                repo["files"][value["path"]] = content
                written.append(value["path"])
            elif line["key"] == "deletedFile":
                repo["files"].pop(line["value"]["path"], None)
            elif line["key"] != "header":
                return 400, {"error": f"FAKE HUB: unsupported commit line {line['key']!r}"}, None
        oid = hashlib.sha1(body).hexdigest()
        repo["commits"].append({"oid": oid, "revision": revision, "summary": header.get("summary"), "files": written})
        prefix = "" if repo_type == "model" else f"{repo_type}s/"
        return 200, {"commitUrl": f"{self.url}/{prefix}{repo_id}/commit/{oid}", "commitOid": oid}, None


SIZE_CATEGORIES = {"n<1K", "1K<n<10K", "10K<n<100K", "100K<n<1M", "1M<n<10M", "10M<n<100M", "100M<n<1B",
                   "1B<n<10B", "10B<n<100B", "100B<n<1T", "n>1T", "other"}
ANNOTATIONS_CREATORS = {"found", "crowdsourced", "expert-generated", "machine-generated", "no-annotation", "other"}


def _check_card_yaml(readme: str) -> list[str]:
    """A few of the Hub's dataset-card metadata rules (the real validator is server-side)."""
    import yaml

    if not readme.startswith("---\n"):
        return ["README.md has no YAML front matter"]
    try:
        meta = yaml.safe_load(readme.split("---\n", 2)[1]) or {}
    except yaml.YAMLError as err:
        return [f"YAML does not parse: {err}"]
    errors = []
    for value in meta.get("size_categories") or []:
        if value not in SIZE_CATEGORIES:
            errors.append(f"size_categories: {value!r} is not a known size category")
    for value in meta.get("annotations_creators") or []:
        if value not in ANNOTATIONS_CREATORS:
            errors.append(f"annotations_creators: {value!r} is not allowed")
    names = [c.get("config_name") for c in meta.get("configs") or []]
    if len(names) != len(set(names)) or None in names:
        errors.append("configs: every config needs a unique config_name")
    if sum(bool(c.get("default")) for c in meta.get("configs") or []) > 1:
        errors.append("configs: at most one config can be the default")
    return errors
