"""Training and validation data: frames from evaluation bags or dataset folders, the official
augmentations, and the batch plan that alternates datasets (NK) and shards them over ranks.

Sources of frames (RGB uint8 + metric GT, NaN = invalid) with the protocol that scores them:
- `BagSource`: a bag of the evaluation layout (docs/bag-layout.md: converters, `zoedepth-ros synth`),
  read by random access at each frame's stamp, so that a bag larger than memory can be shuffled;
- `ListSource`: a BTS-style list file (NYU `sync`/`official_splits`, KITTI Eigen with annotated
  depth): `rgb_path depth_path [focal]` per line, relative to `data_path` and `gt_path`.

A training *stream* is one dataset of the mix (NYU, KITTI, ...), made of one or more sources of one
domain. Batches never mix streams: as in the official NK recipe, consecutive batches go round the
streams, and a stream that runs out before the longest one starts a new shuffled pass.

Everything random is a pure function of (seed, epoch, position in the epoch): the order of every
pass and each sample's augmentation (its own numpy Generator). That makes the data independent of
the number of loader workers and lets a resumed run continue with exactly the batches it would have
seen, from the step number alone.
"""

from __future__ import annotations

import bisect
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from zoedepth_ros.data.bag import FrameIndex, read_metadata
from zoedepth_ros.data.bag_layout import BagError
from zoedepth_ros.errors import ZoeDepthError
from zoedepth_ros.eval.protocols import Protocol, get_protocol, kb_crop

# Official brightness augmentation: wider for NYU (config.dataset == 'nyu') than for the others.
BRIGHTNESS = {"nyu": (0.75, 1.25), "other": (0.9, 1.1)}
# Domain of a source whose protocol is not named after one: indoor ranges end at 10 m (NYU head).
INDOOR_MAX_DEPTH = 10.0


class DataError(ZoeDepthError):
    """A dataset that cannot be used for training or validation; the message says which and why."""


# ---------------------------------------------------------------------------------------------
# Frame sources


