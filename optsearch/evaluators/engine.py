"""The fast evaluation engine: the same losses as ``KerasEvaluator``, computed with less work.

- **Prefix cache.** While one tensor is searched, everything upstream of it is fixed. The upstream
  activations (the cut, see ``QuantizedModel.cut_tensors``) are computed once per tensor and
  context, and each candidate runs only the downstream part. Memory is bounded by ``cache_mb``:
  chunks beyond it are recomputed from the input.
- **Incremental prefix.** When the next tensor's cut lies downstream of the cached one and only
  the tensor just decided has changed, the new cut is computed from the cached one (the segment
  between the two cuts) instead of from the input.
- **Memo by content.** Two formats that quantize a weight tensor to the same values give the same
  result. So do two activation formats at the same F that both cover the cut's range. Each such
  result is evaluated once.
- Early rejection in growing chunks and the fragile-first order come from ``KerasEvaluator``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import replace
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from optsearch.core.confidence import AcceptanceTest
from optsearch.core.fixedpoint import Format, quantize
from optsearch.core.tensors import TensorId
from optsearch.data import Dataset, Preprocess
from optsearch.evaluators.keras import KerasEvaluator, input_spec, predicted_classes
from optsearch.methods.evaluator import Evaluation, settled
from optsearch.model.graph import QuantizedModel, Segment
from optsearch.settings import DEFAULT_BATCH_SIZE, DEFAULT_CACHE_MB

#: Traced functions kept, least recently used dropped first. Weights and biases of a layer share
#: a cut, so with W -> B -> A the bias sweep reuses the weight sweep's traces.
MAX_TRACED = 48

Context = tuple[TensorId, frozenset[tuple[TensorId, Format]]]
"""The tensor being searched and every other tensor's format: what the cached cut depends on."""


