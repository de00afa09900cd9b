"""The models the benchmark times: an architecture by name, and our engine with the transformers
port of ZoeDepth built on identical random weights (the port's weights drawn once and mapped into
ours), so that both compute the same function. Random weights are fine for speed.
"""

from __future__ import annotations


def _hf_config(cfg):
    """A transformers ZoeDepthConfig describing the same architecture as our `cfg`."""
    from transformers import BeitConfig
    from transformers import ZoeDepthConfig as HFZoeDepthConfig

    backbone = BeitConfig(
        image_size=cfg.pretrain_size, patch_size=cfg.patch_size, num_hidden_layers=cfg.depth,
        hidden_size=cfg.embed_dim, intermediate_size=cfg.mlp_dim, num_attention_heads=cfg.num_heads,
        use_relative_position_bias=True, reshape_hidden_states=False, layer_norm_eps=cfg.layer_norm_eps,
        out_features=[f"stage{t + 1}" for t in cfg.taps],
    )
    kw = dict(
        backbone_config=backbone, neck_hidden_sizes=list(cfg.neck_channels), fusion_hidden_size=cfg.fusion_channels,
        bottleneck_features=cfg.fusion_channels, num_relative_features=cfg.relative_features,
        bin_embedding_dim=cfg.bin_embedding_dim, bin_centers_type=cfg.bin_centers_type,
        num_attractors=list(cfg.attractors), attractor_kind=cfg.attractor_kind,
        min_temp=cfg.min_temp, max_temp=cfg.max_temp,
        bin_configurations=[dict(name=h.name, n_bins=h.n_bins, min_depth=h.min_depth, max_depth=h.max_depth)
                            for h in cfg.heads],
    )
    if cfg.routed:
        kw.update(num_patch_transformer_layers=cfg.router_layers, patch_transformer_hidden_size=cfg.router_dim,
                  patch_transformer_intermediate_size=cfg.router_ffn_dim,
                  patch_transformer_num_attention_heads=cfg.router_heads)
    return HFZoeDepthConfig(**kw)


def arch_config(name: str):
    """The model package's architecture `name` (config_from_arch); an unknown name ends the command."""
    from zoedepth_ros.model import PRESETS, config_from_arch

    try:
        return config_from_arch(name)
    except ValueError:  # without overrides, only an unknown name
        raise SystemExit(f"unknown --arch {name!r}: use one of {', '.join(PRESETS)} or tiny-N/tiny-K/tiny-NK") from None


def build_models(arch: str, reference: bool, seed: int = 0):
    """(ours, port or None) with identical random weights."""
    import torch

    from zoedepth_ros.model import ZoeDepth
    from zoedepth_ros.model.checkpoint import build_from_state, hf_config, hf_to_ours

    cfg = arch_config(arch)
    torch.manual_seed(seed)
    if reference and cfg.routed:
        cfg = cfg.replace(router_dim=128)  # the port hard-codes the router classifier's width
    if not reference:
        return ZoeDepth(cfg).eval(), None
    try:
        from transformers import ZoeDepthForDepthEstimation
    except ImportError:
        raise SystemExit("--reference hf needs transformers (pip install -r requirements/test.txt)") from None
    port = ZoeDepthForDepthEstimation(_hf_config(cfg)).eval()
    ours_cfg = hf_config(port.config.to_dict()).replace(img_size=cfg.img_size)
    renamed, unmatched = hf_to_ours(port.state_dict(), ours_cfg)
    return build_from_state(ours_cfg, renamed, unmatched, "benchmark"), port
