"""Writing evaluation bags (the layout: `zoedepth_ros.data.bag`'s docstring, docs/bag-layout.md):
`BagWriter` stages a bag beside its destination and renames it into place when complete.
Bags are rosbag2 metadata version 9 (Jazzy), sqlite3 or mcap storage, written with rosbags."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from zoedepth_ros.compressed_depth import DEFAULT_QUANTIZATION
from zoedepth_ros.data.bag_layout import (
    CAMERA_INFO,
    COMPRESSED_DEPTH_SUFFIX,
    COMPRESSED_IMAGE,
    DEFAULT_TOPICS,
    GT_ENCODINGS,
    IMAGE,
    LAYOUT,
    POSE_STAMPED,
    TF_MESSAGE,
    BagError,
    BagFrame,
    BagTopics,
    GtEncoding,
    ImageFormat,
    make_camera_info_msg,
    make_compressed_depth_msg,
    make_image_msg,
    make_pose_msg,
    make_tf_static_msg,
    typestore,
)
from zoedepth_ros.depth_codec import encode_depth

BAG_VERSION = 9

Storage = Literal["sqlite3", "mcap"]


class BagWriter:
    """Context manager writing `BagFrame`s as an evaluation bag, atomically.

    The bag is written inside `<path>.partial-<pid>/` and renamed to `path` only when the
    `with` block ends without an exception; on an exception the partial bag is deleted, so
    `path` is either a complete bag or untouched. An existing `path` is an error unless
    `overwrite=True` (then it is replaced at the rename). `metadata` goes to the bag's
    custom_data with the writer's own keys (layout, image_format, gt_encoding), which win.
    Frames with a `pose` get a PoseStamped on `topics.pose`; the first frame decides whether the
    bag records poses, and then every frame must have one (or none): a bag with poses on some
    frames only would read with the others unpaired. `gt_encoding="compressedDepth"` writes GT on
    `topics.depth + "/compressedDepth"` as image_transport's compressedDepth PNG, quantized with
    `compressed_depth_quantization` up to `compressed_depth_max` metres (default: the metadata's
    max_depth, the protocol's range: GT at or beyond it is never scored).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        storage: Storage = "sqlite3",
        image_format: ImageFormat = "raw",
        gt_encoding: GtEncoding = "32FC1",
        topics: BagTopics = DEFAULT_TOPICS,
        metadata: Mapping[str, str] | None = None,
        base_frame: str = "base_link",
        camera_translation: tuple[float, float, float] = (0.0, 0.0, 0.0),
        overwrite: bool = False,
        compressed_depth_max: float | None = None,
        compressed_depth_quantization: float = DEFAULT_QUANTIZATION,
    ) -> None:
        if storage not in ("sqlite3", "mcap"):
            raise ValueError(f"storage must be 'sqlite3' or 'mcap', not {storage!r}")
        if image_format not in ("raw", "jpeg", "png"):
            raise ValueError(f"image_format must be 'raw', 'jpeg' or 'png', not {image_format!r}")
        if gt_encoding not in GT_ENCODINGS:
            raise ValueError(f"gt_encoding must be one of {', '.join(GT_ENCODINGS)}, not {gt_encoding!r}")
        if topics.depth is None:
            raise ValueError("an evaluation bag needs a ground-truth topic (topics.depth)")
        self.compressed_depth: tuple[float, float] | None = None
        if gt_encoding == "compressedDepth":
            depth_max = compressed_depth_max
            if depth_max is None and metadata is not None and "max_depth" in metadata:
                depth_max = float(metadata["max_depth"])
            if depth_max is None or not depth_max > 0:
                raise ValueError("compressedDepth ground truth needs compressed_depth_max (or a max_depth in metadata)")
            self.compressed_depth = (float(depth_max), float(compressed_depth_quantization))
        self.path = Path(path)
        self.storage = storage
        self.image_format = image_format
        self.gt_encoding = gt_encoding
        self.topics = topics
        self.metadata = {**(metadata or {}), "layout": LAYOUT, "image_format": image_format, "gt_encoding": gt_encoding}
        if self.compressed_depth is not None:
            self.metadata.update(compressed_depth_max=repr(self.compressed_depth[0]),
                                 compressed_depth_quantization=repr(self.compressed_depth[1]))
        self.base_frame = base_frame
        self.camera_translation = camera_translation
        self.overwrite = overwrite
        self.frames_written = 0
        self._staging = self.path.with_name(f"{self.path.name}.partial-{os.getpid()}")
        self._writer: Any = None
        self._connections: dict[str, Any] = {}
        self._frame_id: str | None = None
        self._with_poses: bool | None = None
        self._last_stamp = -1

    def _check_target(self) -> None:
        if self.path.exists() and not self.overwrite:
            raise BagError(f"{self.path} exists; pass overwrite=True (--overwrite) to replace it")

    def __enter__(self) -> BagWriter:
        from rosbags.interfaces import Qos, QosDurability, QosHistory, QosLiveliness, QosReliability, QosTime
        from rosbags.rosbag2 import StoragePlugin, Writer

        self._check_target()
        if self._staging.exists():  # left by a killed writer that had our pid
            shutil.rmtree(self._staging)
        self._staging.mkdir(parents=True)
        try:
            plugin = StoragePlugin.SQLITE3 if self.storage == "sqlite3" else StoragePlugin.MCAP
            self._writer = Writer(self._staging / self.path.name, version=BAG_VERSION, storage_plugin=plugin)
            for key, value in self.metadata.items():
                self._writer.set_custom_data(str(key), str(value))
            self._writer.open()
            ts = typestore()
            image_topic, image_type = (
                (self.topics.image, IMAGE)
                if self.image_format == "raw"
                else (self.topics.compressed_image, COMPRESSED_IMAGE)
            )
            # Late subscribers (RViz, tf buffers) only get a static transform that is latched.
            latched = Qos(
                QosHistory.KEEP_LAST, 1, QosReliability.RELIABLE, QosDurability.TRANSIENT_LOCAL,
                QosTime(0, 0), QosTime(0, 0), QosLiveliness.AUTOMATIC, QosTime(0, 0), False,
            )  # fmt: skip
            for role, topic, msgtype, qos in (
                ("tf_static", self.topics.tf_static, TF_MESSAGE, (latched,)),
                ("image", image_topic, image_type, ()),
                ("camera_info", self.topics.camera_info, CAMERA_INFO, ()),
                ("depth", *self._depth_topic(), ()),
            ):
                self._connections[role] = self._writer.add_connection(
                    topic, msgtype, typestore=ts, offered_qos_profiles=qos
                )
        except BaseException:
            self._discard()
            raise
        return self

    def _depth_topic(self) -> tuple[str, str]:
        if self.compressed_depth is not None:
            return f"{self.topics.depth}{COMPRESSED_DEPTH_SUFFIX}", COMPRESSED_IMAGE
        return str(self.topics.depth), IMAGE

    def write(self, frame: BagFrame) -> None:
        """Append one frame: image, camera info and GT with one header, logged at its stamp."""
        if self._writer is None:
            raise BagError("BagWriter.write outside its `with` block")
        if frame.depth is None:
            raise ValueError("an evaluation bag frame needs ground truth (frame.depth)")
        if frame.stamp_ns <= self._last_stamp:
            raise ValueError("stamps must increase (frames are paired by stamp): "
                             f"{frame.stamp_ns} after {self._last_stamp}")
        if frame.depth.shape != frame.rgb.shape[:2]:
            raise ValueError(f"depth {frame.depth.shape} and rgb {frame.rgb.shape[:2]} sizes differ")
        self._check_pose_presence(frame)
        if self._frame_id is None:
            self._frame_id = frame.frame_id
            tf = make_tf_static_msg(self.base_frame, frame.frame_id, frame.stamp_ns, self.camera_translation)
            self._write("tf_static", tf, frame.stamp_ns)
        elif frame.frame_id != self._frame_id:
            raise ValueError(f"frame_id changed from {self._frame_id!r} to {frame.frame_id!r}; "
                             "/tf_static covers one camera")
        stamp = frame.stamp_ns
        self._write("image", make_image_msg(frame.rgb, stamp, frame.frame_id, self.image_format), stamp)
        info = make_camera_info_msg(frame.K, frame.width, frame.height, stamp, frame.frame_id, frame.P)
        self._write("camera_info", info, stamp)
        if self.compressed_depth is not None:
            gt_msg = make_compressed_depth_msg(frame.depth, stamp, frame.frame_id, *self.compressed_depth)
        else:
            gt_msg = make_image_msg(encode_depth(frame.depth, self.gt_encoding), stamp, frame.frame_id)
        self._write("depth", gt_msg, stamp)
        if frame.pose is not None:
            self._write("pose", make_pose_msg(frame.pose, stamp), stamp)
        self._last_stamp = stamp
        self.frames_written += 1

    def _check_pose_presence(self, frame: BagFrame) -> None:
        """On the first frame, add the pose topic if it has a pose; later, hold every frame to it."""
        has_pose = frame.pose is not None
        if self._with_poses is None:
            if has_pose:
                if self.topics.pose is None:
                    raise ValueError("frame has a pose but topics.pose is None")
                self._connections["pose"] = self._writer.add_connection(
                    self.topics.pose, POSE_STAMPED, typestore=typestore()
                )
            self._with_poses = has_pose
        elif has_pose != self._with_poses:
            raise ValueError(f"frame {frame.stamp_ns} {'has' if has_pose else 'lacks'} a pose, the first frame "
                             f"{'did not' if has_pose else 'did'}: a bag records poses on every frame or none")

    def _write(self, role: str, msg: Any, stamp_ns: int) -> None:
        data = typestore().serialize_cdr(msg, msg.__msgtype__)
        self._writer.write(self._connections[role], stamp_ns, data)

    def _discard(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and writer.storage is not None:
            writer.abort()
        shutil.rmtree(self._staging, ignore_errors=True)

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._discard()
            return
        try:
            self._writer.close()
            self._writer = None
            self._check_target()
            old = self.path.with_name(f"{self.path.name}.old-{os.getpid()}")
            replacing = self.path.exists()
            if replacing:
                self.path.rename(old)
            try:
                (self._staging / self.path.name).rename(self.path)
            except BaseException:
                if replacing:
                    old.rename(self.path)
                raise
            shutil.rmtree(old, ignore_errors=True)
            self._staging.rmdir()
        except BaseException:
            self._discard()
            raise
