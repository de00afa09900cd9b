"""Architecture description of ZoeDepth models: presets and small variants for tests/training."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass


@dataclass(frozen=True)
class BinHeadConfig:
    """One metric-bins head: its domain name and the depth range its bins cover."""

    name: str
    n_bins: int = 64
    min_depth: float = 1e-3
    max_depth: float = 10.0


@dataclass(frozen=True)
class ZoeDepthConfig:
    # Encoder: MiDaS v3.1 BEiT. `pretrain_size` fixes the relative position table (47x47 for 384/16).
    embed_dim: int = 1024
    depth: int = 24
    taps: tuple[int, ...] = (5, 11, 17, 23)  # the blocks whose tokens feed the decoder
    num_heads: int = 16
    mlp_dim: int = 4096
    patch_size: int = 16
    pretrain_size: int = 384
    layer_norm_eps: float = 1e-6
    # DPT decoder
    neck_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    fusion_channels: int = 256
    relative_features: int = 32
    # Metric bins head(s); more than one head adds the router (NK).
    heads: tuple[BinHeadConfig, ...] = (BinHeadConfig("nyu", 64, 1e-3, 10.0),)
    bin_centers_type: str = "softplus"  # "softplus" (N, NK) or "normed" (K)
    bin_embedding_dim: int = 128
    attractors: tuple[int, ...] = (16, 8, 4, 1)
    attractor_kind: str = "mean"
    seed_mlp_dim: int = 256
    projector_mlp_dim: int = 128
    log_binomial_bottleneck_factor: int = 2
    min_temp: float = 0.0212
    max_temp: float = 50.0
    condition_on_relative_depth: bool = True
    # Router (only with several heads)
    router_dim: int = 128
    router_layers: int = 4
    router_heads: int = 4
    router_ffn_dim: int = 1024
    # Training/evaluation input size (H, W); inference keeps the aspect ratio around it.
    img_size: tuple[int, int] = (384, 512)

    def __post_init__(self):
        problems = []
        if self.embed_dim % self.num_heads:
            problems.append(f"embed_dim {self.embed_dim} is not a multiple of num_heads {self.num_heads}")
        if len(self.taps) != 4 or any(not 0 <= t < self.depth for t in self.taps):
            problems.append(f"taps {self.taps} must be 4 block indices in [0, {self.depth})")
        if len(self.neck_channels) != 4 or len(self.attractors) != 4:
            problems.append("neck_channels and attractors need 4 entries (one per DPT stage)")
        if self.bin_centers_type not in ("softplus", "normed"):
            problems.append(f"bin_centers_type must be 'softplus' or 'normed', not {self.bin_centers_type!r}")
        if not self.heads or len({h.name for h in self.heads}) != len(self.heads):
            problems.append("heads must be non-empty with unique names")
        for h in self.heads:
            if not 0 < h.min_depth < h.max_depth:
                problems.append(f"head {h.name}: need 0 < min_depth < max_depth")
        if any(s % 32 for s in self.img_size):
            problems.append(f"img_size {self.img_size} must be multiples of 32")
        if problems:
            raise ValueError("invalid ZoeDepthConfig: " + "; ".join(problems))

    @property
    def head_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.heads)

    @property
    def routed(self) -> bool:
        return len(self.heads) > 1

    def replace(self, **changes) -> ZoeDepthConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict) -> ZoeDepthConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"unknown ZoeDepthConfig fields: {sorted(unknown)}")
        values = dict(data)
        if "heads" in values:
            values["heads"] = tuple(BinHeadConfig(**h) if isinstance(h, dict) else h for h in values["heads"])
        for name in ("taps", "neck_channels", "attractors", "img_size"):
            if name in values:
                values[name] = tuple(values[name])
        return cls(**values)


# The three released models (zoedepth-facts.md: effective values of the official configs).
ZoeD_M12_N = ZoeDepthConfig()
ZoeD_M12_K = ZoeDepthConfig(
    heads=(BinHeadConfig("kitti", 64, 1e-3, 80.0),),
    bin_centers_type="normed",
    img_size=(384, 768),
)
ZoeD_M12_NK = ZoeDepthConfig(
    heads=(BinHeadConfig("nyu", 64, 1e-3, 10.0), BinHeadConfig("kitti", 64, 1e-3, 80.0)),
    attractors=(16, 16, 16, 16),  # the official code passes [16,8,4,1] to the wrong argument
    seed_mlp_dim=64,
    projector_mlp_dim=64,
    log_binomial_bottleneck_factor=4,
    condition_on_relative_depth=False,
)
PRESETS: dict[str, ZoeDepthConfig] = {"ZoeD_M12_N": ZoeD_M12_N, "ZoeD_M12_K": ZoeD_M12_K, "ZoeD_M12_NK": ZoeD_M12_NK}


def tiny_config(kind: str = "NK", **overrides) -> ZoeDepthConfig:
    """A few-MB model of the same structure as the preset `kind` (N, K or NK), for tests and demos."""
    base = {"N": ZoeD_M12_N, "K": ZoeD_M12_K, "NK": ZoeD_M12_NK}[kind.upper()]
    small = dict(
        embed_dim=64, depth=4, num_heads=4, mlp_dim=128, taps=(0, 1, 2, 3),
        neck_channels=(16, 32, 64, 64), fusion_channels=32, relative_features=16,
        heads=tuple(dataclasses.replace(h, n_bins=16) for h in base.heads),
        bin_embedding_dim=32, router_dim=32, router_ffn_dim=64, img_size=(192, 256),
    )
    small["seed_mlp_dim"] = 16 if base.routed else 64
    small["projector_mlp_dim"] = 16 if base.routed else 32
    small.update(overrides)
    return base.replace(**small)


# Architecture names: the presets, and their small variants (tests, demos, benchmarks of overhead).
TINY_KINDS = ("N", "K", "NK")
ARCH_NAMES: tuple[str, ...] = (*PRESETS, *(f"tiny-{kind}" for kind in TINY_KINDS))


def config_from_arch(name: str, **overrides) -> ZoeDepthConfig:
    """The architecture called `name`, with `overrides` (ZoeDepthConfig fields, as from_dict reads
    them: lists for tuples, mappings for heads) changed from it.

    Names: a preset (`ZoeD_M12_N`, `ZoeD_M12_K`, `ZoeD_M12_NK`) or `tiny-N`, `tiny-K`, `tiny-NK`
    (tiny_config; the kind in any case). Raises ValueError for an unknown name, and ValueError or
    TypeError (from from_dict) for overrides that are not a valid ZoeDepthConfig.
    """
    kind = name[len("tiny-"):] if name.startswith("tiny-") else None
    if name in PRESETS:
        base = PRESETS[name]
    elif kind is not None and kind.upper() in TINY_KINDS:
        base = tiny_config(kind)
    else:
        raise ValueError(f"unknown architecture {name!r}: use one of {', '.join(ARCH_NAMES)}")
    return ZoeDepthConfig.from_dict({**base.to_dict(), **overrides})
