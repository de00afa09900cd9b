"""Downloads into the weights caches: official GitHub releases and Hugging Face repositories.

The only module of the model package that touches the network, and only when called, by the
explicit `zoedepth-ros weights fetch`: loading (`load_model`) reads the caches (`weights.py`,
`hf_hub.py`) and never downloads. Everything downloaded is verified before it takes its final
name: a release against the sha256 the user passes, a repository against the digests the Hub
announces (sha256 for LFS files, the git blob id for small ones: huggingface_hub itself only checks
the size of plain HTTP downloads) and by building the model from it; only then does a repository's
revision ref point at the commit. On failure what was added is removed again.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import urllib.request
from pathlib import Path

from .hf_hub import CONFIG_FILE, DEFAULT_REVISION, WEIGHT_FILES, HubError, hub_cache_dir
from .weights import RELEASES, Release, WeightsError, cache_dir

_COMMIT = re.compile(r"[0-9a-f]{40}")


def sha256_of(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def fetch(name: str, sha256: str | None = None, url: str | None = None, dest_dir: Path | None = None,
          progress: bool = True, timeout: float = 60.0) -> Path:
    """Download a release into the cache, verify its sha256, and only then give it its final name."""
    if name not in RELEASES and url is None:
        raise WeightsError(f"unknown weights {name!r}; known: {', '.join(RELEASES)} (or pass --url)")
    release = RELEASES.get(name, Release(url or "", f"{name}.pt"))
    url = url or release.url
    expected = (sha256 or release.sha256 or "").lower()
    if len(expected) != 64 or any(c not in "0123456789abcdef" for c in expected):
        raise WeightsError(f"a sha256 (64 hex digits) is required to fetch {name}: pass --sha256")
    dest_dir = Path(dest_dir or cache_dir())
    dest_dir.mkdir(parents=True, exist_ok=True)
    final = dest_dir / release.filename
    partial = dest_dir / f".{release.filename}.partial-{os.getpid()}"
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            from tqdm import tqdm

            with tqdm(total=total, unit="B", unit_scale=True, desc=release.filename, disable=not progress,
                      file=sys.stderr) as bar:
                while block := response.read(1 << 20):
                    out.write(block)
                    digest.update(block)
                    bar.update(len(block))
            if total is not None and out.tell() != total:
                raise WeightsError(f"download of {url} ended after {out.tell()} of {total} bytes")
        if digest.hexdigest() != expected:
            raise WeightsError(f"sha256 mismatch for {url}: got {digest.hexdigest()}, expected {expected}")
        os.replace(partial, final)
    except OSError as exc:
        raise WeightsError(f"download of {url} failed: {exc}") from None
    finally:
        partial.unlink(missing_ok=True)
    return final


def _content_digest(path: Path, etag: str) -> str:
    """The digest of `path` in the form of the Hub's etag: sha256 (LFS files) or the git blob sha1."""
    if len(etag) == 64:
        digest = hashlib.sha256()
    elif len(etag) == 40:
        digest = hashlib.sha1(usedforsecurity=False)
        digest.update(f"blob {path.stat().st_size}\0".encode())
    else:
        raise HubError(f"cannot verify {path.name}: the server announced etag {etag!r}, neither a sha256 nor a git "
                       f"blob id (is HF_ENDPOINT a Hugging Face Hub?)")
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _files(root: Path) -> set[Path]:
    return {p for p in root.rglob("*") if p.is_file() or p.is_symlink()} if root.is_dir() else set()


def fetch_repo(repo_id: str, revision: str = DEFAULT_REVISION, cache_dir: Path | None = None,
               endpoint: str | None = None, timeout: float = 60.0) -> Path:
    """Download what `load_model` needs from a Hub repository into the cache; returns the snapshot directory."""
    import httpx2
    from huggingface_hub import get_hf_file_metadata, hf_hub_download, hf_hub_url
    from huggingface_hub.errors import RemoteEntryNotFoundError, RepositoryNotFoundError, RevisionNotFoundError
    from huggingface_hub.file_download import repo_folder_name

    cache = Path(cache_dir or hub_cache_dir())
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    label = f"{repo_id}@{revision}"
    before = _files(storage / "blobs") | _files(storage / "snapshots")

    def metadata(filename: str, rev: str):
        return get_hf_file_metadata(hf_hub_url(repo_id, filename, revision=rev, endpoint=endpoint),
                                    timeout=timeout, endpoint=endpoint)

    def download(filename: str, commit: str, etag: str) -> Path:
        path = Path(hf_hub_download(repo_id, filename, revision=commit, cache_dir=cache, endpoint=endpoint,
                                    etag_timeout=timeout))
        actual = _content_digest(path, etag)
        if actual != etag:
            # A corrupt blob: remove it, whoever wrote it, so neither we nor transformers reuse it. The
            # snapshot entry links to it (or is a copy where the cache has no symlinks).
            if path.is_symlink():
                (path.parent / os.readlink(path)).unlink(missing_ok=True)
            path.unlink()
            raise HubError(f"{label} (commit {commit}): {filename} is corrupt: its digest is {actual}, the Hub "
                           f"announced {etag}; removed it from the cache, run the fetch again")
        return path

    try:
        try:
            meta = metadata(CONFIG_FILE, revision)
            commit = meta.commit_hash or ""
            if not _COMMIT.fullmatch(commit):
                raise HubError(f"{label}: the server named no commit for {CONFIG_FILE} (is HF_ENDPOINT a Hub?)")
            config = download(CONFIG_FILE, commit, meta.etag or "")
            for filename in WEIGHT_FILES:
                try:
                    meta = metadata(filename, commit)
                except RemoteEntryNotFoundError:
                    continue
                download(filename, commit, meta.etag or "")
                break
            else:
                raise HubError(f"{label} (commit {commit}) has none of {', '.join(WEIGHT_FILES)}")
        except RevisionNotFoundError:
            raise HubError(f"{repo_id} has no revision {revision!r} (a branch, tag or full commit hash)") from None
        except RepositoryNotFoundError:
            raise HubError(f"no Hugging Face repository {repo_id} (or it is private or gated)") from None
        except (OSError, httpx2.HTTPError) as exc:
            raise HubError(f"download of {label} failed: {exc}") from None
        _check_loads(config.parent, f"{label} (commit {commit})")
        if revision != commit:
            _write_ref(storage / "refs" / revision, commit)
    except BaseException:
        added = (_files(storage / "blobs") | _files(storage / "snapshots")) - before
        for path in added:
            path.unlink(missing_ok=True)
        for folder in {p.parent for p in added if p.parent.parent.name == "snapshots"}:
            try:
                folder.rmdir()  # only if now empty: another fetch may have filled it meanwhile
            except OSError:
                pass
        raise
    return config.parent


def _check_loads(snapshot: Path, label: str) -> None:
    """Build the model: a complete, correctly hashed file can still be truncated at the source or not ZoeDepth."""
    from .checkpoint import CheckpointError, load_model

    try:
        load_model(snapshot)
    except CheckpointError as exc:
        raise HubError(f"{label} does not load (the files this fetch added are removed again): {exc}") from None


def _write_ref(ref: Path, commit: str) -> None:
    ref.parent.mkdir(parents=True, exist_ok=True)
    tmp = ref.with_name(f".{ref.name}.partial-{os.getpid()}")
    tmp.write_text(commit)
    os.replace(tmp, ref)
