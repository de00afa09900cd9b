"""Random-weight Hugging Face ZoeDepth models: the independent oracle of the parity tests.

The port's default initialisation gives an almost constant depth map, which would make a
comparison meaningless, so every parameter is re-drawn with a scale that keeps activations O(1).
"""

from __future__ import annotations

import math

import torch

TINY_BEIT = dict(image_size=384, patch_size=16, num_hidden_layers=4, hidden_size=64, intermediate_size=128,
                 num_attention_heads=4, out_features=["stage1", "stage2", "stage3", "stage4"])
FULL_BEIT = dict(image_size=384, patch_size=16, num_hidden_layers=24, hidden_size=1024, intermediate_size=4096,
                 num_attention_heads=16, out_features=["stage6", "stage12", "stage18", "stage24"])
NK_BINS = [{"name": "nyu", "n_bins": 64, "min_depth": 1e-3, "max_depth": 10.0},
           {"name": "kitti", "n_bins": 64, "min_depth": 1e-3, "max_depth": 80.0}]


def hf_config(kind: str, full: bool = False):
    from transformers import BeitConfig, ZoeDepthConfig

    backbone = BeitConfig(use_relative_position_bias=True, reshape_hidden_states=False, layer_norm_eps=1e-12,
                          **(FULL_BEIT if full else TINY_BEIT))
    kw = dict(backbone_config=backbone)
    if not full:
        kw.update(neck_hidden_sizes=[32, 64, 96, 96], fusion_hidden_size=64, bottleneck_features=64,
                  num_relative_features=16, bin_embedding_dim=32)
    else:
        kw.update(neck_hidden_sizes=[256, 512, 1024, 1024])
    if kind == "NK":
        kw.update(bin_configurations=[dict(b, n_bins=64 if full else 16) for b in NK_BINS], bin_embedding_dim=128,
                  num_patch_transformer_layers=4, patch_transformer_hidden_size=128,
                  patch_transformer_intermediate_size=1024 if full else 256, patch_transformer_num_attention_heads=4)
    elif kind == "K":
        kw.update(bin_centers_type="normed",
                  bin_configurations=[{"n_bins": 64 if full else 16, "min_depth": 1e-3, "max_depth": 80.0}])
    else:
        kw.update(bin_configurations=[{"n_bins": 64 if full else 16, "min_depth": 1e-3, "max_depth": 10.0}])
    return ZoeDepthConfig(**kw)


