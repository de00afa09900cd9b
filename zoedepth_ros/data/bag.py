"""Evaluation bags on disk: RGB + camera info + metric ground truth in rosbag2, without ROS.

Layout (docs/bag-layout.md has the full description):

- `/camera/image` sensor_msgs/Image rgb8, or `/camera/image/compressed`
  sensor_msgs/CompressedImage (jpeg/png, image_transport naming);
- `/camera/camera_info` sensor_msgs/CameraInfo (K and P filled, D zero, plumb_bob);
- `/ground_truth/depth` sensor_msgs/Image, 32FC1 metres with NaN = invalid, or 16UC1
  millimetres with 0 = invalid (REP 118), or `/ground_truth/depth/compressedDepth`
  sensor_msgs/CompressedImage in image_transport's compressedDepth format;
- `/tf_static` tf2_msgs/TFMessage with one transform base_link -> camera optical frame;
- `/ground_truth/pose` geometry_msgs/PoseStamped, in bags that record motion: the camera
  optical frame's pose in the fixed `world` frame.

Messages of one frame carry identical headers, and each is logged at its header stamp.
Bags are rosbag2 metadata version 9 (Jazzy), sqlite3 or mcap storage, written with rosbags.
The messages (rosbags typestore messages, not rclpy ones) are built and decoded in
`zoedepth_ros.data.bag_layout`, depth images in `zoedepth_ros.depth_codec`.

This is the one module that opens bags for reading (`zoedepth_ros.data.bag_writer` writes them):
evaluation, training and the replay read them through `read_frames` (stream), `FrameIndex`
(random access), `read_depth_topic`, `message_count` and `read_metadata`.
"""

from __future__ import annotations

import contextlib
import os
from collections import Counter
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import Any

import numpy as np

from zoedepth_ros.data.bag_layout import (
    CAMERA_INFO,
    COMPRESSED_DEPTH_SUFFIX,
    COMPRESSED_IMAGE,
    DEFAULT_TOPICS,
    IMAGE,
    POSE_STAMPED,
    BagError,
    BagFrame,
    BagTopics,
    assemble_frame,
    decode_depth_msg,
    stamp_to_ns,
    typestore,
)
from zoedepth_ros.depth_codec import DepthDecodeError


def _reader_errors() -> tuple[type[BaseException], ...]:
    """What a damaged bag raises inside rosbags: metadata/mcap parsing, its apsw sqlite
    reader, CDR deserialisation, and the file system."""
    import apsw
    from rosbags.rosbag2 import ReaderError
    from rosbags.serde import SerdeError

    return (ReaderError, SerdeError, apsw.Error, OSError)


def _check_bag_path(path: Path) -> None:
    if not path.exists():
        raise BagError(f"no bag at {path}")
    if not path.is_dir() or not (path / "metadata.yaml").is_file():
        raise BagError(f"{path} is not a rosbag2 directory (no metadata.yaml)")


def _damaged(path: Path, exc: BaseException) -> BagError:
    return BagError(f"cannot read bag {path} (corrupt or truncated?): {exc}")


def _open_reader(path: Path) -> Any:
    """An open rosbags Reader of the bag at `path` (the only place bags are opened for reading);
    BagError when there is no readable bag. The caller closes it."""
    from rosbags.rosbag2 import Reader

    _check_bag_path(path)
    try:
        reader = Reader(path)
        reader.open()
    except _reader_errors() as exc:
        raise _damaged(path, exc) from exc
    return reader


@contextlib.contextmanager
def _reading(path: Path) -> Iterator[Any]:
    """`_open_reader` for the block, closed after it; what a damaged bag raises inside becomes a
    BagError."""
    reader = _open_reader(path)
    try:
        yield reader
    except _reader_errors() as exc:
        raise _damaged(path, exc) from exc
    finally:
        reader.close()


def _topic_types(path: Path) -> dict[str, str]:
    """topic -> message type of every topic of the bag."""
    with _reading(path) as reader:
        return {topic: info.msgtype for topic, info in reader.topics.items()}


def _listing(available: Mapping[str, str]) -> str:
    return ", ".join(f"{t} [{m}]" for t, m in sorted(available.items())) or "no topics"


def message_count(path: str | os.PathLike[str], topic: str) -> int:
    """Messages the bag holds on `topic` (0 when it has no such topic), from its index: nothing
    is deserialised."""
    with _reading(Path(path)) as reader:
        info = reader.topics.get(topic)
        return 0 if info is None else int(info.msgcount)


