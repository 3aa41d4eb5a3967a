"""Evaluating a quantized Keras model on labelled data (spec §4-§5): top-1 accuracy and the loss.

The model is built once; each evaluation changes formats in place (``QuantizedModel.set_formats``)
and runs one compiled forward function over the data in batches.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator, Mapping

import keras
import numpy as np
import tensorflow as tf

from optsearch.core.confidence import AcceptanceTest
from optsearch.core.errors import DataError
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import TensorId
from optsearch.data import Dataset, Preprocess, batches
from optsearch.methods.evaluator import Evaluation, relative_loss, settled
from optsearch.model.graph import QuantizedModel
from optsearch.settings import DEFAULT_BATCH_SIZE

#: The paper's test (Alg. 2): the observed loss is within the budget.
PAPER_TEST = AcceptanceTest("paper")

#: The first chunk of an evaluation is this fraction of the batch size; chunks then double up to
#: the batch size. A rejected candidate usually fails on the first fragile samples (see bench).
FIRST_CHUNK_FRACTION = 8


def chunk_bounds(total: int, batch_size: int, first: int | None = None) -> list[tuple[int, int]]:
    """``(start, stop)`` sample ranges: ``first`` samples, then doubling up to ``batch_size`` each.

    Early rejection checks the bound after every chunk, so small leading chunks let a candidate
    that misses the fragile samples stop after a few of them, while accepted candidates (which
    must see every sample) still run in full batches.
    """
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    size = min(batch_size, first if first is not None else max(1, batch_size // FIRST_CHUNK_FRACTION))
    bounds, start = [], 0
    while start < total:
        stop = min(total, start + size)
        bounds.append((start, stop))
        start, size = stop, min(batch_size, 2 * size)
    return bounds


class KerasEvaluator:
    """Top-1 accuracy of a ``QuantizedModel`` on a search set, and the relative loss of eq. 6.

    Implements the ``Evaluator`` protocol. With ``max_loss`` (or ``must_beat``) set, a candidate stops
    as soon as even all remaining samples being correct could not bring its loss down to ``max_loss``
    (below ``must_beat``): the returned loss is then a lower bound (``exact=False``) and the search's
    decisions are unchanged.
    With ``fragile_first`` the samples most likely to be missed come first: those the float model
    already gets wrong, then the rest by the float model's top-1 margin, smallest first. The early
    bound is ``misses seen - float misses in all``, so these orderings reject in the first batches.
    Accuracy does not depend on the order.
    """

    def __init__(
        self,
        qmodel: QuantizedModel,
        data: Dataset,
        preprocess: Preprocess | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        fragile_first: bool = True,
        first_chunk: int | None = None,
        acceptance: AcceptanceTest | None = None,
    ) -> None:
        self.acceptance = acceptance or PAPER_TEST
        self.qmodel = qmodel
        self.data = data
        self.preprocess = preprocess or Preprocess()
        self.batch_size = batch_size
        self.chunks = chunk_bounds(len(data), batch_size, first_chunk)
        self._predict = _compiled_argmax(qmodel)
        self.evaluations = 0
        self.samples_run = 0
        """Samples put through the network by ``evaluate`` (early rejection makes it smaller)."""
        qmodel.set_formats({})
        if fragile_first:
            margins, predicted = self._float_margins(qmodel)
            order = np.lexsort((margins, predicted == data.y))  # wrong first, then by margin
            self.data = data.subset(order, "")
        self.float_predictions, self.float_scores = self._outputs()
        """Per sample (in evaluation order): the float model's class and outputs (for the noise)."""
        self.float_right = self.float_predictions == self.data.y
        """Per sample (in evaluation order): whether the float model is right."""
        self.float_correct = int(np.sum(self.float_right))
        if self.float_correct == 0:
            raise DataError(
                f"the float model classifies no sample of {data.source} correctly: the relative loss is "
                "undefined; check the labels and the preprocessing (--scale, --resize)"
            )

    @property
    def float_accuracy(self) -> float:
        return self.float_correct / len(self.data)

    @property
    def samples(self) -> int:
        return len(self.data)

    def _float_margins(self, qmodel: QuantizedModel) -> tuple[np.ndarray, np.ndarray]:
        """Per sample: the float model's top-1 minus top-2 output, and its predicted class."""
        model = qmodel.keras_model
        margins, predicted = [], []
        for x, _ in batches(self.data, self.batch_size, self.preprocess):
            top2 = tf.math.top_k(model(x, training=False), k=2)
            values = top2.values.numpy()
            margins.append(values[:, 0] - values[:, 1])
            predicted.append(top2.indices.numpy()[:, 0])
        return np.concatenate(margins), np.concatenate(predicted).astype(np.int64)

    def _chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``(float32 x, y)`` for every chunk of ``self.chunks``, in order."""
        for start, stop in self.chunks:
            yield self.preprocess(self.data.x[start:stop]), self.data.y[start:stop]

    def _outputs(self) -> tuple[np.ndarray, np.ndarray]:
        """Predicted classes and outputs of the model in its current state, for every sample."""
        classes, scores = [], []
        for x, _ in batches(self.data, self.batch_size, self.preprocess):
            c, o = self._predict(x)
            classes.append(c.numpy())
            scores.append(o.numpy())
        return np.concatenate(classes).astype(np.int64), np.concatenate(scores)

    def _predictions(self) -> np.ndarray:
        """Predicted classes of the model in its current state, for every sample."""
        return self._outputs()[0]

    def predictions(self, formats: Mapping[TensorId, Format]) -> np.ndarray:
        """Predicted classes with exactly ``formats`` applied (the rest float)."""
        self.qmodel.set_formats(formats)
        return self._predictions()

    def accuracy(self, formats: Mapping[TensorId, Format]) -> float:
        """Top-1 accuracy with exactly ``formats`` applied (the rest float)."""
        return float(np.mean(self.predictions(formats) == self.data.y))

    def evaluate(
        self,
        formats: Mapping[TensorId, Format],
        *,
        varying: TensorId | None = None,
        max_loss: float | None = None,
        must_beat: float | None = None,
    ) -> Evaluation:
        """Quantize exactly ``formats`` and measure ``da`` on the search set (Alg. 1)."""
        start = time.perf_counter()
        self.evaluations += 1
        self.qmodel.set_formats(formats)
        predicted = ((*(t.numpy() for t in self._predict(x)), y) for x, y in self._chunks())
        return self._count(predicted, max_loss, must_beat, start)

    def _count(
        self,
        predicted: Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]],
        max_loss: float | None,
        must_beat: float | None,
        start: float,
    ) -> Evaluation:
        """The loss from (predicted classes, outputs, labels) chunks, stopping once the answer is settled.

        Counts ``L`` (float right, quantized wrong) and ``G`` (float wrong, quantized right). After
        each chunk: if even the best completion (no further loss, every remaining float-wrong sample
        a gain) leaves the acceptance statistic above ``max_loss`` (or not below ``must_beat``),
        stop and return that lower bound (``exact=False``): a decision never changes by stopping.
        """
        total, test = len(self.data), self.acceptance
        losses = gains = seen = float_seen = mismatches = 0
        noise = 0.0
        for classes, scores, y in predicted:
            noise += output_noise(scores, self.float_scores[seen : seen + len(y)])
            mismatches += int(np.sum(classes != self.float_predictions[seen : seen + len(y)]))
            right = self.float_right[seen : seen + len(y)]
            quantized_right = classes == y
            losses += int(np.sum(right & ~quantized_right))
            gains += int(np.sum(~right & quantized_right))
            float_seen += int(np.sum(right))
            seen += len(y)
            self.samples_run += len(y)
            if (max_loss is not None or must_beat is not None) and seen < total:
                unseen_right = self.float_correct - float_seen
                unseen_wrong = (total - seen) - unseen_right
                best = test.best_case(losses, gains, self.float_correct, total, unseen_right, unseen_wrong)
                if settled(best, max_loss, must_beat):
                    lower = relative_loss(
                        self.float_correct, self.float_correct - losses + gains + unseen_wrong
                    )
                    return Evaluation(
                        lower,
                        float_seen - losses + gains,
                        seen,
                        False,
                        time.perf_counter() - start,
                        None if test.criterion == "paper" else best,
                        losses,
                        gains,
                        noise / seen,
                        mismatches,
                    )
        loss = relative_loss(self.float_correct, self.float_correct - losses + gains)
        bound = (
            None if test.criterion == "paper" else test.statistic(losses, gains, self.float_correct, total)
        )
        return Evaluation(
            loss,
            self.float_correct - losses + gains,
            seen,
            True,
            time.perf_counter() - start,
            bound,
            losses,
            gains,
            noise / max(seen, 1),
            mismatches,
        )


#: A row of outputs that is not finite (an overflowing format) counts as this squared distance.
NON_FINITE_NOISE = 1e6


def output_noise(scores: np.ndarray, reference: np.ndarray) -> float:
    """The summed squared distance between each row of ``scores`` and of ``reference`` (the float
    model's outputs); a row with a NaN or inf counts ``NON_FINITE_NOISE``."""
    diff = scores.astype(np.float64).reshape(len(scores), -1) - reference.astype(np.float64).reshape(
        len(reference), -1
    )
    rows = np.sum(diff * diff, axis=1)
    return float(np.sum(np.where(np.isfinite(rows), rows, NON_FINITE_NOISE)))


def input_spec(tensors: list[keras.KerasTensor], dtype: tf.DType | None = None) -> list[tf.TensorSpec]:
    """Signatures with any batch size for Keras symbolic tensors: one trace serves every chunk."""
    return [tf.TensorSpec((None, *t.shape[1:]), dtype or t.dtype) for t in tensors]


#: The class of a sample whose scores are not all finite: never a label, so it counts as wrong.
NO_CLASS = -1


def predicted_classes(scores: tf.Tensor) -> tf.Tensor:
    """Top-1 classes, ``NO_CLASS`` for a row with a NaN or inf score.

    ``tf.argmax`` skips NaN (an all-NaN row gives class 0), so a candidate format that overflows
    would count as right on some samples. A non-finite row counts as wrong instead: such a
    candidate loses accuracy and is rejected, and the run goes on.
    """
    classes = tf.argmax(scores, axis=-1)
    finite = tf.reduce_all(tf.math.is_finite(scores), axis=-1)
    return tf.where(finite, classes, tf.constant(NO_CLASS, classes.dtype))


def _compiled_argmax(qmodel: QuantizedModel) -> Callable[[np.ndarray], tuple[tf.Tensor, tf.Tensor]]:
    """One traced forward function returning top-1 classes and the outputs; reused for every format."""
    model = qmodel.keras_model

    @tf.function(input_signature=input_spec(model.inputs, tf.float32))  # batches are float32
    def predict(x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        scores = model(x, training=False)
        return predicted_classes(scores), scores

    return predict


def below_chance_warning(accuracy: float, classes: int, part: str) -> str | None:
    """A warning when the float model is below chance (1 / classes) on the data: wrong preprocessing?"""
    chance = 1.0 / classes
    if accuracy >= chance:
        return None
    return (
        f"warning: the float model's accuracy on the {part} is {accuracy:.2%}, below chance "
        f"({chance:.2%} for {classes} classes): the data are probably not preprocessed as the model "
        "expects (--scale, --resize, channel order) or the labels do not match; the run goes on"
    )


def activation_ranges(
    qmodel: QuantizedModel,
    data: Dataset,
    preprocess: Preprocess | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, float]:
    """``Z`` of every ``A_l``: the largest magnitude of the float activations over ``data`` (spec §2)."""
    previous = qmodel.formats
    qmodel.set_formats({})
    probe = qmodel.activation_probe()

    @tf.function(reduce_retracing=True)
    def maxima(x: tf.Tensor) -> list[tf.Tensor]:
        outputs = probe(x, training=False)
        outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
        return [tf.reduce_max(tf.abs(out)) for out in outputs]

    ranges = dict.fromkeys((q.name for q in qmodel.layers), 0.0)
    bad: list[str] = []
    for x, _ in batches(data, batch_size, preprocess or Preprocess()):
        for q, value in zip(qmodel.layers, maxima(x), strict=True):
            z = float(value.numpy())
            if not math.isfinite(z) and q.name not in bad:  # max() would skip a NaN
                bad.append(q.name)
            ranges[q.name] = max(ranges[q.name], z)
    qmodel.set_formats(previous)
    if bad:
        raise DataError(
            f"the float activations of layer(s) {', '.join(bad)} are not finite on {data.source}; "
            "check the input scaling (--scale) of the data"
        )
    return ranges
