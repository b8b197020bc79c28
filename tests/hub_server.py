"""A small in-memory Hugging Face Hub on 127.0.0.1, for tests without internet.

It speaks the part of the Hub HTTP protocol that ``huggingface_hub`` 2.4 uses to create a
repo, upload a folder and download it again (``create_repo``, ``upload_folder`` /
``upload_file`` / ``create_commit``, ``snapshot_download`` / ``hf_hub_download``,
``model_info`` / ``repo_info``, ``list_repo_tree``):

=======================================================  ==============================================
``POST /api/repos/create``                               new repo (409 if it exists); a first commit
                                                         with ``.gitattributes``, as the Hub makes
``POST /api/validate-yaml``                              README front matter check (400 on bad YAML)
``POST /api/{type}s/{id}/preupload/{rev}``               upload mode per file: ``lfs`` for paths that
                                                         match ``lfs_patterns``, else ``regular``
``POST /{prefix}{id}.git/info/lfs/objects/batch``        git-LFS batch API, ``basic`` transfer
``PUT /_lfs/{oid}``, ``POST /_lfs/{oid}/verify``         LFS object upload (sha256 and size checked)
``POST /api/{type}s/{id}/commit/{rev}``                  NDJSON commit: ``header``, ``file`` (base64),
                                                         ``lfsFile``, ``deletedFile``, ``deletedFolder``
``GET /api/{type}s/{id}[/revision/{rev}]``               repo info (``sha``, ``siblings``, ...)
``GET /api/{type}s/{id}/tree/{rev}[/{path}]``            file listing (``recursive``), LFS metadata
``HEAD|GET /{prefix}{id}/resolve/{rev}/{path}``          file metadata headers / content
``GET /api/whoami-v2``, ``GET /api/agent-harnesses``    the dummy user; an empty agent registry
=======================================================  ==============================================

``{type}`` is ``model``, ``dataset`` or ``space``; ``{prefix}`` is ``""``, ``datasets/`` or
``spaces/``. Revisions are ``main`` or a commit sha. Errors carry the ``X-Error-Code`` headers
``huggingface_hub`` maps onto its exceptions (``RepoNotFound``, ``RevisionNotFound``,
``EntryNotFound``). Writes need an ``Authorization: Bearer ...`` header (any token).

Xet storage is not implemented: a client with ``hf_xet`` installed must either get only
``regular`` upload modes (``lfs_patterns = []``) or run with ``HF_HUB_DISABLE_XET=1``.

    hub = MockHub().start()        # hub.url -> http://127.0.0.1:PORT (set HF_ENDPOINT to it)
    ...
    hub.files("org/name")          # {path: bytes} at the head of main
    hub.stop()
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

PREFIXES = {"model": "", "dataset": "datasets/", "space": "spaces/"}
_TYPES = {"models": "model", "datasets": "dataset", "spaces": "space"}
_ID = r"(?P<repo>[^/]+/[^/]+?)"


def git_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def lfs_pointer(sha256: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha256}\nsize {size}\n".encode()


@dataclass
class Blob:
    data: bytes
    lfs: bool = False

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    def tree_entry(self, path: str) -> dict:
        if not self.lfs:
            return {"type": "file", "oid": git_sha1(self.data), "size": len(self.data), "path": path}
        pointer = lfs_pointer(self.sha256, len(self.data))
        return {"type": "file", "oid": git_sha1(pointer), "size": len(self.data), "path": path,
                "lfs": {"oid": self.sha256, "size": len(self.data), "pointerSize": len(pointer)}}


@dataclass
class Commit:
    oid: str
    message: str
    files: dict[str, Blob]


@dataclass
class Repo:
    repo_type: str
    repo_id: str
    private: bool = False
    sdk: str | None = None
    commits: list[Commit] = field(default_factory=list)

    @property
    def head(self) -> Commit:
        return self.commits[-1]

    def commit(self, message: str, files: dict[str, Blob]) -> Commit:
        seed = f"{self.repo_id}:{len(self.commits)}:{message}:{sorted(files)}:{time.time_ns()}"
        c = Commit(hashlib.sha1(seed.encode()).hexdigest(), message, files)
        self.commits.append(c)
        return c

    def at(self, revision: str) -> Commit | None:
        if revision == "main":
            return self.head
        return next((c for c in self.commits if c.oid == revision), None)


class HubError(Exception):
    def __init__(self, status: int, message: str, code: str | None = None, commit: str | None = None):
        super().__init__(message)
        self.status, self.message, self.code, self.commit = status, message, code, commit


class MockHub:
    """The server state plus a ``ThreadingHTTPServer`` serving it on 127.0.0.1."""

    def __init__(self, lfs_patterns: list[str] | None = None):
        self.lfs_patterns = ["*.safetensors"] if lfs_patterns is None else list(lfs_patterns)
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path) of every request
        self.unhandled: list[tuple[str, str]] = []  # requests no route matched (answered 404)
        self.lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> MockHub:
        hub = self

        class Handler(_Handler):
            state = hub

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True, name="mock-hub").start()
        return self

    def stop(self):
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    # -- inspection for tests -------------------------------------------------------------------
    def repo(self, repo_id: str, repo_type: str = "model") -> Repo:
        return self.repos[(repo_type, repo_id)]

    def files(self, repo_id: str, repo_type: str = "model", revision: str = "main") -> dict[str, bytes]:
        return {p: b.data for p, b in self.repo(repo_id, repo_type).at(revision).files.items()}

    def lfs_paths(self, repo_id: str, repo_type: str = "model") -> set[str]:
        return {p for p, b in self.repo(repo_id, repo_type).head.files.items() if b.lfs}

    # -- the routes -------------------------------------------------------------------------------
    def _get_repo(self, repo_type: str, repo_id: str) -> Repo:
        repo = self.repos.get((repo_type, repo_id))
        if repo is None:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return repo

    def _get_commit(self, repo: Repo, revision: str) -> Commit:
        c = repo.at(revision)
        if c is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return c

    def create_repo(self, body: dict) -> dict:
        repo_type = body.get("type") or "model"
        repo_id = f"{body.get('organization') or 'dummy-user'}/{body['name']}"
        if repo_type == "space" and not body.get("sdk"):
            raise HubError(400, "sdk is required for a Space")
        with self.lock:
            url = f"{self.url}/{PREFIXES[repo_type]}{repo_id}"
            if (repo_type, repo_id) in self.repos:  # the Hub's 409 body still carries the url
                raise HubError(409, json.dumps({"error": "You already created this model repo", "url": url}))
            repo = Repo(repo_type, repo_id, private=body.get("visibility") == "private" or bool(body.get("private")),
                        sdk=body.get("sdk"))
            gitattributes = Blob(b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
            repo.commit("initial commit", {".gitattributes": gitattributes})
            self.repos[(repo_type, repo_id)] = repo
        return {"url": url, "name": repo_id, "id": repo_id}

    @staticmethod
    def validate_yaml(body: dict) -> dict:
        content = body.get("content", "")
        m = re.match(r"^---\s*\n(.*?)\n---\s*(\n|$)", content, re.S)
        if m:
            try:
                meta = yaml.safe_load(m.group(1))
            except yaml.YAMLError as err:
                raise HubError(400, json.dumps({"errors": [{"message": f"Invalid YAML: {err}"}]})) from err
            if meta is not None and not isinstance(meta, dict):
                raise HubError(400, json.dumps({"errors": [{"message": "metadata must be a mapping"}]}))
        return {"errors": [], "warnings": []}

    def preupload(self, repo_type: str, repo_id: str, revision: str, body: dict) -> dict:
        repo = self._get_repo(repo_type, repo_id)
        head = self._get_commit(repo, revision)
        out = []
        for f in body["files"]:
            lfs = f["size"] > 0 and any(fnmatch.fnmatch(f["path"], p) for p in self.lfs_patterns)
            old = head.files.get(f["path"])
            oid = None if old is None else (old.sha256 if old.lfs else git_sha1(old.data))
            out.append({"path": f["path"], "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False,
                        "oid": oid})
        return {"files": out, "commitOid": head.oid}

    def lfs_batch(self, repo_type: str, repo_id: str, body: dict) -> dict:
        self._get_repo(repo_type, repo_id)
        if body.get("operation") != "upload":
            raise HubError(400, "only uploads are supported")
        objects = []
        for o in body["objects"]:
            if o["oid"] in self.lfs_objects:  # already stored: no actions, the client skips it
                objects.append({"oid": o["oid"], "size": o["size"]})
            else:
                href = f"{self.url}/_lfs/{o['oid']}?size={o['size']}"
                objects.append({"oid": o["oid"], "size": o["size"], "authenticated": True,
                                "actions": {"upload": {"href": href},
                                            "verify": {"href": f"{self.url}/_lfs/{o['oid']}/verify"}}})
        return {"transfer": "basic", "objects": objects}

    def lfs_put(self, oid: str, size: int, data: bytes):
        if len(data) != size or hashlib.sha256(data).hexdigest() != oid:
            raise HubError(400, f"LFS object {oid}: content does not match its sha256/size")
        with self.lock:
            self.lfs_objects[oid] = data

    def lfs_verify(self, oid: str, body: dict) -> dict:
        data = self.lfs_objects.get(oid)
        if data is None or len(data) != body.get("size"):
            raise HubError(404, f"LFS object {oid} not found")
        return {}

    def commit(self, repo_type: str, repo_id: str, revision: str, lines: list[dict], query: dict) -> dict:
        repo = self._get_repo(repo_type, repo_id)
        if query.get("create_pr"):
            raise HubError(400, "pull requests are not supported by the mock Hub")
        if revision != "main":
            raise HubError(400, "commits only go to main on the mock Hub")
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "the first line of a commit must be its header")
        header = lines[0]["value"]
        with self.lock:
            parent = header.get("parentCommit")
            if parent and not repo.head.oid.startswith(parent):
                raise HubError(412, "parent commit is not the head of the branch")
            files = dict(repo.head.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    files[value["path"]] = Blob(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    data = self.lfs_objects.get(value["oid"])
                    if data is None:
                        raise HubError(422, f"LFS object {value['oid']} of {value['path']} was never uploaded")
                    files[value["path"]] = Blob(data, lfs=True)
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                elif key == "deletedFolder":
                    folder = value["path"].rstrip("/") + "/"
                    files = {p: b for p, b in files.items() if not p.startswith(folder)}
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            c = repo.commit(header.get("summary", ""), files)
        return {"success": True, "commitOid": c.oid, "hookOutput": "", "pullRequestUrl": None,
                "commitUrl": f"{self.url}/{PREFIXES[repo_type]}{repo_id}/commit/{c.oid}"}

    def info(self, repo_type: str, repo_id: str, revision: str) -> dict:
        repo = self._get_repo(repo_type, repo_id)
        c = self._get_commit(repo, revision)
        out = {"id": repo_id, "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24], "author": repo_id.split("/")[0],
               "sha": c.oid, "private": repo.private, "disabled": False, "gated": False,
               "lastModified": "2025-01-01T00:00:00.000Z", "createdAt": "2025-01-01T00:00:00.000Z",
               "tags": [], "downloads": 0, "likes": 0,
               "siblings": [{"rfilename": p} for p in sorted(c.files)]}
        card = c.files.get("README.md")
        if card is not None:
            m = re.match(r"^---\s*\n(.*?)\n---", card.data.decode(errors="replace"), re.S)
            meta = (yaml.safe_load(m.group(1)) if m else None) or {}
            out["cardData"] = meta
            out["tags"] = list(meta.get("tags", []))
            for key in ("library_name", "pipeline_tag"):
                if key in meta:
                    out[key] = meta[key]
        if repo_type == "space":
            out["sdk"] = repo.sdk
            out["runtime"] = {"stage": "BUILDING", "hardware": {"current": None, "requested": "cpu-basic"}}
        return out

    def tree(self, repo_type: str, repo_id: str, revision: str, path: str, recursive: bool) -> list[dict]:
        repo = self._get_repo(repo_type, repo_id)
        c = self._get_commit(repo, revision)
        prefix = path.strip("/") + "/" if path.strip("/") else ""
        if prefix and not any(p.startswith(prefix) for p in c.files):
            raise HubError(404, f"{path} does not exist on main", "EntryNotFound")
        entries: dict[str, dict] = {}
        for p, blob in sorted(c.files.items()):
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # the folders on the way down
                if depth > 1 and not recursive:
                    break
                d = prefix + "/".join(parts[:depth])
                entries.setdefault(d, {"type": "directory", "oid": git_sha1(d.encode()), "size": 0, "path": d})
            if recursive or len(parts) == 1:
                entries[p] = blob.tree_entry(p)
        return list(entries.values())

    def resolve(self, repo_type: str, repo_id: str, revision: str, path: str) -> tuple[bytes, dict]:
        repo = self._get_repo(repo_type, repo_id)
        c = self._get_commit(repo, revision)
        blob = c.files.get(path)
        if blob is None:
            raise HubError(404, f"Entry not found: {path}", "EntryNotFound", commit=c.oid)
        headers = {"X-Repo-Commit": c.oid, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if blob.lfs:
            headers |= {"ETag": f'"{blob.sha256}"', "X-Linked-Etag": f'"{blob.sha256}"',
                        "X-Linked-Size": str(len(blob.data))}
        else:
            headers["ETag"] = f'"{git_sha1(blob.data)}"'
        return blob.data, headers


def _repo_route(pattern: str) -> re.Pattern:
    return re.compile(pattern.replace("{ID}", _ID))


_ROUTES = [
    ("POST", re.compile(r"^/api/repos/create$"), "create"),
    ("POST", re.compile(r"^/api/validate-yaml$"), "validate"),
    ("GET", re.compile(r"^/api/whoami-v2$"), "whoami"),
    ("GET", re.compile(r"^/api/agent-harnesses$"), "harnesses"),
    ("POST", _repo_route(r"^/api/(?P<t>models|datasets|spaces)/{ID}/preupload/(?P<rev>[^/]+)$"), "preupload"),
    ("POST", _repo_route(r"^/api/(?P<t>models|datasets|spaces)/{ID}/commit/(?P<rev>[^/]+)$"), "commit"),
    ("GET", _repo_route(r"^/api/(?P<t>models|datasets|spaces)/{ID}/tree/(?P<rev>[^/]+)(?:/(?P<path>.*))?$"), "tree"),
    ("GET", _repo_route(r"^/api/(?P<t>models|datasets|spaces)/{ID}(?:/revision/(?P<rev>[^/]+))?$"), "info"),
    ("POST", _repo_route(r"^/(?P<p>datasets/|spaces/)?{ID}\.git/info/lfs/objects/batch$"), "lfs_batch"),
    ("PUT", re.compile(r"^/_lfs/(?P<oid>[0-9a-f]{64})$"), "lfs_put"),
    ("POST", re.compile(r"^/_lfs/(?P<oid>[0-9a-f]{64})/verify$"), "lfs_verify"),
    ("GET", _repo_route(r"^/(?P<p>datasets/|spaces/)?{ID}/resolve/(?P<rev>[^/]+)/(?P<path>.+)$"), "resolve"),
]
_WRITES = {"create", "preupload", "commit", "lfs_batch"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: MockHub

    def log_message(self, *args):  # keep the test output clean
        pass

    def do_GET(self):
        self._dispatch("GET")

    def do_HEAD(self):
        self._dispatch("HEAD")

    def do_POST(self):
        self._dispatch("POST")

    def do_PUT(self):
        self._dispatch("PUT")

    # -- plumbing -------------------------------------------------------------------------------
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass  # trailers
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict | None = None, head: bool = False):
        self.send_response(status)
        headers = {"Content-Type": "application/json"} | (headers or {})
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def _json(self, obj, status: int = 200):
        self._send(status, json.dumps(obj).encode())

    def _dispatch(self, method: str):
        url = urlsplit(self.path)
        path, query = url.path, {k: v[-1] for k, v in parse_qs(url.query).items()}
        hub = self.state
        hub.requests.append((method, self.path))
        body = self._body() if method in ("POST", "PUT") else b""
        match_method = "GET" if method == "HEAD" else method
        for route_method, pattern, name in _ROUTES:
            m = pattern.match(path)  # still URL-quoted: a quoted revision may hold '/'
            if route_method != match_method or m is None:
                continue
            g = {k: (unquote(v) if v is not None else None) for k, v in m.groupdict().items()}
            try:
                if name in _WRITES and not self.headers.get("Authorization", "").startswith("Bearer "):
                    raise HubError(401, "Invalid credentials in Authorization header")
                self._route(name, g, query, body, method)
            except HubError as err:
                headers = {"X-Error-Message": err.message.replace("\n", " ")[:500]}
                if err.code:
                    headers["X-Error-Code"] = err.code
                if err.commit:
                    headers["X-Repo-Commit"] = err.commit
                payload = err.message if err.message.startswith("{") else json.dumps({"error": err.message})
                self._send(err.status, payload.encode(), headers, head=method == "HEAD")
            return
        hub.unhandled.append((method, self.path))
        self._send(404, json.dumps({"error": f"mock Hub: no route for {method} {path}"}).encode(),
                   {"X-Error-Message": "no route"}, head=method == "HEAD")

    def _route(self, name: str, g: dict, query: dict, body: bytes, method: str):
        hub = self.state
        repo_type = _TYPES.get(g.get("t") or "", None) or {"datasets/": "dataset", "spaces/": "space"}.get(
            g.get("p") or "", "model")
        if name == "create":
            self._json(hub.create_repo(json.loads(body)))
        elif name == "validate":
            self._json(hub.validate_yaml(json.loads(body)))
        elif name == "whoami":
            self._json({"type": "user", "name": "dummy-user", "orgs": [], "auth": {"type": "access_token"}})
        elif name == "harnesses":  # telemetry registry huggingface_hub fetches once a day
            self._json({"standardEnvVars": [], "harnesses": {}})
        elif name == "preupload":
            self._json(hub.preupload(repo_type, g["repo"], g["rev"], json.loads(body)))
        elif name == "commit":
            lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
            self._json(hub.commit(repo_type, g["repo"], g["rev"], lines, query))
        elif name == "info":
            self._json(hub.info(repo_type, g["repo"], g["rev"] or "main"))
        elif name == "tree":
            recursive = query.get("recursive", "false").lower() in ("1", "true")
            self._json(hub.tree(repo_type, g["repo"], g["rev"], g["path"] or "", recursive))
        elif name == "lfs_batch":
            self._json(hub.lfs_batch(repo_type, g["repo"], json.loads(body)))
        elif name == "lfs_put":
            hub.lfs_put(g["oid"], int(query.get("size", -1)), body)
            self._send(200, b"")
        elif name == "lfs_verify":
            self._json(hub.lfs_verify(g["oid"], json.loads(body)))
        elif name == "resolve":
            data, headers = hub.resolve(repo_type, g["repo"], g["rev"], g["path"])
            self._send(200, data, headers, head=method == "HEAD")
        else:  # pragma: no cover
            raise HubError(500, f"route {name} has no handler")


__all__ = ["MockHub", "git_sha1", "lfs_pointer"]