class BagSource:
    """Frames of one evaluation bag, by index (`FrameIndex`: its reader opens lazily in each process,
    as loader workers fork, so the object pickles without its open database)."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self.protocol = Protocol.from_metadata(read_metadata(self.path))
            self._frames = FrameIndex(self.path)  # checks the layout's topics and complete frames
        except (BagError, ValueError) as exc:
            raise DataError(f"training/validation bag {self.path}: {exc}") from None

    def __len__(self) -> int:
        return len(self._frames)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """(RGB HxWx3 uint8, GT HxW float32 metres, NaN invalid) of frame `index`."""
        try:
            frame = self._frames.read(index)
        except BagError as exc:
            raise DataError(str(exc)) from None
        return frame.rgb, frame.depth

    def __str__(self) -> str:
        return str(self.path)


class ListSource:
    """Frames of a BTS-style list: `rgb depth [focal]` per line (a leading '/' is ignored, as the
    official loader does); lines whose depth is `None` (KITTI frames without annotation) are
    skipped. GT PNGs are uint16 divided by the protocol's `gt_scale` (NYU 1000, KITTI 256). A GT
    path missing under `gt_path` is looked for under `gt_path/train` and `gt_path/val`, as the KITTI
    annotated-depth download is split (the KITTI converter accepts the same layout)."""

    def __init__(self, data_path: str | os.PathLike, gt_path: str | os.PathLike, filenames: str | os.PathLike,
                 protocol: Protocol):
        if protocol.gt_scale is None:
            raise DataError(f"protocol {protocol.name} has no integer GT scale; dataset folders need nyu or kitti")
        self.protocol = protocol
        self.filenames = Path(filenames)
        data_path, self.gt_path = Path(data_path), Path(gt_path)
        try:
            lines = self.filenames.read_text().splitlines()
        except OSError as exc:
            raise DataError(f"cannot read the file list {self.filenames}: {exc}") from None
        self._pairs: list[tuple[Path, str]] = []
        self.skipped = 0
        for number, line in enumerate(lines, 1):
            fields = line.split()
            if not fields:
                continue
            if len(fields) < 2:
                raise DataError(f"{self.filenames}:{number}: expected 'rgb_path depth_path [focal]', got {line!r}")
            if fields[1] == "None":
                self.skipped += 1
                continue
            self._pairs.append((data_path / fields[0].lstrip("/"), fields[1].lstrip("/")))
        if not self._pairs:
            raise DataError(f"{self.filenames}: no frames with ground truth")

    def __len__(self) -> int:
        return len(self._pairs)

    def read(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        import cv2

        rgb_path, depth_name = self._pairs[index]
        candidates = [self.gt_path / depth_name, self.gt_path / "train" / depth_name, self.gt_path / "val" / depth_name]
        depth_path = next((path for path in candidates if path.exists()), candidates[0])
        bgr = cv2.imread(str(rgb_path), cv2.IMREAD_COLOR)
        raw = cv2.imread(str(depth_path), cv2.IMREAD_UNCHANGED)
        if bgr is None or raw is None:
            raise DataError(f"cannot read {rgb_path if bgr is None else depth_path} (listed in {self.filenames})")
        if raw.dtype != np.uint16 or raw.ndim != 2:
            raise DataError(f"{depth_path}: expected a single-channel uint16 depth PNG, got {raw.dtype} {raw.shape}")
        depth = raw.astype(np.float32) / np.float32(self.protocol.gt_scale)
        depth[raw == 0] = np.nan
        return np.ascontiguousarray(bgr[..., ::-1]), depth

    def __str__(self) -> str:
        return str(self.filenames)


def make_sources(entry: Mapping, root: Path) -> list[BagSource | ListSource]:
    """The sources of one dataset entry of the config: `bags: [paths]` or `folder: {...}`."""
    name = entry.get("name", "?")
    if ("bags" in entry) == ("folder" in entry):
        raise DataError(f"dataset {name!r}: give either `bags` (list of bag paths) or `folder` (a file list)")
    if "bags" in entry:
        bags = entry["bags"]
        bags = [bags] if isinstance(bags, (str, os.PathLike)) else list(bags)
        if not bags:
            raise DataError(f"dataset {name!r}: `bags` is empty")
        return [BagSource(root / bag) for bag in bags]
    folder = entry["folder"]
    required = {"data_path", "gt_path", "filenames", "protocol"}
    if not isinstance(folder, Mapping) or set(folder) != required:
        raise DataError(f"dataset {name!r}: `folder` needs exactly the keys {sorted(required)}")
    try:
        protocol = get_protocol(folder["protocol"])
    except KeyError as exc:
        raise DataError(f"dataset {name!r}: {exc.args[0]}") from None
    return [ListSource(root / folder["data_path"], root / folder["gt_path"], root / folder["filenames"], protocol)]


def source_domain(protocol: Protocol) -> str:
    """Domain (metric head) a source belongs to when its config entry does not say."""
    if protocol.name in ("nyu", "kitti"):
        return protocol.name
    return "nyu" if protocol.max_depth <= INDOOR_MAX_DEPTH else "kitti"


# ---------------------------------------------------------------------------------------------
# Augmentation and network input


@dataclass(frozen=True)
class Augment:
    """The official training augmentation: rotation, then horizontal flip, then (with probability
    `photometric_p`) gamma, brightness and per-channel colour gains, clipped to [0, 1]."""

    rotate_deg: float = 1.0
    flip_p: float = 0.5
    photometric_p: float = 0.5
    gamma: tuple[float, float] = (0.9, 1.1)
    brightness: tuple[float, float] = BRIGHTNESS["other"]
    color: tuple[float, float] = (0.9, 1.1)

    def apply(self, rgb: np.ndarray, depth: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """uint8 RGB + GT (NaN invalid) -> float32 RGB in [0, 1] + GT with 0 = invalid."""
        import cv2

        depth = np.nan_to_num(depth, nan=0.0)
        if self.rotate_deg > 0:
            height, width = depth.shape
            angle = rng.uniform(-self.rotate_deg, self.rotate_deg)
            # Centre of the pixel grid, as PIL's Image.rotate (the official code) uses.
            matrix = cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0)
            rgb = cv2.warpAffine(rgb, matrix, (width, height), flags=cv2.INTER_LINEAR, borderValue=0)
            # Nearest for GT: interpolating across a depth edge invents depths no surface has.
            depth = cv2.warpAffine(depth, matrix, (width, height), flags=cv2.INTER_NEAREST, borderValue=0)
        image = rgb.astype(np.float32) / np.float32(255.0)
        if rng.random() < self.flip_p:
            image, depth = image[:, ::-1], depth[:, ::-1]
        if rng.random() < self.photometric_p:
            gamma = rng.uniform(*self.gamma)
            brightness = rng.uniform(*self.brightness)
            colors = rng.uniform(*self.color, size=3).astype(np.float32)
            image = np.clip(image ** np.float32(gamma) * np.float32(brightness) * colors, 0.0, 1.0)
        return np.ascontiguousarray(image, dtype=np.float32), np.ascontiguousarray(depth, dtype=np.float32)


def to_network_input(image: np.ndarray, size: Sequence[int]) -> torch.Tensor:
    """HxWx3 float RGB in [0, 1] -> (3, h, w) network input: stretched to `size` (official eval/train
    mode: bilinear, align_corners=True) and normalised with mean 0.5, std 0.5."""
    x = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).unsqueeze(0)
    x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=True)
    return x[0].sub_(0.5).div_(0.5)


# ---------------------------------------------------------------------------------------------
# Training streams and the batch plan


class TrainStream:
    """One dataset of the training mix: its sources, domain label and augmentation."""

    def __init__(self, name: str, sources: Sequence[BagSource | ListSource], label: int, domain: str,
                 augment: Augment, img_size: Sequence[int], kb_crop: bool | None = None,
                 depth_range: tuple[float, float] | None = None):
        self.name, self.sources, self.label, self.domain = name, list(sources), label, domain
        self.augment, self.img_size = augment, tuple(img_size)
        self.kb_crop, self.depth_range = kb_crop, depth_range
        self._ends = np.cumsum([len(s) for s in self.sources]).tolist()

    def __len__(self) -> int:
        return self._ends[-1]

    def sample(self, index: int, seed: Sequence[int]) -> dict[str, torch.Tensor]:
        k = bisect.bisect_right(self._ends, index)
        source = self.sources[k]
        rgb, depth = source.read(index - (self._ends[k - 1] if k else 0))
        if source.protocol.kb_crop if self.kb_crop is None else self.kb_crop:
            try:
                rgb, depth = kb_crop(rgb), kb_crop(depth)
            except ValueError as exc:
                raise DataError(f"dataset {self.name!r}, {source}: {exc}") from None
        image, depth = self.augment.apply(rgb, depth, np.random.default_rng(seed))
        lo, hi = self.depth_range or (source.protocol.min_depth, source.protocol.max_depth)
        gt = torch.from_numpy(depth).unsqueeze(0)
        return {
            "image": to_network_input(image, self.img_size),
            "depth": gt,
            "mask": (gt > lo) & (gt < hi),
            "domain": torch.tensor(self.label, dtype=torch.long),
        }


class TrainSet(torch.utils.data.Dataset):
    """Map-style dataset over the streams; keys are the (stream, index, seed) of `BatchPlan`.
    Samples carry their stream's index: with a single-head model every label is 0."""

    def __init__(self, streams: Sequence[TrainStream]):
        self.streams = list(streams)

    def __getitem__(self, key: tuple[int, int, tuple[int, ...]]) -> dict[str, torch.Tensor]:
        stream, index, seed = key
        return {**self.streams[stream].sample(index, seed), "stream": torch.tensor(stream)}


