"""Hugging Face repositories: offline loading from huggingface_hub's cache, and `weights fetch REPO`
against a loopback stand-in for the Hub (nothing here reaches the internet)."""

from __future__ import annotations

import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from urllib.parse import unquote

import pytest
import torch
from huggingface_hub import constants

from zoedepth_ros.cli import main as cli_main
from zoedepth_ros.model import CheckpointError, load_model
from zoedepth_ros.model.fetch import fetch_repo
from zoedepth_ros.model.hf_hub import HubError

from hf_oracle import make_hf_model

REPO = "Intel/zoedepth-nyu-kitti"
COMMIT_A, COMMIT_B = "a" * 40, "b" * 40
LFS = (".safetensors", ".bin")


def _etag(name: str, data: bytes) -> str:
    """What the Hub announces: sha256 for LFS files, the git blob id for the others."""
    if name.endswith(LFS):
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _repo_dir(cache: Path, repo_id: str) -> Path:
    return cache / ("models--" + repo_id.replace("/", "--"))


def put_in_cache(cache: Path, repo_id: str, commit: str, files: dict[str, bytes], ref: str | None = "main"):
    """Lay files out as huggingface_hub does: blobs named by etag, snapshot symlinks, refs/<ref>."""
    root = _repo_dir(cache, repo_id)
    for name, data in files.items():
        etag = _etag(name, data)
        (root / "blobs").mkdir(parents=True, exist_ok=True)
        (root / "blobs" / etag).write_bytes(data)
        link = root / "snapshots" / commit / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(f"../../blobs/{etag}")
    if ref:
        (root / "refs").mkdir(parents=True, exist_ok=True)
        (root / "refs" / ref).write_text(commit)


@pytest.fixture(scope="module")
def hf_files(tmp_path_factory) -> dict[str, bytes]:
    """The files of a tiny random-weight NK repository, as transformers saves them."""
    path = tmp_path_factory.mktemp("hf_nk")
    make_hf_model("NK", seed=3).save_pretrained(path)
    return {name: (path / name).read_bytes() for name in ("config.json", "model.safetensors")}


