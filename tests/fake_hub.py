"""A fake Hugging Face Hub for offline tests: the endpoints that pushing and loading a model use.

One ``FakeHub`` holds the repos; it answers in-process through an httpx2 ``MockTransport`` installed with
``huggingface_hub.set_client_factory`` (``hub.installed()``), and a fresh process reaches the same
state through a loopback HTTP server on 127.0.0.1 (``hub.serve()`` gives the ``HF_ENDPOINT``): a
child interpreter cannot see the parent's in-process transport.

Endpoints (as huggingface_hub 2.4 calls them): create-repo, validate-yaml (parses the front matter
with ``huggingface_hub.ModelCardData``), preupload (always ``regular`` mode, so no LFS/Xet), commit
(NDJSON), model info, tree, resolve (HEAD/GET with ``X-Repo-Commit``, ``ETag``, ``Content-Length``;
404 with ``X-Error-Code``). Writes need a bearer token; private repos need one to be read.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import pytest

Response = tuple[int, dict[str, str], bytes]


@dataclass
class Repo:
    private: bool
    commits: list[tuple[str, dict[str, bytes]]] = field(default_factory=list)  # (sha, files) oldest first

    @property
    def files(self) -> dict[str, bytes]:
        return dict(self.commits[-1][1]) if self.commits else {".gitattributes": b"*.safetensors filter=lfs\n"}

    @property
    def sha(self) -> str:
        return self.commits[-1][0] if self.commits else "0" * 40

    def at(self, revision: str) -> tuple[str, dict[str, bytes]] | None:
        if revision == "main":
            return self.sha, self.files
        return next(((sha, dict(files)) for sha, files in self.commits if sha == revision), None)


@dataclass
class Seen:
    """One request as the fake received it (for assertions)."""

    method: str
    path: str
    authorization: str | None
    body: bytes


class FakeHub:
    """Repos in memory; ``fail_on`` maps an endpoint name (``create``, ``preupload``, ``commit``, ...) to an HTTP status."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[Seen] = []
        self.fail_on: dict[str, int] = {}
        self._lock = threading.Lock()

    # --- transports -------------------------------------------------------------------------

    @contextlib.contextmanager
    def installed(self) -> Iterator[FakeHub]:
        """Route every huggingface_hub request of this process to the fake (no sockets)."""
        import httpx2
        from huggingface_hub import set_client_factory
        from huggingface_hub.utils._http import default_client_factory

        def handler(request: httpx2.Request) -> httpx2.Response:
            url = request.url
            base = f"{url.scheme}://{url.netloc.decode()}"
            status, headers, body = self.handle(
                request.method, url.raw_path.decode(), dict(request.headers), request.read(), base
            )
            return httpx2.Response(status, headers=headers, content=b"" if request.method == "HEAD" else body)

        set_client_factory(lambda: httpx2.Client(transport=httpx2.MockTransport(handler), follow_redirects=True))
        try:
            yield self
        finally:
            set_client_factory(default_client_factory)

    @contextlib.contextmanager
    def serve(self) -> Iterator[str]:
        """A loopback HTTP server answering like ``installed()``; yields its URL for ``HF_ENDPOINT``."""
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                base = f"http://{self.headers.get('Host')}"
                status, headers, content = hub.handle(self.command, self.path, dict(self.headers), body, base)
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                if "Content-Length" not in headers:
                    self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(content)

            do_GET = do_HEAD = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:  # keep test output quiet
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}"
        finally:
            server.shutdown()
            server.server_close()

    # --- the Hub ----------------------------------------------------------------------------

    def handle(self, method: str, raw_path: str, headers: dict[str, str], body: bytes, base: str) -> Response:
        split = urlsplit(raw_path)
        path, query = unquote(split.path), parse_qs(split.query)
        headers = {key.lower(): value for key, value in headers.items()}
        with self._lock:
            self.requests.append(Seen(method, raw_path, headers.get("authorization"), body))
            return self._route(method, path, query, headers, body, base)

    def _route(self, method: str, path: str, query: dict, headers: dict, body: bytes, base: str) -> Response:
        parts = path.strip("/").split("/")
        authorized = (headers.get("authorization") or "").startswith("Bearer ") and len(headers["authorization"]) > 7
        if method == "POST" and path == "/api/repos/create":
            return self._create(json.loads(body), authorized, base)
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(json.loads(body))
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            repo_id, rest = "/".join(parts[2:4]), parts[4:]
            repo = self.repos.get(repo_id)
            if repo is None or (repo.private and not authorized):
                return _error(404 if repo is None else 401, "RepoNotFound", "Repository not found")
            if method == "POST" and rest[:1] in (["preupload"], ["commit"]):
                if not authorized:
                    return _error(401, None, "Invalid credentials in Authorization header")
                if rest[0] in self.fail_on:
                    return _error(self.fail_on[rest[0]], None, f"fake {rest[0]} failure")
                return (
                    self._preupload(json.loads(body))
                    if rest[0] == "preupload"
                    else self._commit(repo_id, repo, body, base)
                )
            if method == "GET" and (not rest or rest[0] == "revision"):
                return self._info(repo_id, repo, rest[1] if len(rest) > 1 else "main")
            if method == "GET" and rest[:1] == ["tree"] and len(rest) >= 2:
                return self._tree(repo, rest[1], "/".join(rest[2:]), query)
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            repo = self.repos.get("/".join(parts[:2]))
            if repo is None or (repo.private and not authorized):
                return _error(404 if repo is None else 401, "RepoNotFound", "Repository not found")
            return self._resolve(repo, parts[3], "/".join(parts[4:]))
        return _error(404, None, f"fake hub: no route for {method} {path}")

    def _create(self, payload: dict, authorized: bool, base: str) -> Response:
        if not authorized:
            return _error(401, None, "Invalid credentials in Authorization header")
        if "create" in self.fail_on:
            return _error(self.fail_on["create"], None, "fake create failure")
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        if repo_id in self.repos:
            return _json({"error": "You already created this model repo", "url": f"{base}/{repo_id}"}, 409)
        self.repos[repo_id] = Repo(private=payload.get("visibility") == "private" or payload.get("private") is True)
        return _json({"url": f"{base}/{repo_id}", "name": repo_id, "id": repo_id})

    def _validate_yaml(self, payload: dict) -> Response:
        import yaml
        from huggingface_hub import ModelCardData

        content = payload.get("content", "")
        try:
            if content.startswith("---"):
                metadata = yaml.safe_load(content.split("---", 2)[1]) or {}
                ModelCardData(**metadata)
        except Exception as error:  # what the real endpoint rejects: YAML that does not parse or a bad model-index
            return _json({"errors": [{"message": str(error)}]}, 400)
        return _json({})

    @staticmethod
    def _preupload(payload: dict) -> Response:
        files = [
            {"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in payload["files"]
        ]
        return _json({"files": files})

    def _commit(self, repo_id: str, repo: Repo, body: bytes, base: str) -> Response:
        files = repo.files
        for line in body.splitlines():
            item = json.loads(line)
            if item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                files.pop(item["value"]["path"], None)
            elif item["key"] == "deletedFolder":
                prefix = item["value"]["path"].rstrip("/") + "/"
                files = {path: data for path, data in files.items() if not path.startswith(prefix)}
            elif item["key"] != "header":
                return _error(400, None, f"fake hub does not support {item['key']} operations")
        digest = hashlib.sha1(repo.sha.encode())
        for path in sorted(files):
            digest.update(path.encode() + b"\0" + files[path])
        sha = digest.hexdigest()
        repo.commits.append((sha, files))
        return _json({"commitUrl": f"{base}/{repo_id}/commit/{sha}", "commitOid": sha, "pullRequestUrl": None})

    @staticmethod
    def _info(repo_id: str, repo: Repo, revision: str) -> Response:
        found = repo.at(revision)
        if found is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        sha, files = found
        siblings = [{"rfilename": path} for path in sorted(files)]
        return _json(
            {"id": repo_id, "modelId": repo_id, "sha": sha, "private": repo.private, "siblings": siblings, "tags": []}
        )

    @staticmethod
    def _tree(repo: Repo, revision: str, prefix: str, query: dict) -> Response:
        found = repo.at(revision)
        if found is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        recursive = query.get("recursive", ["false"])[0].lower() == "true"
        prefix = prefix.strip("/")
        entries, folders = [], set()
        for path, data in sorted(found[1].items()):
            if prefix and not path.startswith(prefix + "/"):
                continue
            rest = path[len(prefix) + 1 :] if prefix else path
            if "/" in rest and not recursive:
                folders.add(f"{prefix}/{rest.split('/')[0]}" if prefix else rest.split("/")[0])
                continue
            if recursive:
                parents = path.split("/")[:-1]
                first = len(prefix.split("/")) if prefix else 0
                folders.update("/".join(parents[: index + 1]) for index in range(first, len(parents)))
            entries.append({"type": "file", "path": path, "size": len(data), "oid": _oid(data)})
        entries += [{"type": "directory", "path": folder, "size": 0, "oid": "0" * 40} for folder in sorted(folders)]
        return _json(entries)

    @staticmethod
    def _resolve(repo: Repo, revision: str, path: str) -> Response:
        found = repo.at(revision)
        if found is None:
            return _error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
        sha, files = found
        if path not in files:
            return _error(404, "EntryNotFound", f"{path} does not exist on {revision}", {"X-Repo-Commit": sha})
        data = files[path]
        return 200, {"X-Repo-Commit": sha, "ETag": f'"{_oid(data)}"', "Content-Length": str(len(data))}, data

    # --- helpers for assertions --------------------------------------------------------------

    def files(self, repo_id: str) -> dict[str, bytes]:
        """The repo's files at main, without the ``.gitattributes`` every Hub repo starts with."""
        return {path: data for path, data in self.repos[repo_id].files.items() if path != ".gitattributes"}


def _oid(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()  # git's blob id


def _json(payload: Any, status: int = 200) -> Response:
    body = json.dumps(payload).encode()
    return status, {"Content-Type": "application/json", "Content-Length": str(len(body))}, body


def _error(status: int, code: str | None, message: str, extra: dict[str, str] | None = None) -> Response:
    status, headers, body = _json({"error": message}, status)
    if code:
        headers["X-Error-Code"] = code
    headers["X-Error-Message"] = message
    return status, {**headers, **(extra or {})}, body


FAKE_TOKEN = "hf_FakeTokenForTestsOnly0123456789abcdef"


@pytest.fixture()
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """A ``FakeHub`` installed in-process for one test: Hub access on, a fake ``HF_TOKEN``, nothing of the user's.

    Import it into a test module (``from tests.fake_hub import fake_hub``). ``HF_HUB_OFFLINE`` and the
    token path are read once, when huggingface_hub is imported, so the module constants are patched as
    well as the environment (which child processes read).
    """
    from huggingface_hub import constants

    home = tmp_path / "hf-home"
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(home / "token"))
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    monkeypatch.delenv("HUGGING_FACE_HUB_TOKEN", raising=False)
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    hub = FakeHub()
    with hub.installed():
        yield hub