class FrameReader:
    """Iterable of the `BagFrame`s of an evaluation bag, paired by header stamp.

    Creating it checks that the bag is readable and has the layout's topics (BagError naming what
    is missing). After a full iteration, `frames` is the number of frames yielded and
    `unpaired` counts, per topic, the messages that found no partner with the same stamp
    (a frame lacking its GT, info, image or, in a bag with poses, its pose); they are reported,
    never silently dropped.
    """

    def __init__(self, path: str | os.PathLike[str], topics: BagTopics = DEFAULT_TOPICS) -> None:
        self.path = Path(path)
        self.topics = topics
        self.frames = 0
        self.unpaired: Counter[str] = Counter()
        self.roles = self._resolve_topics()

    def _resolve_topics(self) -> dict[str, str]:
        """role -> topic, checking presence and message types."""
        available = _topic_types(self.path)
        image = self.topics.image if self.topics.image in available else self.topics.compressed_image
        wanted = {"image": image, "camera_info": self.topics.camera_info}
        if self.topics.depth is not None:
            compressed_depth = f"{self.topics.depth}{COMPRESSED_DEPTH_SUFFIX}"
            use_compressed = self.topics.depth not in available and compressed_depth in available
            wanted["depth"] = compressed_depth if use_compressed else self.topics.depth
        if self.topics.pose is not None and self.topics.pose in available:
            wanted["pose"] = self.topics.pose
        missing = [topic for topic in wanted.values() if topic not in available]
        if missing:
            if image in missing:
                missing[missing.index(image)] = f"{self.topics.image} (or {self.topics.compressed_image})"
            raise BagError(f"bag {self.path} lacks topic(s) {', '.join(missing)}; it has {_listing(available)}")
        expected = {
            "image": (IMAGE, COMPRESSED_IMAGE),
            "camera_info": (CAMERA_INFO,),
            "depth": (IMAGE, COMPRESSED_IMAGE),
            "pose": (POSE_STAMPED,),
        }
        for role, topic in wanted.items():
            if available[topic] not in expected[role]:
                raise BagError(f"bag {self.path}: topic {topic} is {available[topic]}, "
                               f"expected {' or '.join(expected[role])}")
        return wanted

    def __iter__(self) -> Iterator[BagFrame]:
        self.frames = 0
        self.unpaired = Counter()
        topic_roles = {topic: role for role, topic in self.roles.items()}
        ts = typestore()
        pending: dict[int, dict[str, Any]] = {}
        with _reading(self.path) as reader:
            connections = [c for c in reader.connections if c.topic in topic_roles]
            for connection, _, raw in reader.messages(connections=connections):
                msg = ts.deserialize_cdr(raw, connection.msgtype)
                stamp = stamp_to_ns(msg.header)
                parts = pending.setdefault(stamp, {})
                role = topic_roles[connection.topic]
                if role in parts:
                    self.unpaired[connection.topic] += 1
                    continue
                parts[role] = msg
                if len(parts) == len(self.roles):
                    del pending[stamp]
                    self.frames += 1
                    yield assemble_frame(stamp, parts)
        for parts in pending.values():
            for role in parts:
                self.unpaired[self.roles[role]] += 1


