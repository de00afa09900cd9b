"""NYU Depth v2 to an evaluation bag, from the labeled .mat or from BTS's official_splits folder.

ZoeDepth evaluates on the folder that BTS's `extract_official_train_test_set_from_mat.py` writes
from `nyu_depth_v2_labeled.mat`; converting the .mat here reproduces that extraction:
- GT: `rawDepths` * 1000 truncated to uint16 millimetres (the folder's `sync_depth_%05d.png`),
  read back as uint16 / 1000 in float32, 0 = no GT;
- RGB: the labeled image with everything outside rows 7:474, cols 7:632 set to black (the white
  registration border). BTS then stores it as JPEG (OpenCV, quality 95), so bags from the .mat
  and from the folder differ by that JPEG loss only.
The 480x640 frames are published with the NYU RGB intrinsics (rectified, D = 0) and scored with
the `nyu` protocol (eigen crop, 1e-3..10 m).

splits.mat is a MATLAB v5 file, which h5py cannot open; a minimal reader of its numeric arrays
(below) avoids a SciPy dependency for two index vectors. v7.3 (HDF5) split files and text files
of 1-based indices work too.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import numpy as np

from zoedepth_ros.data.dataset_io import (
    DEFAULT_BAG_OPTIONS,
    BagOptions,
    ConvertError,
    depth_from_uint16,
    read_depth_png,
    read_rgb,
    require_files,
    write_bag,
)
from zoedepth_ros.data.synth import NYU_CENTER, NYU_FOCAL, NYU_SIZE
from zoedepth_ros.eval.protocols import get_protocol

Split = Literal["test", "train"]
DepthKind = Literal["raw", "filled"]

NYU_K = np.array([[NYU_FOCAL[0], 0.0, NYU_CENTER[0]], [0.0, NYU_FOCAL[1], NYU_CENTER[1]], [0.0, 0.0, 1.0]])
SPLIT_KEYS = {"test": "testNdxs", "train": "trainNdxs"}
DEPTH_KEYS = {"raw": "rawDepths", "filled": "depths"}
GT_SCALE = 1000.0
# BTS keeps rows 7:474 and columns 7:632 of the labeled image and blacks out the rest.
KEPT_ROWS = slice(7, 474)
KEPT_COLS = slice(7, 632)

# --- split files ------------------------------------------------------------------------------

_MAT5_DTYPES = {1: "i1", 2: "u1", 3: "i2", 4: "u2", 5: "i4", 6: "u4", 7: "f4", 9: "f8", 12: "i8", 13: "u8"}
_MI_MATRIX = 14
_MI_COMPRESSED = 15
_MX_NUMERIC_CLASSES = range(6, 16)  # double, single, int8 .. uint64
_MX_COMPLEX_FLAG = 0x0800


def _mat5_elements(buf: bytes, order: str) -> Iterator[tuple[int, bytes]]:
    """(data type, payload) of consecutive MAT v5 data elements."""
    pos = 0
    while pos + 8 <= len(buf):
        first, nbytes = struct.unpack_from(order + "II", buf, pos)
        if first >> 16:  # small data element: size and type share the tag, data in its last 4 bytes
            yield first & 0xFFFF, buf[pos + 4 : pos + 4 + (first >> 16)]
            pos += 8
            continue
        start, end = pos + 8, pos + 8 + nbytes
        if end > len(buf):
            raise ValueError(f"data element of {nbytes} bytes at offset {pos} runs past the end")
        yield first, buf[start:end]
        # Uncompressed elements are padded to 8 bytes; compressed ones end where their data ends.
        pos = end if first == _MI_COMPRESSED else start + (nbytes + 7) // 8 * 8


def _mat5_matrix(payload: bytes, order: str) -> tuple[str, np.ndarray] | None:
    """Name and array of a real numeric miMATRIX; None for other classes (cells, text...)."""
    parts = list(_mat5_elements(payload, order))
    if len(parts) < 4:
        return None
    flags = struct.unpack_from(order + "I", parts[0][1])[0]
    if flags & 0xFF not in _MX_NUMERIC_CLASSES or flags & _MX_COMPLEX_FLAG:
        return None
    dims = np.frombuffer(parts[1][1], dtype=order + "i4")
    name = parts[2][1].decode("ascii")
    # MATLAB stores a double array in the narrowest type that holds its values (uint16 indices).
    data_type, data = parts[3]
    values = np.frombuffer(data, dtype=order + _MAT5_DTYPES[data_type])
    return name, values.reshape(tuple(int(d) for d in dims), order="F")


def read_mat5(path: Path) -> dict[str, np.ndarray]:
    """Real numeric arrays of a MATLAB v5/v7 (possibly compressed) .mat file, by name."""
    data = Path(path).read_bytes()
    if len(data) < 128 or not data.startswith(b"MATLAB 5.0 MAT-file"):
        raise ConvertError(f"{path} is not a MATLAB v5 .mat file")
    order = {b"IM": "<", b"MI": ">"}.get(data[126:128])
    if order is None:
        raise ConvertError(f"{path}: unknown byte-order mark {data[126:128]!r} in the MAT header")
    arrays: dict[str, np.ndarray] = {}
    try:
        for data_type, payload in _mat5_elements(data[128:], order):
            elements = [(data_type, payload)]
            if data_type == _MI_COMPRESSED:
                elements = list(_mat5_elements(zlib.decompress(payload), order))
            for inner_type, inner in elements:
                matrix = _mat5_matrix(inner, order) if inner_type == _MI_MATRIX else None
                if matrix is not None:
                    arrays[matrix[0]] = matrix[1]
    except (ValueError, KeyError, struct.error, zlib.error, UnicodeDecodeError) as exc:
        raise ConvertError(f"{path}: damaged MAT file ({exc})") from None
    return arrays


def read_split_indices(path: Path, split: Split) -> list[int]:
    """0-based indices of `split` from splits.mat (`testNdxs`/`trainNdxs`, 1-based; MATLAB v5 or
    v7.3) or from a text file holding that split's 1-based indices (whitespace or comma separated)."""
    import h5py

    path = Path(path)
    require_files([path], "split file")
    key = SPLIT_KEYS[split]
    if h5py.is_hdf5(path):
        with h5py.File(path, "r") as f:
            if key not in f:
                raise ConvertError(f"{path} has no {key} (it has {', '.join(f.keys())})")
            values = np.asarray(f[key]).ravel()
    elif path.read_bytes()[:19] == b"MATLAB 5.0 MAT-file":
        arrays = read_mat5(path)
        if key not in arrays:
            raise ConvertError(f"{path} has no numeric {key} (it has {', '.join(arrays) or 'none'})")
        values = arrays[key].ravel()
    else:
        try:
            tokens = re.split(r"[\s,]+", path.read_text(encoding="utf-8").strip())
            values = np.array([float(t) for t in tokens if t])
        except (ValueError, UnicodeDecodeError) as exc:
            raise ConvertError(
                f"{path} is neither a .mat file nor a text file of 1-based image indices ({exc})") from None
    if values.size == 0 or np.any(values != np.round(values)) or np.any(values < 1):
        raise ConvertError(f"{path}: {key} must be positive integer (1-based) indices")
    return [int(v) - 1 for v in values]


