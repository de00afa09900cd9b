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

import argparse
from pathlib import Path

from ..argtypes import CHECKPOINT_HELP
from .config import PRESETS
from .fetch import fetch, fetch_repo
from .hf_hub import DEFAULT_REVISION, cached_commits, hub_cache_dir, parse_repo, resolve_cached
from .weights import HF_REPOS, RELEASES, WeightsError, cache_dir, resolve_preset


def add_parser(subparsers, name: str) -> None:
    p = subparsers.add_parser(name, help="manage model weights: fetch, convert, list the cache",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
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
    c.add_argument("source", help=CHECKPOINT_HELP)
    c.add_argument("output", type=Path, help="output .safetensors path")
    c.add_argument("--kitti-max-depth", type=float, help="override the KITTI head's maximum depth (metres)")
    c.add_argument("--dtype", choices=("fp32", "fp16", "bf16"), default="fp32",
                   help="store the weights in this type: fp16 or bf16 halve the file (loading gives a float32 "
                        "model either way; default fp32)")
    c.set_defaults(func=_cmd_convert)
    ls = sub.add_parser("list", help="show the cache directory and the presets found in it")
    ls.set_defaults(func=_cmd_list)


def _cmd_fetch(args) -> int:
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
    from .zoedepth import PRECISIONS

    model = load_model(args.source, kitti_max_depth=args.kitti_max_depth)
    out = save_checkpoint(model, args.output, {"zoedepth_ros.converted_from": str(args.source)},
                          dtype=PRECISIONS[args.dtype])
    n = sum(p.numel() for p in model.parameters())
    print(f"wrote {out}: heads {', '.join(model.config.head_names)}, {n / 1e6:.1f} M parameters stored as {args.dtype}")
    return 0


def _cmd_list(args) -> int:
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