def ignore_stop_signals(worker_id: int) -> None:
    """Loader worker init: Ctrl-C and SIGTERM reach the whole process group, and the main process
    must outlive its workers to finish the step and save `latest`; it shuts the workers down."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def collate(samples: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    shapes = sorted({tuple(s["depth"].shape[-2:]) for s in samples})
    if len(shapes) > 1:
        raise DataError(
            f"frames of one batch differ in size {shapes}: every frame of a dataset entry must have "
            f"the same size (after the KB crop); split differently sized data into separate entries")
    return {key: torch.stack([s[key] for s in samples]) for key in samples[0]}


class BatchPlan:
    """Which samples each micro-batch of the run holds, on this rank.

    Position p of an epoch belongs to stream p % n_streams; each stream walks through seeded
    permutations of its frames in global micro-batches of `per_rank * world_size` (incomplete
    batches dropped), rank r taking the r-th slice. An epoch has n_streams x (batches in one pass of
    the longest stream) micro-batches; optimizer steps take `accum_steps` consecutive ones.
    """

    def __init__(self, lengths: Sequence[int], per_rank: int, world_size: int, rank: int, accum_steps: int, seed: int):
        self.lengths, self.per_rank, self.rank, self.seed = list(lengths), per_rank, rank, seed
        self.accum_steps = accum_steps
        self.global_batch = per_rank * world_size
        self.batches_per_pass = [n // self.global_batch for n in self.lengths]
        if min(self.batches_per_pass) == 0:
            raise DataError(f"datasets of {self.lengths} frames cannot fill one micro-batch of {self.global_batch} "
                            f"({per_rank} per rank x {world_size} ranks)")
        self.micro_per_epoch = len(self.lengths) * max(self.batches_per_pass)
        self.steps_per_epoch = self.micro_per_epoch // accum_steps
        if self.steps_per_epoch == 0:
            raise DataError(
                f"an epoch of {self.micro_per_epoch} micro-batches is shorter than accum_steps {accum_steps}")
        self._order = lru_cache(maxsize=8)(self._permutation)

    def _permutation(self, epoch: int, stream: int, pass_: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch, stream, pass_]).permutation(self.lengths[stream])

    def micro_batch(self, epoch: int, position: int) -> list[tuple[int, int, tuple[int, ...]]]:
        stream, turn = position % len(self.lengths), position // len(self.lengths)
        pass_, batch = divmod(turn, self.batches_per_pass[stream])
        order = self._order(epoch, stream, pass_)
        start = batch * self.global_batch + self.rank * self.per_rank
        return [(stream, int(order[j]), (self.seed, epoch, stream, pass_, j))
                for j in range(start, start + self.per_rank)]

    def epoch(self, epoch: int, first_step: int = 0) -> EpochBatches:
        """The micro-batches of optimizer steps first_step.. of `epoch`, for a DataLoader's batch_sampler."""
        return EpochBatches(self, epoch, first_step * self.accum_steps, self.steps_per_epoch * self.accum_steps)