# --- the labeled .mat ---------------------------------------------------------------------------


def bts_image(rgb: np.ndarray) -> np.ndarray:
    """The labeled RGB as BTS extracts it: black outside rows 7:474, columns 7:632."""
    out = np.zeros_like(rgb)
    out[KEPT_ROWS, KEPT_COLS] = rgb[KEPT_ROWS, KEPT_COLS]
    return out


def bts_depth(depth_m: np.ndarray) -> np.ndarray:
    """Metres of the labeled file quantised as BTS stores them: truncated to whole millimetres."""
    mm = np.nan_to_num(np.asarray(depth_m, dtype=np.float32) * np.float32(GT_SCALE), nan=0.0)
    return depth_from_uint16(np.clip(mm, 0, 65535).astype(np.uint16), GT_SCALE)


def _labeled_datasets(f, path: Path, depth: DepthKind):
    missing = [key for key in ("images", DEPTH_KEYS[depth]) if key not in f]
    if missing:
        raise ConvertError(f"{path} lacks {', '.join(missing)}: is it nyu_depth_v2_labeled.mat?")
    images, depths = f["images"], f[DEPTH_KEYS[depth]]
    # MATLAB v7.3 stores arrays transposed: HxWx3xN images read as (N, 3, W, H).
    if (images.ndim != 4 or images.shape[1] != 3 or depths.ndim != 3
            or depths.shape != (images.shape[0], *images.shape[2:])):
        raise ConvertError(
            f"{path}: images {images.shape} and {DEPTH_KEYS[depth]} {depths.shape} are not (N, 3, W, H) and (N, W, H)"
        )
    return images, depths