class FrameIndex:
    """The `BagFrame`s of an evaluation bag by position, read on demand: random access, so that a
    bag larger than memory can be shuffled (training).

    Creating it checks the topics as `FrameReader` does and that the bag holds complete frames
    (as many image, camera info, GT and, where the bag has them, pose messages; BagError
    otherwise). Frame i is the one of the i-th camera info message, read at its log time (the
    layout logs every message of a frame at its header stamp). The reader opens lazily in each
    process (data loader workers fork), so the object pickles without its open database.
    """

    def __init__(self, path: str | os.PathLike[str], topics: BagTopics = DEFAULT_TOPICS) -> None:
        self.path = Path(path)
        self.roles = FrameReader(self.path, topics).roles
        with _reading(self.path) as reader:
            counts = {role: reader.topics[topic].msgcount for role, topic in self.roles.items()}
            if len(set(counts.values())) != 1:
                raise BagError(
                    f"bag {self.path}: per-frame message counts differ ({counts}); "
                    f"reading frames by position needs complete frames (re-convert the bag)")
            info = [c for c in reader.connections if c.topic == self.roles["camera_info"]]
            self.stamps: list[int] = [t for _, t, _ in reader.messages(connections=info)]
        self._reader: Any = None
        self._pid: int | None = None

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_reader": None, "_pid": None}

    def __len__(self) -> int:
        return len(self.stamps)

    def _open(self) -> Any:
        if self._reader is None or self._pid != os.getpid():
            self._reader = _open_reader(self.path)
            self._pid = os.getpid()
        return self._reader

    def read(self, index: int) -> BagFrame:
        """Frame `index` (BagError when one of its messages is missing or cannot be decoded)."""
        stamp = self.stamps[index]
        topic_roles = {topic: role for role, topic in self.roles.items()}
        reader = self._open()
        ts = typestore()
        parts: dict[str, Any] = {}
        try:
            connections = [c for c in reader.connections if c.topic in topic_roles]
            for connection, _, raw in reader.messages(connections=connections, start=stamp, stop=stamp + 1):
                parts.setdefault(topic_roles[connection.topic], ts.deserialize_cdr(raw, connection.msgtype))
        except _reader_errors() as exc:
            raise _damaged(self.path, exc) from exc
        missing = [topic for role, topic in self.roles.items() if role not in parts]
        if missing:
            raise BagError(f"bag {self.path}: frame {index} (stamp {stamp}) lacks {', '.join(missing)}")
        try:
            return assemble_frame(stamp, parts)
        except BagError as exc:
            raise BagError(f"bag {self.path}: frame {index} (stamp {stamp}): {exc}") from None


def read_frames(path: str | os.PathLike[str], topics: BagTopics = DEFAULT_TOPICS) -> FrameReader:
    """Frames of an evaluation bag; iterate it, then read `.frames` and `.unpaired`."""
    return FrameReader(path, topics)


def read_depth_topic(path: str | os.PathLike[str], topic: str,
                     rejected: MutableMapping[str, int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
    """(header stamp, metres) of each depth image on `topic`: a 32FC1 / 16UC1 Image
    (`decode_prediction`) or a compressedDepth CompressedImage. The topic is checked when this is
    called, the messages are read lazily. A message that cannot be decoded is a BagError, or
    with `rejected` given, skipped and counted there under "<topic> (rejected: <reason>)"."""
    path = Path(path)
    available = _topic_types(path)
    if topic not in available:
        raise BagError(f"bag {path} has no prediction topic {topic}; it has {_listing(available)}")
    if available[topic] not in (IMAGE, COMPRESSED_IMAGE):
        raise BagError(f"bag {path}: prediction topic {topic} is {available[topic]}, expected {IMAGE} (32FC1 or "
                       f"16UC1) or {COMPRESSED_IMAGE} (compressedDepth)")

    def messages() -> Iterator[tuple[int, np.ndarray]]:
        ts = typestore()
        with _reading(path) as reader:
            connections = [c for c in reader.connections if c.topic == topic]
            for connection, _, raw in reader.messages(connections=connections):
                msg = ts.deserialize_cdr(raw, connection.msgtype)
                try:
                    depth = decode_depth_msg(msg, prediction=True)
                except DepthDecodeError as exc:
                    if rejected is None:
                        raise BagError(f"bag {path}: {topic} at stamp {stamp_to_ns(msg.header)}: {exc}") from None
                    key = f"{topic} (rejected: {getattr(exc, 'reason', 'bad_image')})"
                    rejected[key] = rejected.get(key, 0) + 1
                    continue
                yield stamp_to_ns(msg.header), depth

    return messages()


def read_metadata(path: str | os.PathLike[str]) -> dict[str, str]:
    """The bag's custom_data (protocol, split, crop, depth range, layout keys) as strings."""
    import yaml

    path = Path(path)
    _check_bag_path(path)
    try:
        info = yaml.safe_load((path / "metadata.yaml").read_text(encoding="utf-8"))["rosbag2_bagfile_information"]
        custom = info.get("custom_data") or {}
    except (yaml.YAMLError, UnicodeDecodeError, KeyError, TypeError, AttributeError) as exc:
        raise BagError(f"cannot parse {path / 'metadata.yaml'}: {exc}") from exc
    if not isinstance(custom, dict):
        raise BagError(f"{path / 'metadata.yaml'}: custom_data is not a mapping")
    return {str(k): str(v) for k, v in custom.items()}
