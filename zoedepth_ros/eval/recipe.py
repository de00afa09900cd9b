"""The evaluation recipe in one place: how the network runs when its depth is scored (ZoeDepth's
evaluation: the image stretched to the network size, the flip average, no padding, bilinear back),
for `evaluate`, the training's validation, the evaluate launch file and the demo, and the loop that
predicts a stream of frames in batches. Light to import (no torch): the launch file reads it."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    import numpy as np

    from zoedepth_ros.inference import DepthEstimator, DepthPrediction

# DepthEstimator's processing for scoring: mode eval (stretch to the network size, bilinear back),
# the flip average, no reflect padding.
ESTIMATOR_OPTIONS = {"mode": "eval", "flip_tta": True, "pad": False}
# The depth node's parameters for the same processing, nothing invalidated below the protocol (its
# max_depth is the caller's: above every prediction, docs/evaluation.md "Replaying through the live node").
NODE_PARAMETERS = {"mode": "eval", "flip_tta": True, "min_depth": 0.0}

Item = TypeVar("Item")


def predict_in_batches(estimator: DepthEstimator, items: Iterable[Item], image: Callable[[Item], np.ndarray],
                       batch_size: int) -> Iterator[tuple[Item, DepthPrediction]]:
    """(item, its prediction) for every item in order: the images (`image(item)`) predicted up to
    `batch_size` at a time, a batch ending where the image size changes."""
    batch: list[Item] = []
    for item in items:
        if batch and image(item).shape != image(batch[0]).shape:
            yield from zip(batch, estimator.predict_batch([image(i) for i in batch]), strict=True)
            batch = []
        batch.append(item)
        if len(batch) == batch_size:  # at once: an interrupted run keeps every full batch read
            yield from zip(batch, estimator.predict_batch([image(i) for i in batch]), strict=True)
            batch = []
    if batch:
        yield from zip(batch, estimator.predict_batch([image(i) for i in batch]), strict=True)