def convert_nyu_labeled(
    labeled: Path,
    splits: Path,
    out: Path,
    split: Split = "test",
    depth: DepthKind = "raw",
    *,
    options: BagOptions = DEFAULT_BAG_OPTIONS,
) -> int:
    """Write the `split` frames of nyu_depth_v2_labeled.mat as a bag; returns the frame count."""
    import h5py

    labeled = Path(labeled)
    require_files([labeled], "labeled NYU file")
    indices = read_split_indices(splits, split)[:options.limit]
    if not h5py.is_hdf5(labeled):
        raise ConvertError(f"{labeled} is not an HDF5 (MATLAB v7.3) file, as nyu_depth_v2_labeled.mat is")
    with h5py.File(labeled, "r") as f:
        images, depths = _labeled_datasets(f, labeled, depth)
        if max(indices) >= images.shape[0]:
            raise ConvertError(
                f"{splits}: index {max(indices) + 1} is beyond the {images.shape[0]} images of {labeled}")
        height, width = images.shape[3], images.shape[2]
        if (height, width) != NYU_SIZE:
            raise ConvertError(f"{labeled}: images are {height}x{width}, NYU Depth v2 frames are 480x640")

        def frames():
            for i in indices:
                rgb = np.ascontiguousarray(np.asarray(images[i]).transpose(2, 1, 0))
                yield bts_image(rgb), bts_depth(np.asarray(depths[i]).T), NYU_K, None

        metadata = {
            **get_protocol("nyu").to_metadata(),
            "split": split,
            "dataset": "nyu_depth_v2",
            "source": f"labeled:{labeled.name}",
            "depth": depth,
        }
        return write_bag(out, frames(), len(indices), metadata, desc=f"nyu {split}", options=options)


# --- the official_splits folder ------------------------------------------------------------------

_RGB_NAME = re.compile(r"rgb_(\d+)\.jpg$")


def official_split_files(root: Path, split: Split) -> list[tuple[Path, Path]]:
    """(rgb, depth) paths of `root/<split>/<scene>/rgb_XXXXX.jpg` (or `root/<scene>/...` when
    root is the split folder itself), by scene then index."""
    root = Path(root)
    if not root.is_dir():
        raise ConvertError(f"no official_splits folder at {root}")
    folder = root / split if (root / split).is_dir() else root
    pairs = []
    for scene in sorted(p for p in folder.iterdir() if p.is_dir()):
        for rgb in scene.iterdir():
            match = _RGB_NAME.match(rgb.name)
            if match:
                pairs.append(((scene.name, int(match.group(1))), rgb, scene / f"sync_depth_{match.group(1)}.png"))
    if not pairs:
        raise ConvertError(f"no <scene>/rgb_XXXXX.jpg under {folder}: is it BTS's official_splits/{split}?")
    pairs.sort(key=lambda item: item[0])
    return [(rgb, gt) for _, rgb, gt in pairs]


def convert_nyu_official(
    root: Path,
    out: Path,
    split: Split = "test",
    *,
    options: BagOptions = DEFAULT_BAG_OPTIONS,
) -> int:
    """Write the frames of an official_splits folder as a bag; returns the frame count."""
    files = official_split_files(root, split)[:options.limit]
    require_files([gt for _, gt in files], "NYU depth PNGs (sync_depth_XXXXX.png)")

    def frames():
        for rgb, gt in files:
            yield read_rgb(rgb), read_depth_png(gt, GT_SCALE), NYU_K, None

    metadata = {
        **get_protocol("nyu").to_metadata(),
        "split": split,
        "dataset": "nyu_depth_v2",
        "source": "official_splits",
        "depth": "raw",
    }
    return write_bag(out, frames(), len(files), metadata, desc=f"nyu {split}", options=options)
