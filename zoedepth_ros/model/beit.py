"""MiDaS v3.1 BEiT encoder with relative position bias for any patch grid.

Parameter names follow timm's BEiT (the layout of the official ZoeDepth checkpoints). The relative
position bias of a non-square grid is the MiDaS v3.1 one: the pretraining table (2S-1)x(2S-1) is
resized bilinearly (align_corners=False) to (2h-1)x(2w-1), the three cls entries are appended
unchanged, and it is gathered with the relative position index of the (h, w) grid. timm's own
load-time resize uses another algorithm, so we do not use it.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import ZoeDepthConfig

# Grid sizes whose bias each block keeps (a 24x32 grid of BEiT-L costs ~38 MB per block in fp32):
# enough for a camera stream plus flips and an evaluation size, bounded for long-running nodes.
BIAS_CACHE_SIZE = 4


def relative_position_index(h: int, w: int, device=None) -> torch.Tensor:
    """(h*w+1, h*w+1) indices into a table of (2h-1)*(2w-1) + 3 rows; the last three are cls rows."""
    coords = torch.stack(torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij"))
    coords = coords.flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0)
    index = (rel[..., 0] + h - 1) * (2 * w - 1) + (rel[..., 1] + w - 1)
    n_rel = (2 * h - 1) * (2 * w - 1)
    out = torch.empty((h * w + 1, h * w + 1), dtype=torch.long, device=device)
    out[1:, 1:] = index
    out[0, :] = n_rel  # cls -> token
    out[:, 0] = n_rel + 1  # token -> cls
    out[0, 0] = n_rel + 2  # cls -> cls
    return out


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) + mask) v over (B, heads, N, d). PyTorch's fused kernels, except under
    torch.export: the ONNX exporter's decomposition of scaled_dot_product_attention gives its output
    other strides than it declares, and the export fails; ONNX Runtime and OpenVINO fuse this form."""
    if not torch.compiler.is_exporting():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    scores = (q * q.shape[-1] ** -0.5) @ k.transpose(-2, -1)
    return torch.softmax(scores if mask is None else scores + mask, dim=-1) @ v


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int, window: int):
        super().__init__()
        self.num_heads = num_heads
        self.window = window
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim))
        self.v_bias = nn.Parameter(torch.zeros(dim))
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window - 1) ** 2 + 3, num_heads))
        # (h, w, device, dtype) -> (bias, table version it was computed from). Not a buffer: derived data.
        self._bias_cache: dict[tuple, tuple[torch.Tensor, tuple]] = {}
        self._index_cache: dict[tuple, torch.Tensor] = {}

    def _compute_bias(self, h: int, w: int, dtype: torch.dtype, cache_index: bool = True) -> torch.Tensor:
        table = self.relative_position_bias_table
        side = 2 * self.window - 1
        sub = table[: side * side].reshape(1, side, side, -1).permute(0, 3, 1, 2)
        sub = F.interpolate(sub, size=(2 * h - 1, 2 * w - 1), mode="bilinear", align_corners=False)
        sub = sub.permute(0, 2, 3, 1).reshape((2 * h - 1) * (2 * w - 1), -1)
        resized = torch.cat([sub, table[side * side:]])
        key = (h, w, table.device)
        index = self._index_cache.get(key) if cache_index else relative_position_index(h, w, table.device)
        if index is None:
            # Never an inference tensor, even when first built under inference_mode (validation):
            # training indexes the table with it later, and autograd must save it for backward.
            with torch.inference_mode(False):
                index = self._index_cache[key] = relative_position_index(h, w, table.device)
        n = h * w + 1
        bias = resized[index.view(-1)].view(n, n, -1).permute(2, 0, 1).to(dtype)
        if torch.compiler.is_exporting():
            # An ONNX runtime folds this into one constant per block; the padded copy below would
            # leave it several (ONNX Runtime held 10 GB for the full model at 384x512 with it).
            return bias.unsqueeze(0)
        # SDPA wants the mask's last dimension aligned to 8 elements, else it copies it on every call.
        padded = torch.zeros(self.num_heads, n, (n + 7) // 8 * 8, dtype=dtype, device=table.device)
        padded[:, :, :n] = bias
        return padded[:, :, :n].unsqueeze(0)

    def relative_position_bias(self, h: int, w: int, dtype: torch.dtype) -> torch.Tensor:
        table = self.relative_position_bias_table
        if torch.is_grad_enabled() and table.requires_grad:
            return self._compute_bias(h, w, dtype)  # training: keep the graph to the table
        if torch.compiler.is_compiling():
            # Traced into the graph (a Python cache would break it): with frozen weights inductor
            # folds the whole bias into a constant, computed once at compile time.
            return self._compute_bias(h, w, dtype, cache_index=False)
        # The version counter moves on every in-place update (optimizer step, load_state_dict).
        version = (table.data_ptr(), table._version)
        key = (h, w, table.device, dtype)
        hit = self._bias_cache.get(key)
        if hit is None or hit[1] != version:
            if len(self._bias_cache) >= BIAS_CACHE_SIZE and key not in self._bias_cache:
                del self._bias_cache[next(iter(self._bias_cache))]  # oldest grid size first
            hit = self._bias_cache[key] = (self._compute_bias(h, w, dtype), version)
        return hit[0]

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, c = x.shape
        bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        mask = self.relative_position_bias(*grid, dtype=q.dtype)
        x = attention(q, k, v, mask)
        return self.proj(x.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_dim: int, window: int, eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=eps)
        self.attn = Attention(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim, eps=eps)
        self.mlp = Mlp(dim, mlp_dim)
        self.gamma_1 = nn.Parameter(torch.ones(dim))
        self.gamma_2 = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        x = x + self.gamma_1 * self.attn(self.norm1(x), grid)
        return x + self.gamma_2 * self.mlp(self.norm2(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, dim: int):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class BeitEncoder(nn.Module):
    """Returns the token sequences (cls first) after each tapped block."""

    def __init__(self, cfg: ZoeDepthConfig):
        super().__init__()
        self.patch_size = cfg.patch_size
        self.taps = tuple(cfg.taps)
        window = cfg.pretrain_size // cfg.patch_size
        self.patch_embed = PatchEmbed(cfg.patch_size, cfg.embed_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.embed_dim))
        self.blocks = nn.ModuleList(
            Block(cfg.embed_dim, cfg.num_heads, cfg.mlp_dim, window, cfg.layer_norm_eps) for _ in range(cfg.depth)
        )

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        grid = (x.shape[-2] // self.patch_size, x.shape[-1] // self.patch_size)
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(x.shape[0], -1, -1), x), dim=1)
        taps = []
        for i, block in enumerate(self.blocks[: self.taps[-1] + 1]):
            x = block(x, grid)
            if i in self.taps:
                taps.append(x)
        return taps
