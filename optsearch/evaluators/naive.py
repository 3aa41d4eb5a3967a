"""The naive baseline evaluator: a fresh quantized model and a full ``predict`` for every candidate.

This is evaluation "done naively": nothing is reused between candidates. Every ``evaluate`` builds
the quantized clone from scratch, applies the formats, and predicts every sample in the stored
order, with no early rejection. It exists to check the fast evaluators against (same correct counts,
same losses, same search decisions) and as the reference point of ``scripts/bench_search.py``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

import keras
import numpy as np

from optsearch.core.confidence import AcceptanceTest
from optsearch.core.errors import DataError
from optsearch.core.fixedpoint import Format
from optsearch.core.tensors import ActivationPoint, TensorId
from optsearch.data import Dataset, Preprocess, batches
from optsearch.evaluators.keras import output_noise, predicted_classes
from optsearch.methods.evaluator import Evaluation, relative_loss
from optsearch.model.graph import quantized_model
from optsearch.settings import DEFAULT_BATCH_SIZE


class NaiveEvaluator:
    """Implements the ``Evaluator`` protocol by rebuilding and re-running the whole network each time.

    ``max_loss``, ``must_beat`` and ``varying`` are accepted and ignored: every evaluation is exact
    and sees all samples. The float accuracy comes from the float ``model`` itself, once, at construction.
    """

    def __init__(
        self,
        model: keras.Model,
        data: Dataset,
        preprocess: Preprocess | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        activation_point: ActivationPoint = "activation",
        acceptance: AcceptanceTest | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch size must be at least 1, got {batch_size}")
        self.model = model
        self.data = data
        self.preprocess = preprocess or Preprocess()
        self.batch_size = batch_size
        self.activation_point: ActivationPoint = activation_point
        self.samples = len(data)
        self.evaluations = 0
        self.acceptance = acceptance or AcceptanceTest("paper")
        self.float_classes, self.float_scores = self._predict(model)
        self.float_right = self.float_classes == data.y
        self.float_correct = int(np.sum(self.float_right))
        if self.float_correct == 0:
            raise DataError(
                f"the float model classifies no sample of {data.source} correctly: the relative loss is "
                "undefined; check the labels and the preprocessing (--scale, --resize)"
            )

    @property
    def float_accuracy(self) -> float:
        return self.float_correct / self.samples

    def _predict(self, model: keras.Model) -> tuple[np.ndarray, np.ndarray]:
        """Top-1 classes and outputs of ``model`` for every sample, in order, one preprocessed batch
        at a time."""
        classes, scores = [], []
        for x, _ in batches(self.data, self.batch_size, self.preprocess):
            out = model.predict(x, batch_size=self.batch_size, verbose=0)
            classes.append(predicted_classes(out).numpy())
            scores.append(np.asarray(out))
        return np.concatenate(classes).astype(np.int64), np.concatenate(scores)

    def evaluate(
        self,
        formats: Mapping[TensorId, Format],
        *,
        varying: TensorId | None = None,
        max_loss: float | None = None,
        must_beat: float | None = None,
    ) -> Evaluation:
        """Build the quantized model anew, apply exactly ``formats``, predict all samples (Alg. 1)."""
        start = time.perf_counter()
        self.evaluations += 1
        qmodel = quantized_model(self.model, self.activation_point)
        qmodel.set_formats(formats)
        # The arithmetic of the other evaluators (plain traced functions): Keras would XLA-compile
        # ``predict`` on a GPU, and a fused op may round differently by an ulp, enough to move a value
        # across a quantization step.
        qmodel.keras_model.jit_compile = False
        classes, scores = self._predict(qmodel.keras_model)
        right = classes == self.data.y
        noise = output_noise(scores, self.float_scores) / self.samples
        losses, gains = int(np.sum(self.float_right & ~right)), int(np.sum(~self.float_right & right))
        correct = int(np.sum(right))
        loss = relative_loss(self.float_correct, correct)
        test = self.acceptance
        bound = (
            None
            if test.criterion == "paper"
            else test.statistic(losses, gains, self.float_correct, self.samples)
        )
        mismatches = int(np.sum(classes != self.float_classes))
        return Evaluation(
            loss,
            correct,
            self.samples,
            True,
            time.perf_counter() - start,
            bound,
            losses,
            gains,
            noise,
            mismatches,
        )