@pytest.fixture(scope="module")
def reference(hf_files, tmp_path_factory):
    """Our model loaded from the same files as a plain directory."""
    path = tmp_path_factory.mktemp("hf_dir")
    for name, data in hf_files.items():
        (path / name).write_bytes(data)
    return load_model(path)


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> Path:
    """huggingface_hub's cache directory, pointed at a fresh folder (the library reads HF_HUB_CACHE at import)."""
    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    return cache


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError(f"network access attempted: {args}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def _same(a, b):
    x = torch.randn(1, 3, 192, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(a(x).metric_depth, b(x).metric_depth, rtol=0, atol=0)


def test_repository_loads_offline_from_the_cache(hf_files, reference, hub_cache, no_network):
    put_in_cache(hub_cache, REPO, COMMIT_A, hf_files)
    _same(reference, load_model(REPO))
    _same(reference, load_model(f"{REPO}@{COMMIT_A}"))
    with pytest.raises(CheckpointError, match=f"weights fetch {REPO} --revision v2"):
        load_model(f"{REPO}@v2")


def test_missing_or_incomplete_repository_says_what_to_run(hf_files, hub_cache, no_network):
    expected = f"not complete in the cache {hub_cache}.*`zoedepth-ros weights fetch {REPO}`"
    with pytest.raises(CheckpointError, match=expected):
        load_model(REPO)
    # A snapshot at a commit hash but no refs/main (fetched with --revision COMMIT): the error names the commit.
    put_in_cache(hub_cache, REPO, COMMIT_A, hf_files, ref=None)
    with pytest.raises(CheckpointError, match=f"cached commits: {COMMIT_A}; load one as {REPO}@COMMIT"):
        load_model(REPO)
    # config.json without weights (an interrupted download by another tool) is not a model.
    put_in_cache(hub_cache, REPO, COMMIT_B, {"config.json": hf_files["config.json"]})
    with pytest.raises(CheckpointError, match="not complete in the cache"):
        load_model(REPO)
    with pytest.raises(CheckpointError, match="not a preset .* not a Hugging Face repository id"):
        load_model("runs/best.safetensors")


class HubServer:
    """The Hub's `/{repo}/resolve/{revision}/{file}` as huggingface_hub 2.4 uses it: HEAD gives the metadata
    (X-Repo-Commit, ETag, X-Linked-Etag/-Size for LFS files), GET the content. `serve(..., body=)` serves
    other bytes than the announced ones (a corrupt transfer)."""

    def __init__(self):
        self.refs: dict[str, dict[str, str]] = {}  # repo -> ref -> commit
        self.files: dict[tuple[str, str], dict[str, tuple[bytes, str]]] = {}  # (repo, commit) -> file -> (body, etag)
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            timeout = 5  # a stalled client cannot hold a handler thread

            def do_HEAD(self):  # noqa: N802
                outer._answer(self, body=False)

            def do_GET(self):  # noqa: N802
                outer._answer(self, body=True)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def serve(self, repo: str, commit: str, files: dict[str, bytes], body: dict[str, bytes] | None = None,
              ref: str = "main"):
        self.refs.setdefault(repo, {})[ref] = commit
        self.files[(repo, commit)] = {n: ((body or {}).get(n, d), _etag(n, d)) for n, d in files.items()}

    def _answer(self, handler, body: bool):
        parts = handler.path.split("/")
        if len(parts) != 6 or parts[3] != "resolve":
            return self._error(handler, 400, "BadRequest")
        repo, revision, name = f"{parts[1]}/{parts[2]}", unquote(parts[4]), unquote(parts[5])
        if repo not in self.refs:
            return self._error(handler, 401, "RepoNotFound")
        commit = self.refs[repo].get(revision, revision)
        if (repo, commit) not in self.files:
            return self._error(handler, 404, "RevisionNotFound")
        if name not in self.files[(repo, commit)]:
            return self._error(handler, 404, "EntryNotFound", commit)
        data, etag = self.files[(repo, commit)][name]
        handler.send_response(200)
        handler.send_header("X-Repo-Commit", commit)
        handler.send_header("ETag", f'"{etag}"')
        if name.endswith(LFS):
            handler.send_header("X-Linked-Etag", f'"{etag}"')
            handler.send_header("X-Linked-Size", str(len(data)))
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)

    @staticmethod
    def _error(handler, status: int, code: str, commit: str | None = None):
        handler.send_response(status)
        handler.send_header("X-Error-Code", code)
        if commit:
            handler.send_header("X-Repo-Commit", commit)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def hub():
    server = HubServer()
    yield server
    server.close()


def _cache_files(cache: Path) -> set[str]:
    root = _repo_dir(cache, REPO)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file() or p.is_symlink()}