class CachedEvaluator(KerasEvaluator):
    """``KerasEvaluator`` with a prefix cache and a memo by quantized content (same decisions)."""

    def __init__(
        self,
        qmodel: QuantizedModel,
        data: Dataset,
        preprocess: Preprocess | None = None,
        batch_size: int = DEFAULT_BATCH_SIZE,
        cache_mb: float = DEFAULT_CACHE_MB,
        fragile_first: bool = True,
        first_chunk: int | None = None,
        memo: bool = True,
        incremental: bool = True,
        acceptance: AcceptanceTest | None = None,
    ) -> None:
        super().__init__(qmodel, data, preprocess, batch_size, fragile_first, first_chunk, acceptance)
        self.cache_bytes = int(cache_mb * 2**20)
        self.memo = memo
        self.incremental = incremental
        self.passes = 0
        """Evaluations that ran the network (the rest came from the memo)."""
        self.memo_hits = 0
        self.seconds = {"trace": 0.0, "prefix": 0.0, "suffix": 0.0}
        """Where the time went: tracing, filling the cache (the prefix or a segment), candidates."""
        self.incremental_fills = 0
        """Cache fills computed from the previous cut rather than from the input."""
        self._traced: dict[tuple[str, ...], Callable[..., Any]] = {}
        self._context: Context | None = None
        self._cached: list[list[np.ndarray]] = []
        self._cut_range = 0.0
        self._memo: dict[Hashable, Evaluation] = {}

    def evaluate(
        self,
        formats: Mapping[TensorId, Format],
        *,
        varying: TensorId | None = None,
        max_loss: float | None = None,
        must_beat: float | None = None,
    ) -> Evaluation:
        """The loss with exactly ``formats`` applied; only the part downstream of ``varying`` is run."""
        if varying is None:
            self.passes += 1
            return super().evaluate(formats, max_loss=max_loss, must_beat=must_beat)
        start = time.perf_counter()
        self.evaluations += 1
        context = (varying, frozenset((t, f) for t, f in formats.items() if t != varying))
        self.qmodel.set_formats(formats)
        if context != self._context:
            self._timed("prefix", lambda: self._fill_cache(context))
        key = (context, self._content_key(varying, formats.get(varying)))
        known = self._memo.get(key) if self.memo else None
        if known is not None and (known.exact or settled(known.statistic, max_loss, must_beat)):
            self.memo_hits += 1
            return replace(known, seconds=time.perf_counter() - start)
        self.passes += 1
        result: Evaluation = self._timed(
            "suffix", lambda: self._run_suffix(varying, max_loss, must_beat, start)
        )
        self._memo[key] = result
        return result

    def _timed(self, phase: str, work: Callable[[], Any]) -> Any:
        """Run ``work``, adding its seconds to ``phase`` less any tracing it did (counted apart)."""
        start, traced = time.perf_counter(), self.seconds["trace"]
        out = work()
        self.seconds[phase] += time.perf_counter() - start - (self.seconds["trace"] - traced)
        return out

    # ----------------------------------------------------------------------------------------------
    # Traced functions, built on first use and kept (bounded)

    def _traced_fn(self, key: tuple[str, ...], build: Callable[[], Any]) -> Any:
        """The concrete function under ``key``, traced once for any batch size (timed as tracing).

        ``build`` may return None (nothing to trace); that is returned and not kept.
        """
        if key in self._traced:
            self._traced[key] = self._traced.pop(key)  # most recently used last
            return self._traced[key]
        start = time.perf_counter()
        built = build()
        self.seconds["trace"] += time.perf_counter() - start
        if built is not None:
            while len(self._traced) >= MAX_TRACED:
                del self._traced[next(iter(self._traced))]
            self._traced[key] = built
        return built

    def _prefix(self, tensor: TensorId) -> Callable[..., list[tf.Tensor]]:
        """Input -> the cut of ``tensor``."""

        def build() -> Callable[..., Any]:
            prefix, _ = self.qmodel.split(tensor)
            return _listed(prefix, input_spec(prefix.inputs, tf.float32))  # batches are float32

        return self._traced_fn(("prefix", self.qmodel.cut_node(tensor)), build)

    def _suffix(self, tensor: TensorId) -> Callable[..., tuple[tf.Tensor, tf.Tensor]]:
        """The cut of ``tensor`` -> predicted classes and outputs."""

        def build() -> Callable[..., Any]:
            _, suffix = self.qmodel.split(tensor)

            @tf.function(input_signature=input_spec(suffix.inputs))
            def run(*cut: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
                scores = suffix(list(cut) if len(cut) > 1 else cut[0], training=False)
                return predicted_classes(scores), scores

            return run.get_concrete_function()

        return self._traced_fn(("suffix", self.qmodel.cut_node(tensor)), build)

    def _segment(self, start: TensorId, end: TensorId) -> Callable[..., list[tf.Tensor]] | None:
        """The cut of ``start`` -> the cut of ``end``, or None when ``end``'s cut is not downstream."""

        def build() -> Callable[..., Any] | None:
            segment = self.qmodel.segment(start, end)
            return None if segment is None else _segment_fn(segment, self.qmodel.cut_tensors(start))

        return self._traced_fn(("segment", self.qmodel.cut_node(start), self.qmodel.cut_node(end)), build)

    # ----------------------------------------------------------------------------------------------
    # The cache of cut activations

    def _fill_cache(self, context: Context) -> None:
        """The cut of the context's tensor for every chunk, once: cache what fits, measure its range."""
        if self._same_cut(context):
            self._context = context  # the cached cut and its range are still exact
            self.incremental_fills += 1
            return
        segment = self._incremental_segment(context)
        if segment is not None:
            self.incremental_fills += 1
            previous, self._cached = self._cached, []
            cuts: Iterator[list[np.ndarray]] = (
                [t.numpy() for t in segment(*previous[i])] for i in range(len(self.chunks))
            )
        else:
            run_prefix = self._prefix(context[0])
            self._cached = []
            cuts = ([t.numpy() for t in run_prefix(x)] for x, _ in self._chunks())
        used, largest, caching = 0, 0.0, True
        for index, cut in enumerate(cuts):
            if segment is not None:
                previous[index] = []  # free the old cut as the new one is built
            largest = max([largest] + [float(np.max(np.abs(c))) for c in cut if c.size])
            size = sum(c.nbytes for c in cut)
            # The first chunks are cached while they fit: with fragile samples first, those are the
            # ones a rejected candidate still reaches.
            caching = caching and used + size <= self.cache_bytes
            if caching:
                self._cached.append(cut)
                used += size
        self._cut_range = largest
        self._context = context

    def _carries_over(self, context: Context) -> bool:
        """Whether the cached cut can be carried over to ``context``'s tensor.

        Yes when every chunk is cached and the two contexts differ only in the formats of the
        previous and the new tensor: both act downstream of their own cuts, so the cached cut is
        unchanged by them, and the segment between the cuts (run with the current formats) gives
        the new cut.
        """
        if not self.incremental or self._context is None or len(self._cached) != len(self.chunks):
            return False
        (old_tensor, old_fixed), (new_tensor, new_fixed) = self._context, context
        return {t for t, _ in old_fixed ^ new_fixed} <= {old_tensor, new_tensor}

    def _same_cut(self, context: Context) -> bool:
        """The cache carries over and the new tensor has the same cut (a layer's W and B)."""
        return (
            self._context is not None
            and self._carries_over(context)
            and self.qmodel.cut_node(self._context[0]) == self.qmodel.cut_node(context[0])
        )

    def _incremental_segment(self, context: Context) -> Callable[..., list[tf.Tensor]] | None:
        """The segment from the cached cut to ``context``'s, when the cache carries over."""
        if self._context is None or not self._carries_over(context):
            return None
        return self._segment(self._context[0], context[0])

    def _run_suffix(
        self, varying: TensorId, max_loss: float | None, must_beat: float | None, start: float
    ) -> Evaluation:
        """Count correct predictions chunk by chunk, from the cache where possible, stopping early."""
        run_suffix = self._suffix(varying)

        def predicted() -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
            for index, (x, y) in enumerate(self._chunks()):
                if index < len(self._cached):
                    cut = self._cached[index]
                else:
                    cut = [t.numpy() for t in self._prefix(varying)(x)]
                classes, scores = run_suffix(*cut)
                yield classes.numpy(), scores.numpy(), y

        return self._count(predicted(), max_loss, must_beat, start)

    def _content_key(self, tensor: TensorId, fmt: Format | None) -> Hashable:
        """Formats with the same key give the same network output on this data (see module doc)."""
        if fmt is None:
            return ("float",)
        if tensor.kind == "A":
            if fmt.pruned:
                return ("zeros",)
            # The cut is the quantizer's input: a format covering its whole range never clips here,
            # so the output depends on F alone.
            return ("covers", fmt.f) if fmt.max_value >= self._cut_range else ("format", fmt.bw, fmt.f)
        digest = hashlib.sha1()
        for values in self.qmodel.float_values(tensor):
            # Keyed on values: -0.0 and +0.0 weights compute the same predictions ("+ 0.0" unifies them).
            digest.update((quantize(values, fmt) + values.dtype.type(0.0)).tobytes())
        return ("values", digest.hexdigest())


def _listed(model: keras.Model, signature: list[tf.TensorSpec]) -> Callable[..., list[tf.Tensor]]:
    """A concrete function running ``model`` in inference mode, its outputs always as a list."""

    @tf.function(input_signature=signature)
    def run(*inputs: tf.Tensor) -> list[tf.Tensor]:
        out = model(list(inputs) if len(inputs) > 1 else inputs[0], training=False)
        return list(out) if isinstance(out, (list, tuple)) else [out]

    return run.get_concrete_function()


def _segment_fn(segment: Segment, sources: list[Any]) -> Callable[..., list[tf.Tensor]]:
    """A concrete function from the whole first cut to the whole second cut of ``segment``."""
    model = segment.model

    @tf.function(input_signature=input_spec(sources))
    def run(*cut: tf.Tensor) -> list[tf.Tensor]:
        computed: list[tf.Tensor] = []
        if model is not None:
            used = [cut[i] for i in segment.inputs]
            out = model(used if len(used) > 1 else used[0], training=False)
            computed = list(out) if isinstance(out, (list, tuple)) else [out]
        return [cut[i] if kind == "source" else computed[i] for kind, i in segment.picks]

    return run.get_concrete_function()