@torch.no_grad()
def redraw(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if "relative_position_bias_table" in name:
            p.copy_(torch.randn(p.shape, generator=g))
        elif "lambda_" in name:
            p.copy_(0.1 + 0.05 * torch.randn(p.shape, generator=g))
        elif "layernorm" in name or "norm1" in name or "norm2" in name:
            p.copy_((1.0 if name.endswith("weight") else 0.0) + 0.1 * torch.randn(p.shape, generator=g))
        elif p.ndim == 1:
            p.copy_(0.1 * torch.randn(p.shape, generator=g))
        else:
            fan_in = p[0].numel()
            if "resize" in name and "reassemble" in name and p.shape[-1] in (2, 4):  # transposed conv
                fan_in = p.shape[0] * p.shape[-1] * p.shape[-2] // (p.shape[-1] * p.shape[-2])
            p.copy_(torch.randn(p.shape, generator=g) * math.sqrt(2.0 / fan_in))
    return model


def make_hf_model(kind: str, seed: int = 0, full: bool = False):
    from transformers import ZoeDepthForDepthEstimation

    torch.manual_seed(seed)
    return redraw(ZoeDepthForDepthEstimation(hf_config(kind, full)).eval(), seed)


def hf_to_official(state: dict, hidden: int) -> dict:
    """A transformers (5.x names) state dict in the isl-org/ZoeDepth layout, with the timm-0.6 buffers,
    written from the official module structure (the inverse of the port's conversion script)."""
    import re

    out = {}
    qkv = {}
    for key, value in state.items():
        m = re.match(r"backbone\.beit\.layers\.(\d+)\.(.*)", key)
        if m:
            i, rest = m.groups()
            blk = f"core.core.pretrained.model.blocks.{i}."
            if rest.startswith("attention.") and rest.split(".")[1] in ("q_proj", "k_proj", "v_proj"):
                qkv.setdefault(i, {})[rest.split(".")[1][0] + rest.split(".")[2]] = value
                continue
            rest = (rest.replace("lambda_1", "gamma_1").replace("lambda_2", "gamma_2")
                    .replace("layernorm_before", "norm1").replace("layernorm_after", "norm2")
                    .replace("attention.o_proj", "attn.proj")
                    .replace("relative_position_bias.relative_position_bias_table",
                             "attn.relative_position_bias_table"))
            out[blk + rest] = value
            continue
        rules = [
            (r"backbone\.beit\.embeddings\.cls_token", "core.core.pretrained.model.cls_token"),
            (r"backbone\.beit\.embeddings\.patch_embeddings\.projection\.",
             "core.core.pretrained.model.patch_embed.proj."),
            (r"neck\.reassemble_stage\.readout_projects\.(\d)\.0\.",
             lambda m: f"core.core.pretrained.act_postprocess{int(m[1]) + 1}.0.project.0."),
            (r"neck\.reassemble_stage\.layers\.(\d)\.projection\.",
             lambda m: f"core.core.pretrained.act_postprocess{int(m[1]) + 1}.3."),
            (r"neck\.reassemble_stage\.layers\.(\d)\.resize\.",
             lambda m: f"core.core.pretrained.act_postprocess{int(m[1]) + 1}.4."),
            (r"neck\.convs\.(\d)\.", lambda m: f"core.core.scratch.layer{int(m[1]) + 1}_rn."),
            (r"neck\.fusion_stage\.layers\.(\d)\.residual_layer(\d)\.convolution(\d)\.",
             lambda m: f"core.core.scratch.refinenet{4 - int(m[1])}.resConfUnit{m[2]}.conv{m[3]}."),
            (r"neck\.fusion_stage\.layers\.(\d)\.projection\.",
             lambda m: f"core.core.scratch.refinenet{4 - int(m[1])}.out_conv."),
            (r"relative_head\.conv(\d)\.", lambda m: f"core.core.scratch.output_conv.{2 * int(m[1]) - 2}."),
            (r"metric_head\.patch_transformer\.transformer_encoder\.(\d)\.self_attn\.(query|key|value)\.(weight|bias)",
             lambda m: f"#router{m[1]}#{m[2]}#{m[3]}"),
            (r"metric_head\.patch_transformer\.transformer_encoder\.(\d)\.",
             r"patch_transformer.transformer_encoder.layers.\1."),
            (r"metric_head\.patch_transformer\.", "patch_transformer."),
            (r"metric_head\.mlp_classifier\.linear(\d)\.", lambda m: f"mlp_classifier.{2 * int(m[1]) - 2}."),
            (r"metric_head\.(seed_projector|seed_bin_regressor|seed_bin_regressors\.\w+|projectors\.\d|attractors\.\d|attractors\.\w+\.\d)\.conv(\d)\.",
             lambda m: f"{m[1]}._net.{2 * int(m[2]) - 2}."),
            (r"metric_head\.", ""),
        ]
        for pattern, repl in rules:
            new, n = re.subn("^" + pattern, repl, key, count=1)
            if n:
                break
        if new.startswith("#router"):
            _, layer, which, kind = new.split("#")
            qkv.setdefault(layer, {})[which[0] + kind] = value
            continue
        out[new] = value
    for i, parts in qkv.items():
        if i.startswith("router"):
            base = f"patch_transformer.transformer_encoder.layers.{i[6:]}.self_attn."
            out[base + "in_proj_weight"] = torch.cat([parts["qweight"], parts["kweight"], parts["vweight"]])
            out[base + "in_proj_bias"] = torch.cat([parts["qbias"], parts["kbias"], parts["vbias"]])
        else:
            blk = f"core.core.pretrained.model.blocks.{i}.attn."
            out[blk + "qkv.weight"] = torch.cat([parts["qweight"], parts["kweight"], parts["vweight"]])
            out[blk + "q_bias"], out[blk + "v_bias"] = parts["qbias"], parts["vbias"]
    # timm-0.6-era buffers and unused modules that the release files carry
    blocks = {k.split(".")[5] for k in out if k.startswith("core.core.pretrained.model.blocks.")}
    n_tokens = 24 * 24 + 1
    for i in blocks:
        out[f"core.core.pretrained.model.blocks.{i}.attn.relative_position_index"] = torch.zeros(
            n_tokens, n_tokens, dtype=torch.long)
    out["core.core.pretrained.model.fc_norm.weight"] = torch.ones(hidden)
    out["core.core.pretrained.model.fc_norm.bias"] = torch.zeros(hidden)
    out["core.core.pretrained.model.head.weight"] = torch.zeros(1000, hidden)
    out["core.core.pretrained.model.head.bias"] = torch.zeros(1000)
    for key in [k for k in out if k.endswith("conditional_log_binomial.mlp.0.weight")
                or re.search(r"conditional_log_binomial\.\w+\.mlp\.0\.weight$", k)]:
        prefix = key[: -len("mlp.0.weight")]
        out[prefix + "log_binomial_transform.k_idx"] = torch.arange(64).view(1, -1, 1, 1)
        out[prefix + "log_binomial_transform.K_minus_1"] = torch.tensor([63]).view(1, -1, 1, 1)
    return out
