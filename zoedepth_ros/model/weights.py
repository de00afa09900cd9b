"""The local weights caches and the explicit `zoedepth-ros weights` command.

Nothing here runs implicitly: `load_model("ZoeD_M12_NK")` and `load_model("Intel/zoedepth-nyu-kitti")`
only look in the caches, and fetching is a separate, explicit command that verifies what it downloads.

Preset cache: $ZOEDEPTH_ROS_WEIGHTS, else $XDG_CACHE_HOME/zoedepth_ros/weights, else
~/.cache/zoedepth_ros/weights. A preset NAME is found there as NAME.safetensors (project format,
e.g. written by `weights convert`), NAME.pt (official release) or NAME/ (Hugging Face directory).
`fetch NAME --sha256 DIGEST` downloads the official GitHub release: the release page lists each
asset's sha256 (or take `sha256sum` of a copy you trust).

Hugging Face repositories (`fetch Intel/zoedepth-nyu-kitti [--revision REV]`) go to huggingface_hub's
own cache (HF_HUB_CACHE, else HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
~/.cache/huggingface/hub), checked against the digests the Hub announces. Details and the KITTI
head's range: docs/weights.md.
"""

from __future__ import annotations

import hashlib
import os
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .config import PRESETS
from ..errors import ZoeDepthError

_RELEASES = "https://github.com/isl-org/ZoeDepth/releases/download/v1.0"


@dataclass(frozen=True)
class Release:
    url: str
    filename: str
    # We publish no digest we have not verified ourselves: until one is recorded here, `fetch`
    # requires the user to pass the sha256 they trust (--sha256).
    sha256: str | None = None


RELEASES = {name: Release(f"{_RELEASES}/{name}.pt", f"{name}.pt") for name in PRESETS}
# The transformers ports of the same three models (hf_hub.py); any other OWNER/NAME works too.
HF_REPOS = ("Intel/zoedepth-nyu-kitti", "Intel/zoedepth-nyu", "Intel/zoedepth-kitti")


class WeightsError(ZoeDepthError):
    pass


def cache_dir() -> Path:
    if os.environ.get("ZOEDEPTH_ROS_WEIGHTS"):
        return Path(os.environ["ZOEDEPTH_ROS_WEIGHTS"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "zoedepth_ros" / "weights"


def resolve_preset(name: str) -> Path:
    root = cache_dir()
    for candidate in (root / f"{name}.safetensors", root / f"{name}.pt", root / name):
        if candidate.exists():
            return candidate
    raise WeightsError(
        f"preset {name} is not in the weights cache {root}. On a machine with internet run "
        f"`zoedepth-ros weights fetch {name} --sha256 <digest>` (or copy {name}.pt there), "
        f"or set ZOEDEPTH_ROS_WEIGHTS to the directory holding it.")


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


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="manage model weights: fetch, convert, list the cache",
                              description=__doc__, formatter_class=__import__("argparse").RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="weights_command", metavar="ACTION", required=True)
    f = sub.add_parser("fetch", help="download official or Hugging Face weights into a cache (verified)")
    f.add_argument("name", help=f"a release ({', '.join(RELEASES)}) or a Hugging Face repository "
                                f"OWNER/NAME[@REVISION], e.g. {', '.join(HF_REPOS)}")
    f.add_argument("--sha256", help="release (required): expected sha256 of the file, as the GitHub release page "
                                    "lists it")
    f.add_argument("--url", help="release: download from this URL instead of the official release")
    f.add_argument("--revision", help="repository: branch, tag or full commit hash (default: main)")
    f.add_argument("--dir", type=Path, help="destination directory (default: the weights cache for a release, "
                                            "huggingface_hub's cache for a repository)")
    f.set_defaults(func=_cmd_fetch)
    c = sub.add_parser("convert", help="write the project format (.safetensors) from any loadable source")
    c.add_argument("source", help="official .pt, Hugging Face directory or cached repository, project file "
                                  "or preset name")
    c.add_argument("output", type=Path, help="output .safetensors path")
    c.add_argument("--kitti-max-depth", type=float, help="override the KITTI head's maximum depth (metres)")
    c.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="store the weights in this type: fp16 or bf16 halve the file (loading gives a float32 "
                        "model either way; default fp32)")
    c.set_defaults(func=_cmd_convert)
    ls = sub.add_parser("list", help="show the cache directory and the presets found in it")
    ls.set_defaults(func=_cmd_list)


def _cmd_fetch(args) -> int:
    from .hf_hub import DEFAULT_REVISION, fetch_repo, parse_repo

    repo = None if args.name in RELEASES else parse_repo(args.name)
    if repo is None:
        if args.revision:
            raise WeightsError(f"--revision is for Hugging Face repositories (OWNER/NAME), not {args.name}")
        path = fetch(args.name, sha256=args.sha256, url=args.url, dest_dir=args.dir)
        print(f"saved {path} (sha256 verified)")
        return 0
    repo_id, revision = repo
    if args.sha256 or args.url:
        raise WeightsError("--sha256 and --url are for GitHub releases; a repository is checked against the "
                           "digests the Hub announces (pin it with --revision COMMIT)")
    if args.revision and "@" in args.name and args.revision != revision:
        raise WeightsError(f"{args.name} and --revision {args.revision} name different revisions")
    revision = args.revision or revision
    snapshot = fetch_repo(repo_id, revision, cache_dir=args.dir)
    spec = repo_id if revision == DEFAULT_REVISION else f"{repo_id}@{revision}"
    where = f" with HF_HUB_CACHE={args.dir}" if args.dir else ""
    print(f"saved {repo_id}@{revision} (commit {snapshot.name}) in {snapshot}: digests verified, the model "
          f"loads; load it as {spec}{where}")
    return 0


def _cmd_convert(args) -> int:
    from .checkpoint import load_model, save_checkpoint
    from .estimator import PRECISIONS

    model = load_model(args.source, kitti_max_depth=args.kitti_max_depth)
    out = save_checkpoint(model, args.output, {"zoedepth_ros.converted_from": str(args.source)},
                          dtype=PRECISIONS[args.dtype])
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: heads {', '.join(model.config.head_names)}, {n / 1e6:.1f} M parameters stored as {args.dtype}")
    return 0


def _cmd_list(args) -> int:
    from .hf_hub import cached_commits, hub_cache_dir, resolve_cached

    root = cache_dir()
    print(f"weights cache: {root}")
    for name in PRESETS:
        try:
            print(f"  {name}: {resolve_preset(name)}")
        except WeightsError:
            print(f"  {name}: not present")
    print(f"Hugging Face cache: {hub_cache_dir()}")
    for repo_id in HF_REPOS:
        try:
            main = f"main -> {resolve_cached(repo_id).name}"
        except WeightsError:
            main = "main not present"
        commits = cached_commits(repo_id)
        print(f"  {repo_id}: {main}" + (f"; cached commits {', '.join(commits)}" if commits else ""))
    return 0