class EpochBatches(torch.utils.data.Sampler):
    def __init__(self, plan: BatchPlan, epoch: int, start: int, stop: int):
        self.plan, self.epoch_index, self.start, self.stop = plan, epoch, start, stop

    def __iter__(self) -> Iterator[list[tuple[int, int, tuple[int, ...]]]]:
        for position in range(self.start, self.stop):
            yield self.plan.micro_batch(self.epoch_index, position)

    def __len__(self) -> int:
        return self.stop - self.start


# ---------------------------------------------------------------------------------------------
# Validation


class ValSet:
    """Frames scored with their source's protocol; `frames(rank, world)` shards them over ranks."""

    def __init__(self, name: str, sources: Sequence[BagSource | ListSource], max_frames: int | None = None):
        self.name, self.sources = name, list(sources)
        items = [(s, i) for s in self.sources for i in range(len(s))]
        self._items = items[:max_frames] if max_frames else items

    def __len__(self) -> int:
        return len(self._items)

    def frames(self, rank: int = 0, world_size: int = 1) -> Iterator[tuple[np.ndarray, np.ndarray, Protocol]]:
        """(RGB, full GT, protocol); RGB is KB-cropped where the protocol says so (score_frame crops the GT)."""
        for source, index in self._items[rank::world_size]:
            rgb, depth = source.read(index)
            if source.protocol.kb_crop:
                try:
                    rgb = kb_crop(rgb)
                except ValueError as exc:
                    raise DataError(f"validation set {self.name!r}, {source}: {exc}") from None
            yield rgb, depth, source.protocol
