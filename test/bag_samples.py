"""Helpers shared by the bag tests: the raw messages of a bag, read with rosbags directly (not through
zoedepth_ros.data.bag, so that the tests check what is on disk)."""

from __future__ import annotations

from zoedepth_ros.data.bag_layout import typestore


def raw_messages(path):
    """(topic, log time, deserialised message) of every message of the bag at `path`, in log order."""
    from rosbags.rosbag2 import Reader

    ts = typestore()
    with Reader(path) as reader:
        return [(c.topic, t, ts.deserialize_cdr(raw, c.msgtype)) for c, t, raw in reader.messages()]
