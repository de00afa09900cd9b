"""Hugging Face Hub repositories (`Intel/zoedepth-*`) through huggingface_hub's own cache.

Loading never touches the network: `load_model("Intel/zoedepth-nyu-kitti")` reads the snapshot that
the cache's `refs/main` names, `load_model("Intel/zoedepth-nyu-kitti@REV")` the one of a branch, tag
or full commit hash. Downloading is the explicit `zoedepth-ros weights fetch REPO [--revision REV]`:
it fetches config.json and one weights file only, checks each against the digest the Hub announces
(sha256 for LFS files, the git blob id for small ones: huggingface_hub itself only checks the size
of plain HTTP downloads), builds the model from them, and only then points the revision's ref at the
commit. On failure it removes what it added, so nothing half-done is left for `load_model` to pick up.

The cache is huggingface_hub's (HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
else ~/.cache/huggingface/hub, as huggingface_hub reads them when it is imported), so a model that
transformers downloaded loads too.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

from .weights import WeightsError

DEFAULT_REVISION = "main"
CONFIG_FILE = "config.json"
# In order of preference; the loader also reads a sharded `model.safetensors.index.json` that another
# tool put in the cache, but `fetch` does not download shards (no ZoeDepth repository has them).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SHARD_INDEX = "model.safetensors.index.json"
_COMMIT = re.compile(r"[0-9a-f]{40}")
_FILE_SUFFIXES = {".pt", ".pth", ".bin", ".safetensors"}


class HubError(WeightsError):
    pass


def parse_repo(source: str) -> tuple[str, str] | None:
    """(repo_id, revision) for `OWNER/NAME[@REVISION]` (revision default `main`), None for anything else."""
    repo_id, at, revision = source.partition("@")
    # A name with a checkpoint suffix is a mistyped path, not a repository: say so instead.
    if repo_id.count("/") != 1 or (at and not revision) or Path(repo_id).suffix in _FILE_SUFFIXES:
        return None
    from huggingface_hub.errors import HFValidationError
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        return None
    return repo_id, revision or DEFAULT_REVISION


def hub_cache_dir() -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def fetch_command(repo_id: str, revision: str) -> str:
    suffix = "" if revision == DEFAULT_REVISION else f" --revision {revision}"
    return f"zoedepth-ros weights fetch {repo_id}{suffix}"


def resolve_cached(repo_id: str, revision: str = DEFAULT_REVISION, cache_dir: Path | None = None) -> Path:
    """The cached snapshot directory of `repo_id` at `revision`, found without any network access."""
    from huggingface_hub import try_to_load_from_cache

    cache = Path(cache_dir or hub_cache_dir())
    config = try_to_load_from_cache(repo_id, CONFIG_FILE, cache_dir=cache, revision=revision)
    snapshot = Path(config).parent if isinstance(config, str) else None
    if snapshot is None or not any((snapshot / f).is_file() for f in (*WEIGHT_FILES, _SHARD_INDEX)):
        cached = cached_commits(repo_id, cache)
        known = f" (cached commits: {', '.join(cached)}; load one as {repo_id}@COMMIT)" if cached else ""
        raise HubError(
            f"Hugging Face repository {repo_id} at revision {revision} is not complete in the cache {cache}{known}. "
            f"On a machine with internet run `{fetch_command(repo_id, revision)}` (or set HF_HUB_CACHE / HF_HOME "
            f"to the cache holding it).")
    return snapshot


def cached_commits(repo_id: str, cache_dir: Path | None = None) -> list[str]:
    """Commits of `repo_id` whose snapshot holds config.json and a weights file."""
    from huggingface_hub.file_download import repo_folder_name

    snapshots = Path(cache_dir or hub_cache_dir()) / repo_folder_name(repo_id=repo_id, repo_type="model") / "snapshots"
    if not snapshots.is_dir():
        return []
    return sorted(s.name for s in snapshots.iterdir() if (s / CONFIG_FILE).is_file()
                  and any((s / f).is_file() for f in (*WEIGHT_FILES, _SHARD_INDEX)))


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