def test_fetch_cli_then_offline_load(hf_files, reference, hub, tmp_path, monkeypatch, capsys):
    """`weights fetch REPO` in a fresh process that finds the Hub through HF_ENDPOINT and its cache through
    HF_HOME, as huggingface_hub documents them; afterwards the model loads with the server gone."""
    hub.serve(REPO, COMMIT_A, hf_files)
    env = dict(os.environ, HF_ENDPOINT=hub.url, HF_HOME=str(tmp_path / "home"), HF_HUB_DISABLE_PROGRESS_BARS="1",
               HF_HUB_DISABLE_TELEMETRY="1", NO_PROXY="127.0.0.1", no_proxy="127.0.0.1")
    env.pop("HF_HUB_CACHE", None)
    done = subprocess.run([sys.executable, "-m", "zoedepth_ros.cli", "weights", "fetch", REPO],
                          env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert f"commit {COMMIT_A}" in done.stdout and f"load it as {REPO}" in done.stdout
    cache = tmp_path / "home" / "hub"
    assert (_repo_dir(cache, REPO) / "refs" / "main").read_text() == COMMIT_A
    hub.close()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    _same(reference, load_model(REPO))
    assert cli_main(["weights", "list"]) == 0
    assert f"{REPO}: main -> {COMMIT_A}; cached commits {COMMIT_A}" in capsys.readouterr().out


def test_fetch_command_refuses_mixed_options(capsys, no_network):
    for argv, message in (
            (["ZoeD_M12_NK", "--revision", "v1"], "--revision is for Hugging Face repositories"),
            ([REPO, "--sha256", "0" * 64], "--sha256 and --url are for GitHub releases"),
            ([f"{REPO}@v1", "--revision", "v2"], "name different revisions")):
        assert cli_main(["weights", "fetch", *argv]) == 2
        assert message in capsys.readouterr().err


def test_fetch_pins_a_revision_and_falls_back_to_pytorch_model_bin(hf_files, reference, hub, hub_cache, tmp_path):
    from safetensors.torch import load

    torch.save(load(hf_files["model.safetensors"]), tmp_path / "pytorch_model.bin")
    hub.serve(REPO, COMMIT_A, {"config.json": hf_files["config.json"],
                               "pytorch_model.bin": (tmp_path / "pytorch_model.bin").read_bytes()})
    hub.serve(REPO, COMMIT_B, hf_files)  # main moves on; the pinned commit stays reachable
    snapshot = fetch_repo(REPO, COMMIT_A, endpoint=hub.url)
    assert snapshot == _repo_dir(hub_cache, REPO) / "snapshots" / COMMIT_A
    assert sorted(p.name for p in snapshot.iterdir()) == ["config.json", "pytorch_model.bin"]
    assert not (_repo_dir(hub_cache, REPO) / "refs" / "main").exists()  # a commit pin moves no ref
    _same(reference, load_model(f"{REPO}@{COMMIT_A}"))
    fetch_repo(REPO, "main", endpoint=hub.url)
    assert (_repo_dir(hub_cache, REPO) / "refs" / "main").read_text() == COMMIT_B
    _same(reference, load_model(REPO))


def test_wrong_revision_or_repository_is_a_clear_error(hf_files, hub, hub_cache):
    hub.serve(REPO, COMMIT_A, hf_files)
    with pytest.raises(HubError, match=f"{REPO} has no revision 'v9'"):
        fetch_repo(REPO, "v9", endpoint=hub.url)
    with pytest.raises(HubError, match="no Hugging Face repository Intel/zoedepth-nowhere"):
        fetch_repo("Intel/zoedepth-nowhere", endpoint=hub.url)
    assert _cache_files(hub_cache) == set()
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    with pytest.raises(HubError, match=f"download of {REPO}@main failed"):
        fetch_repo(REPO, endpoint=f"http://127.0.0.1:{port}", timeout=5)


def test_corrupt_download_is_removed_and_the_previous_main_stays(hf_files, reference, hub, hub_cache):
    hub.serve(REPO, COMMIT_A, hf_files)
    fetch_repo(REPO, endpoint=hub.url)
    good = _cache_files(hub_cache)
    # main moves to a commit whose weights arrive with the announced size but other bytes.
    new = dict(hf_files, **{"model.safetensors": hf_files["model.safetensors"][:-8] + b"newbytes"})
    damaged = bytearray(new["model.safetensors"])
    damaged[len(damaged) // 2] ^= 0xFF
    hub.serve(REPO, COMMIT_B, new, body={"model.safetensors": bytes(damaged)})
    with pytest.raises(HubError, match=f"{REPO}@main \\(commit {COMMIT_B}\\): model.safetensors is corrupt"):
        fetch_repo(REPO, endpoint=hub.url)
    assert _cache_files(hub_cache) == good  # no blob, no snapshot link of commit B, refs/main unchanged
    assert not (_repo_dir(hub_cache, REPO) / "snapshots" / COMMIT_B).exists()
    _same(reference, load_model(REPO))
    with pytest.raises(CheckpointError, match="not complete in the cache"):
        load_model(f"{REPO}@{COMMIT_B}")


def test_truncated_weights_with_a_matching_digest_do_not_stay(hf_files, hub, hub_cache):
    """The Hub itself holds a cut file (digest and size agree with it): the load check catches it."""
    cut = hf_files["model.safetensors"][: len(hf_files["model.safetensors"]) // 2]
    hub.serve(REPO, COMMIT_A, dict(hf_files, **{"model.safetensors": cut}))
    with pytest.raises(HubError, match=f"{REPO}@main \\(commit {COMMIT_A}\\) does not load.*truncated or corrupt"):
        fetch_repo(REPO, endpoint=hub.url)
    assert _cache_files(hub_cache) == set()
    with pytest.raises(CheckpointError, match="not complete in the cache"):
        load_model(REPO)
