"""The evaluation recipe (zoedepth_ros.eval.recipe): the batched prediction loop's batches and order."""

from __future__ import annotations

import numpy as np

from zoedepth_ros.eval.recipe import predict_in_batches


class CountingEstimator:
    """Stands in for a DepthEstimator: records each batch's sizes, 'predicts' each image's mean."""

    def __init__(self) -> None:
        self.batches: list[list[tuple[int, ...]]] = []

    def predict_batch(self, images):
        self.batches.append([image.shape for image in images])
        return [float(image.mean()) for image in images]


def test_batches_end_at_the_batch_size_and_where_the_size_changes():
    images = [np.full((2, 3), i, np.float32) for i in range(5)] + [np.full((4, 4), 9, np.float32)] * 2
    estimator = CountingEstimator()
    out = list(predict_in_batches(estimator, list(enumerate(images)), lambda item: item[1], batch_size=2))
    assert [item[0] for item, _ in out] == list(range(7))  # every item, in order
    assert [prediction for _, prediction in out] == [0.0, 1.0, 2.0, 3.0, 4.0, 9.0, 9.0]
    assert [len(batch) for batch in estimator.batches] == [2, 2, 1, 2]
    assert all(len(set(batch)) == 1 for batch in estimator.batches)  # one image size per batch


def test_a_full_batch_is_predicted_before_the_next_item_is_read():
    """An interrupted `evaluate` keeps every full batch it read: no item is read ahead."""
    estimator = CountingEstimator()
    read = []

    def items():
        for i in range(3):
            read.append(i)
            yield np.zeros((2, 2)) + i

    stream = predict_in_batches(estimator, items(), lambda image: image, batch_size=1)
    next(stream)
    assert read == [0] and len(estimator.batches) == 1

