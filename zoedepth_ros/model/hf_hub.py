"""Hugging Face Hub repositories (`Intel/zoedepth-*`) through huggingface_hub's own cache.

Loading never touches the network: `load_model("Intel/zoedepth-nyu-kitti")` reads the snapshot that
the cache's `refs/main` names, `load_model("Intel/zoedepth-nyu-kitti@REV")` the one of a branch, tag
or full commit hash. Downloading is the explicit `zoedepth-ros weights fetch REPO [--revision REV]`
(`fetch.fetch_repo`): it fetches config.json and one weights file only, verified, so nothing
half-done is left for `load_model` to pick up.

The cache is huggingface_hub's (HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub,
else ~/.cache/huggingface/hub, as huggingface_hub reads them when it is imported), so a model that
transformers downloaded loads too.
"""

from __future__ import annotations

from pathlib import Path

from .weights import WeightsError

DEFAULT_REVISION = "main"
CONFIG_FILE = "config.json"
# In order of preference; the loader also reads a sharded `model.safetensors.index.json` that another
# tool put in the cache, but `fetch` does not download shards (no ZoeDepth repository has them).
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
_SHARD_INDEX = "model.safetensors.index.json"
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
