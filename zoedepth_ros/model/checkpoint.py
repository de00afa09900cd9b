"""Load ZoeDepth from the formats users have, and save the project's own format.

- official release `.pt` (isl-org/ZoeDepth): `{"model": state_dict}`, timm-0.6 BEiT names under
  `core.core.pretrained`, optional DDP `module.` prefix; architecture inferred from the keys;
- Hugging Face directory (`config.json` + `model.safetensors` / `pytorch_model.bin`): transformers
  4.x names (as `Intel/zoedepth-*` ship) and 5.x renamed ones; architecture from `config.json`;
- a Hugging Face repository id (`Intel/zoedepth-nyu-kitti[@REVISION]`), read offline from
  huggingface_hub's cache (see `hf_hub.py`);
- project format: one `.safetensors` file carrying the `ZoeDepthConfig` in its metadata;
- a preset name (`ZoeD_M12_NK`), resolved in the local weights cache (see `weights.py`).

Pickles are read with `weights_only=True` only: a file that needs code execution is refused.
Every key must be accounted for: missing, unexpected or mis-shaped keys are errors naming them.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import zipfile
from pathlib import Path

import torch

from ..errors import ZoeDepthError
from .config import PRESETS, BinHeadConfig, ZoeDepthConfig
from .hf_hub import parse_repo, resolve_cached
from .weights import WeightsError, resolve_preset
from .zoedepth import ZoeDepth

FORMAT_KEY = "zoedepth_ros.format"
CONFIG_KEY = "zoedepth_ros.config"
FORMAT_VERSION = "1"

# Buffers of foreign implementations that we derive instead of load, and modules we do not build.
_IGNORED = re.compile(r"(relative_position_index|\.k_idx|\.K_minus_1|\.k_minus_1)$|^encoder\.(fc_norm|head|norm)\.")
# Depth ranges of the released domains; weights do not record them (KITTI: see `load_model`).
_DOMAIN_RANGES = {"nyu": (1e-3, 10.0), "kitti": (1e-3, 80.0)}


class CheckpointError(ZoeDepthError, ValueError):
    """A checkpoint that cannot be loaded; the message says which file and what is wrong."""


# ---------------------------------------------------------------------------------------------
# Reading files


def _torch_load(path: Path) -> dict:
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to unpickle: the file holds objects other than tensors and plain "
            f"containers (loading it would execute code). Details: {str(exc).splitlines()[0]}"
        ) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(f"{path}: not a readable PyTorch file (truncated or corrupt?): {exc}") from None


def _safetensors_load(path: Path) -> tuple[dict, dict]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}") from None


# ---------------------------------------------------------------------------------------------
# Official (isl-org/ZoeDepth) layout


_OFFICIAL_RULES = [
    (r"^core\.core\.pretrained\.model\.", "encoder."),
    (r"^core\.core\.pretrained\.act_postprocess(\d)\.0\.project\.0\.",
     lambda m: f"reassemble.readout.{int(m[1]) - 1}."),
    (r"^core\.core\.pretrained\.act_postprocess(\d)\.3\.", lambda m: f"reassemble.project.{int(m[1]) - 1}."),
    (r"^core\.core\.pretrained\.act_postprocess(\d)\.4\.", lambda m: f"reassemble.resize.{int(m[1]) - 1}."),
    (r"^core\.core\.scratch\.layer(\d)_rn\.", lambda m: f"decoder.layer_rn.{int(m[1]) - 1}."),
    (r"^core\.core\.scratch\.refinenet(\d)\.resConfUnit(\d)\.", lambda m: f"decoder.fusion.{4 - int(m[1])}.res{m[2]}."),
    (r"^core\.core\.scratch\.refinenet(\d)\.out_conv\.", lambda m: f"decoder.fusion.{4 - int(m[1])}.out_conv."),
    (r"^core\.core\.scratch\.output_conv\.([024])\.", lambda m: f"decoder.head_conv{int(m[1]) // 2 + 1}."),
    (r"^conv2\.", "metric_head.conv2."),
    (r"^seed_projector\._net\.", "metric_head.seed_projector."),
    (r"^projectors\.(\d)\._net\.", r"metric_head.projectors.\1."),
    (r"^seed_bin_regressors\.(\w+)\._net\.", r"metric_head.heads.\1.seed_bin_regressor.net."),
    (r"^attractors\.([a-z]\w*)\.(\d)\._net\.", r"metric_head.heads.\1.attractors.\2.net."),
    (r"^conditional_log_binomial\.([a-z]\w*)\.mlp\.", r"metric_head.heads.\1.conditional_log_binomial.mlp."),
    (r"^seed_bin_regressor\._net\.", "metric_head.heads.{head}.seed_bin_regressor.net."),
    (r"^attractors\.(\d)\._net\.", r"metric_head.heads.{head}.attractors.\1.net."),
    (r"^conditional_log_binomial\.mlp\.", "metric_head.heads.{head}.conditional_log_binomial.mlp."),
    (r"^patch_transformer\.embedding_convPxP\.", "metric_head.router.embed."),
    (r"^patch_transformer\.transformer_encoder\.layers\.(\d+)\.self_attn\.in_proj_(weight|bias)$",
     r"metric_head.router.layers.\1.in_proj.\2"),
    (r"^patch_transformer\.transformer_encoder\.layers\.(\d+)\.self_attn\.out_proj\.",
     r"metric_head.router.layers.\1.out_proj."),
    (r"^patch_transformer\.transformer_encoder\.layers\.(\d+)\.", r"metric_head.router.layers.\1."),
    (r"^mlp_classifier\.([02])\.", r"metric_head.router.classifier.\1."),
]


def _rename(state: dict, rules, fmt: dict) -> tuple[dict, list[str]]:
    """Apply the first matching rule to each key; returns (renamed, keys no rule matched)."""
    compiled = [(re.compile(p), r) for p, r in rules]
    out, unmatched = {}, []
    for key, value in state.items():
        for pattern, repl in compiled:
            new, n = pattern.subn(repl, key, count=1)
            if n:
                out[new.format(**fmt) if "{" in new else new] = value
                break
        else:
            unmatched.append(key)
    return out, unmatched


def _default_taps(depth: int) -> tuple[int, ...]:
    return tuple(depth // 4 * (i + 1) - 1 for i in range(4))


def _head_range(name: str, kitti_max_depth: float | None) -> tuple[float, float]:
    lo, hi = _DOMAIN_RANGES.get(name, (None, None))
    if lo is None:
        raise CheckpointError(f"unknown metric head {name!r}: its depth range is not recorded in the weights")
    if name == "kitti" and kitti_max_depth is not None:
        hi = kitti_max_depth
    return lo, hi


def official_config(state: dict, kitti_max_depth: float | None = None) -> ZoeDepthConfig:
    """Infer the architecture of an official-layout state dict (prefix already stripped)."""
    try:
        p = "core.core.pretrained.model."
        dim = state[p + "cls_token"].shape[-1]
        depth = 1 + max(int(k.split(".")[5]) for k in state if k.startswith(p + "blocks."))
        table = state[p + "blocks.0.attn.relative_position_bias_table"]
        patch = state[p + "patch_embed.proj.weight"].shape[-1]
        window = (math.isqrt(table.shape[0] - 3) + 1) // 2
        routed = any(k.startswith("seed_bin_regressors.") for k in state)
        if routed:
            names = list(dict.fromkeys(k.split(".")[1] for k in state if k.startswith("seed_bin_regressors.")))
            seed = f"seed_bin_regressors.{names[0]}._net."
            att = lambda i: f"attractors.{names[0]}.{i}._net.2.weight"  # noqa: E731
            clb = f"conditional_log_binomial.{names[0]}.mlp.0.weight"
        else:
            seed, att, clb = ("seed_bin_regressor._net.", (lambda i: f"attractors.{i}._net.2.weight"),
                              "conditional_log_binomial.mlp.0.weight")
        att_out = [state[att(i)].shape[0] for i in range(4)]
        # Normed (K) attractors emit two channels per attractor; the last layer has one attractor.
        normed = not routed and att_out[-1] == 2 and all(n % 2 == 0 for n in att_out)
        if not routed:
            names = ["kitti" if normed else "nyu"]
        heads = []
        for name in names:
            n_bins = state[(f"seed_bin_regressors.{name}._net.2.weight" if routed else seed + "2.weight")].shape[0]
            heads.append(BinHeadConfig(name, n_bins, *_head_range(name, kitti_max_depth)))
        relative = state["core.core.scratch.output_conv.2.weight"].shape[0]
        embedding = state["seed_projector._net.2.weight"].shape[0]
        clb_w = state[clb]
        router = {}
        if routed:
            layers = {k.split(".")[3] for k in state if k.startswith("patch_transformer.transformer_encoder.layers.")}
            router = dict(
                router_dim=state["patch_transformer.embedding_convPxP.weight"].shape[0],
                router_layers=len(layers),
                router_ffn_dim=state["patch_transformer.transformer_encoder.layers.0.linear1.weight"].shape[0],
            )
        return ZoeDepthConfig(
            embed_dim=dim, depth=depth, num_heads=table.shape[1],
            mlp_dim=state[p + "blocks.0.mlp.fc1.weight"].shape[0], patch_size=patch,
            pretrain_size=window * patch, layer_norm_eps=1e-6, taps=_default_taps(depth),
            neck_channels=tuple(state[f"core.core.pretrained.act_postprocess{i}.3.weight"].shape[0]
                                for i in range(1, 5)),
            fusion_channels=state["core.core.scratch.layer1_rn.weight"].shape[0], relative_features=relative,
            heads=tuple(heads), bin_centers_type="normed" if normed else "softplus", bin_embedding_dim=embedding,
            attractors=tuple(n // 2 if normed else n for n in att_out),
            seed_mlp_dim=state[seed + "0.weight"].shape[0],
            projector_mlp_dim=state["projectors.0._net.0.weight"].shape[0],
            log_binomial_bottleneck_factor=clb_w.shape[1] // clb_w.shape[0],
            condition_on_relative_depth=clb_w.shape[1] == relative + 1 + embedding,
            img_size=(384, 768) if normed else (384, 512),
            **router,
        )
    except (KeyError, IndexError, ValueError) as exc:
        raise CheckpointError(f"not an official ZoeDepth state dict: cannot infer the architecture ({exc!r})") from None


def official_to_ours(state: dict, config: ZoeDepthConfig) -> tuple[dict, list[str]]:
    return _rename(state, _OFFICIAL_RULES, {"head": config.heads[0].name})


# ---------------------------------------------------------------------------------------------
# Hugging Face layout (transformers 4.x and 5.x names)

_HF_LAYER = r"^backbone\.(?:encoder\.layer|beit\.layers)\.(\d+)\."
_HF_RULES = [
    (r"^backbone\.(?:beit\.)?embeddings\.cls_token$", "encoder.cls_token"),
    (r"^backbone\.(?:beit\.)?embeddings\.patch_embeddings\.projection\.", "encoder.patch_embed.proj."),
    (_HF_LAYER + r"lambda_([12])$", r"encoder.blocks.\1.gamma_\2"),
    (_HF_LAYER + r"layernorm_before\.", r"encoder.blocks.\1.norm1."),
    (_HF_LAYER + r"layernorm_after\.", r"encoder.blocks.\1.norm2."),
    (_HF_LAYER + r"attention\.(?:attention\.query|q_proj)\.bias$", r"encoder.blocks.\1.attn.q_bias"),
    (_HF_LAYER + r"attention\.(?:attention\.value|v_proj)\.bias$", r"encoder.blocks.\1.attn.v_bias"),
    (_HF_LAYER + r"attention\.(?:attention\.query|q_proj)\.weight$", r"encoder.blocks.\1.attn.qkv.weight#q"),
    (_HF_LAYER + r"attention\.(?:attention\.key|k_proj)\.weight$", r"encoder.blocks.\1.attn.qkv.weight#k"),
    (_HF_LAYER + r"attention\.(?:attention\.value|v_proj)\.weight$", r"encoder.blocks.\1.attn.qkv.weight#v"),
    (_HF_LAYER + r"attention\.(?:output\.dense|o_proj)\.", r"encoder.blocks.\1.attn.proj."),
    (_HF_LAYER + r"(?:attention\.attention\.)?relative_position_bias\.relative_position_bias_table$",
     r"encoder.blocks.\1.attn.relative_position_bias_table"),
    (_HF_LAYER + r"(?:intermediate\.dense|mlp\.fc1)\.", r"encoder.blocks.\1.mlp.fc1."),
    (_HF_LAYER + r"(?:output\.dense|mlp\.fc2)\.", r"encoder.blocks.\1.mlp.fc2."),
    (r"^neck\.reassemble_stage\.readout_projects\.(\d)\.0\.", r"reassemble.readout.\1."),
    (r"^neck\.reassemble_stage\.layers\.(\d)\.projection\.", r"reassemble.project.\1."),
    (r"^neck\.reassemble_stage\.layers\.(\d)\.resize\.", r"reassemble.resize.\1."),
    (r"^neck\.convs\.(\d)\.", r"decoder.layer_rn.\1."),
    (r"^neck\.fusion_stage\.layers\.(\d)\.residual_layer(\d)\.convolution(\d)\.", r"decoder.fusion.\1.res\2.conv\3."),
    (r"^neck\.fusion_stage\.layers\.(\d)\.projection\.", r"decoder.fusion.\1.out_conv."),
    (r"^relative_head\.conv(\d)\.", r"decoder.head_conv\1."),
    (r"^metric_head\.conv2\.", "metric_head.conv2."),
    (r"^metric_head\.seed_projector\.conv([12])\.", lambda m: f"metric_head.seed_projector.{2 * int(m[1]) - 2}."),
    (r"^metric_head\.projectors\.(\d)\.conv([12])\.", lambda m: f"metric_head.projectors.{m[1]}.{2 * int(m[2]) - 2}."),
    (r"^metric_head\.seed_bin_regressors\.(\w+)\.conv([12])\.",
     lambda m: f"metric_head.heads.{m[1]}.seed_bin_regressor.net.{2 * int(m[2]) - 2}."),
    (r"^metric_head\.attractors\.([a-z]\w*)\.(\d)\.conv([12])\.",
     lambda m: f"metric_head.heads.{m[1]}.attractors.{m[2]}.net.{2 * int(m[3]) - 2}."),
    (r"^metric_head\.conditional_log_binomial\.([a-z]\w*)\.mlp\.",
     r"metric_head.heads.\1.conditional_log_binomial.mlp."),
    (r"^metric_head\.seed_bin_regressor\.conv([12])\.",
     lambda m: f"metric_head.heads.{{head}}.seed_bin_regressor.net.{2 * int(m[1]) - 2}."),
    (r"^metric_head\.attractors\.(\d)\.conv([12])\.",
     lambda m: f"metric_head.heads.{{head}}.attractors.{m[1]}.net.{2 * int(m[2]) - 2}."),
    (r"^metric_head\.conditional_log_binomial\.mlp\.", "metric_head.heads.{head}.conditional_log_binomial.mlp."),
    (r"^metric_head\.patch_transformer\.embedding_convPxP\.", "metric_head.router.embed."),
    (r"^metric_head\.patch_transformer\.transformer_encoder\.(\d+)\.self_attn\.(query|key|value)\.(weight|bias)$",
     lambda m: f"metric_head.router.layers.{m[1]}.in_proj.{m[3]}#{m[2][0]}"),
    (r"^metric_head\.patch_transformer\.transformer_encoder\.(\d+)\.self_attn\.out_proj\.",
     r"metric_head.router.layers.\1.out_proj."),
    (r"^metric_head\.patch_transformer\.transformer_encoder\.(\d+)\.", r"metric_head.router.layers.\1."),
    (r"^metric_head\.mlp_classifier\.linear([12])\.", lambda m: f"metric_head.router.classifier.{2 * int(m[1]) - 2}."),
]


def _fuse_qkv(state: dict) -> dict:
    """Join the `#q`, `#k`, `#v` parts that the HF port stores separately into one projection."""
    out, parts = {}, {}
    for key, value in state.items():
        if "#" in key:
            base, part = key.split("#")
            parts.setdefault(base, {})[part] = value
        else:
            out[key] = value
    for base, p in parts.items():
        if set(p) != {"q", "k", "v"}:
            raise CheckpointError(f"incomplete attention projection {base}: has only {sorted(p)}")
        out[base] = torch.cat([p["q"], p["k"], p["v"]])
    return out


def hf_config(data: dict, kitti_max_depth: float | None = None) -> ZoeDepthConfig:
    """Translate a transformers `ZoeDepthConfig` (config.json) into ours."""
    if data.get("model_type") != "zoedepth":
        raise CheckpointError(f"config.json describes model_type {data.get('model_type')!r}, not 'zoedepth'")
    bb = data.get("backbone_config") or {}
    if bb.get("model_type", "beit") != "beit":
        raise CheckpointError(f"unsupported backbone {bb.get('model_type')!r}: only BEiT ZoeDepth models are supported")
    unsupported = {
        "readout_type": ("project",), "add_projection": (False,), "use_batch_norm_in_fusion_residual": (False,),
        "head_in_index": (-1,), "reassemble_factors": ([4, 2, 1, 0.5],),
    }
    for key, allowed in unsupported.items():
        if key in data and data[key] not in allowed:
            raise CheckpointError(f"unsupported ZoeDepth variant: {key}={data[key]!r}")
    bins = data.get("bin_configurations") or [{"n_bins": 64, "min_depth": 1e-3, "max_depth": 10.0}]
    normed = data.get("bin_centers_type", "softplus") == "normed"
    routed = len(bins) > 1
    heads = []
    for conf in bins:
        # A lone normed head is ZoeD-K's KITTI head whatever the config calls it: the port's conversion
        # names it "nyu" with the 10 m infer default (Intel/zoedepth-kitti, isl-org/ZoeDepth#139).
        name = "kitti" if normed and not routed else conf.get("name") or "nyu"
        hi = _head_range("kitti", kitti_max_depth)[1] if name == "kitti" else conf["max_depth"]
        heads.append(BinHeadConfig(name, conf["n_bins"], conf["min_depth"], hi))
    embedding = data.get("bin_embedding_dim", 128)
    attractors = tuple(data.get("num_attractors", (16, 8, 4, 1)))
    fusion = data.get("fusion_hidden_size", 256)
    if data.get("bottleneck_features", fusion) != fusion:
        raise CheckpointError("unsupported ZoeDepth variant: bottleneck_features differs from fusion_hidden_size")
    depth = bb.get("num_hidden_layers", 24)
    out_indices = bb.get("out_indices") or [int(s.replace("stage", "")) for s in bb.get("out_features", [])]
    taps = tuple(i - 1 for i in out_indices) if out_indices else _default_taps(depth)
    extra = {}
    if routed:
        # The port builds the NK head with 16 attractors per layer and halved MLPs, like the official NK.
        extra = dict(
            attractors=(16,) * len(attractors), seed_mlp_dim=embedding // 2, projector_mlp_dim=embedding // 2,
            log_binomial_bottleneck_factor=4, condition_on_relative_depth=False,
            router_dim=data.get("patch_transformer_hidden_size") or 128,
            router_layers=data.get("num_patch_transformer_layers") or 4,
            router_heads=data.get("patch_transformer_num_attention_heads") or 4,
            router_ffn_dim=data.get("patch_transformer_intermediate_size") or 1024,
        )
    else:
        extra = dict(attractors=attractors, seed_mlp_dim=256, projector_mlp_dim=128,
                     log_binomial_bottleneck_factor=2, condition_on_relative_depth=True)
    image_size = bb.get("image_size", 384)
    return ZoeDepthConfig(
        embed_dim=bb.get("hidden_size", 1024), depth=depth, num_heads=bb.get("num_attention_heads", 16),
        mlp_dim=bb.get("intermediate_size", 4096), patch_size=bb.get("patch_size", 16),
        pretrain_size=image_size if isinstance(image_size, int) else image_size[0],
        layer_norm_eps=bb.get("layer_norm_eps", 1e-12), taps=taps,
        neck_channels=tuple(data.get("neck_hidden_sizes", (96, 192, 384, 768))), fusion_channels=fusion,
        relative_features=data.get("num_relative_features", 32), heads=tuple(heads),
        bin_centers_type="normed" if normed else "softplus", bin_embedding_dim=embedding,
        attractor_kind=data.get("attractor_kind", "mean"),
        min_temp=data.get("min_temp", 0.0212), max_temp=data.get("max_temp", 50.0),
        img_size=(384, 768) if normed else (384, 512), **extra,
    )


def hf_to_ours(state: dict, config: ZoeDepthConfig) -> tuple[dict, list[str]]:
    renamed, unmatched = _rename(state, _HF_RULES, {"head": config.heads[0].name})
    return _fuse_qkv(renamed), unmatched


def _load_hf_dir(path: Path) -> tuple[dict, dict]:
    config_file = path / "config.json"
    if not config_file.is_file():
        raise CheckpointError(f"{path}: a directory checkpoint needs config.json (Hugging Face layout)")
    try:
        config = json.loads(config_file.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{config_file}: invalid JSON: {exc}") from None
    if (path / "model.safetensors").is_file():
        return config, _safetensors_load(path / "model.safetensors")[0]
    index = path / "model.safetensors.index.json"
    if index.is_file():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        state = {}
        for shard in shards:
            state.update(_safetensors_load(path / shard)[0])
        return config, state
    if (path / "pytorch_model.bin").is_file():
        return config, _torch_load(path / "pytorch_model.bin")
    raise CheckpointError(f"{path}: no model.safetensors or pytorch_model.bin next to config.json")


# ---------------------------------------------------------------------------------------------
# Building the model


def build_from_state(config: ZoeDepthConfig, state: dict, unmatched: list[str], source: str) -> ZoeDepth:
    """Create the model and load `state` strictly, with errors that name the offending keys."""
    unmatched = [k for k in unmatched if not _IGNORED.search(k)]
    state = {k: v for k, v in state.items() if not _IGNORED.search(k)}
    model = ZoeDepth(config)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(unmatched + [k for k in state if k not in expected])
    wrong = sorted(f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                   for k, v in expected.items() if k in state and state[k].shape != v.shape)
    if missing or unexpected or wrong:
        parts = []
        for label, keys in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", wrong)):
            if keys:
                shown = ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointError(f"{source}: checkpoint does not match the ZoeDepth architecture; " + "; ".join(parts))
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    return model.eval()


def _load_file(path: Path, kitti_max_depth: float | None) -> ZoeDepth:
    if path.suffix == ".safetensors":
        state, meta = _safetensors_load(path)
        if meta.get(FORMAT_KEY) != FORMAT_VERSION or CONFIG_KEY not in meta:
            raise CheckpointError(
                f"{path}: a safetensors file without the zoedepth_ros metadata; a Hugging Face "
                f"model is a directory with config.json, pass the directory instead")
        config = ZoeDepthConfig.from_dict(json.loads(meta[CONFIG_KEY]))
        if kitti_max_depth is not None:
            config = config.replace(heads=tuple(
                h.__class__(h.name, h.n_bins, h.min_depth, kitti_max_depth) if h.name == "kitti" else h
                for h in config.heads))
        return build_from_state(config, state, [], str(path))
    obj = _torch_load(path)
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    state = obj.get("model", obj) if isinstance(obj.get("model", None), dict) else obj
    state = {(k[len("module."):] if k.startswith("module.") else k): v for k, v in state.items()}
    if not any(k.startswith("core.core.pretrained.") for k in state):
        raise CheckpointError(
            f"{path}: not a ZoeDepth checkpoint (no 'core.core.pretrained.*' keys; first keys: {list(state)[:5]})")
    config = official_config(state, kitti_max_depth)
    renamed, unmatched = official_to_ours(state, config)
    return build_from_state(config, renamed, unmatched, str(path))


def load_model(source: str | os.PathLike, map_location: str | torch.device = "cpu",
               kitti_max_depth: float | None = None) -> ZoeDepth:
    """Load a ZoeDepth model (eval mode) from a preset name, an official `.pt`, a Hugging Face
    directory, a Hugging Face repository id in the local cache (`Intel/zoedepth-nyu-kitti`, or
    `REPO@REVISION`; never downloads) or a project `.safetensors`.

    KITTI head range (docs/weights.md#the-kitti-heads-range): the KITTI head's bins span 1e-3..80 m,
    the range ZoeD-K and ZoeD-NK were trained and evaluated with, whatever the source: official `.pt`
    files do not record it, and the Hugging Face configs are not trusted for it (`Intel/zoedepth-kitti`
    says 10 m, the official code's `infer` default, under the head name "nyu"). `kitti_max_depth`
    sets another maximum, e.g. 10 for the official torch.hub ZoeD_K behaviour. A project
    `.safetensors` keeps the range it stored unless `kitti_max_depth` is given.
    """
    path = Path(source)
    if not path.exists():
        path = _resolve_name(str(source))
    if path.is_dir():
        data, state = _load_hf_dir(path)
        config = hf_config(data, kitti_max_depth)
        renamed, unmatched = hf_to_ours(state, config)
        model = build_from_state(config, renamed, unmatched, str(path))
    else:
        model = _load_file(path, kitti_max_depth)
    return model.to(map_location)


def _resolve_name(source: str) -> Path:
    """A preset in the project's weights cache, or a repository in huggingface_hub's cache."""
    if source in PRESETS:
        try:
            return resolve_preset(source)
        except WeightsError as exc:
            raise CheckpointError(str(exc)) from None
    repo = parse_repo(source)
    if repo is not None:
        try:
            return resolve_cached(*repo)
        except WeightsError as exc:
            # Say both: the name may as well be a mistyped relative path.
            raise CheckpointError(f"{source}: no such file or directory; {exc}") from None
    raise CheckpointError(f"{source}: no such file or directory, not a preset ({', '.join(PRESETS)}) "
                          f"and not a Hugging Face repository id (OWNER/NAME[@REVISION])")


def save_checkpoint(model: ZoeDepth, path: str | os.PathLike, extra_metadata: dict[str, str] | None = None,
                    dtype: torch.dtype | None = None) -> Path:
    """Write the project format: one safetensors file with the config in its metadata (atomic).

    `dtype` stores the floating-point tensors in that type (float16 halves the file); loading
    always builds a float32 model, so it changes the weights by their rounding and nothing else.
    """
    from safetensors.torch import save_file

    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"project checkpoints end in .safetensors, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = {FORMAT_KEY: FORMAT_VERSION, CONFIG_KEY: model.config.to_json(), **(extra_metadata or {})}
    state = {
        k: v.detach().to("cpu", dtype=dtype if dtype is not None and v.is_floating_point() else v.dtype).contiguous()
        for k, v in model.state_dict().items()
    }
    tmp = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        save_file(state, str(tmp), metadata=meta)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path
