"""The fast evaluation engine: the same losses as ``KerasEvaluator``, computed with less work.

- **Prefix cache.** While one tensor is searched, everything upstream of it is fixed. The upstream
  activations (the cut, see ``QuantizedModel.split``) are computed once per tensor and context, and
  each candidate runs only the downstream part. Memory is bounded by ``cache_mb``: batches beyond
  it are recomputed from the input.
- **Memo by content.** Two formats that quantize a weight tensor to the same values give the same
  result. So do two activation formats at the same F that both cover the cut's range. Each such
  result is evaluated once.
- Early rejection and the fragile-first order come from ``KerasEvaluator``.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Hashable, Iterator, Mapping
from dataclasses import replace

import numpy as np
import tensorflow as tf

from optsearch.data import Dataset, Preprocess, batches
from optsearch.evaluator import Evaluation
from optsearch.fixedpoint import Format, quantize
from optsearch.graph import QuantizedModel
from optsearch.keras_evaluator import DEFAULT_BATCH_SIZE, KerasEvaluator
from optsearch.tensors import TensorId

DEFAULT_CACHE_MB = 1024


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
    ) -> None:
        super().__init__(qmodel, data, preprocess, batch_size, fragile_first)
        self.cache_bytes = int(cache_mb * 2**20)
        self.passes = 0
        """Evaluations that ran the network (the rest came from the memo)."""
        self.memo_hits = 0
        self._splits: dict[str, tuple[Callable[..., list[tf.Tensor]], Callable[..., tf.Tensor]]] = {}
        self._context: tuple[TensorId, frozenset[tuple[TensorId, Format]]] | None = None
        self._cached: list[list[np.ndarray]] = []
        self._cut_range = 0.0
        self._memo: dict[Hashable, Evaluation] = {}

    def evaluate(
        self,
        formats: Mapping[TensorId, Format],
        *,
        varying: TensorId | None = None,
        max_loss: float | None = None,
    ) -> Evaluation:
        """The loss with exactly ``formats`` applied; only the part downstream of ``varying`` is run."""
        if varying is None:
            self.passes += 1
            return super().evaluate(formats, max_loss=max_loss)
        start = time.perf_counter()
        self.evaluations += 1
        context = (varying, frozenset((t, f) for t, f in formats.items() if t != varying))
        self.qmodel.set_formats(formats)
        if context != self._context:
            self._fill_cache(varying, context)
        key = (context, self._content_key(varying, formats.get(varying)))
        known = self._memo.get(key)
        if known is not None and (known.exact or (max_loss is not None and known.loss > max_loss)):
            self.memo_hits += 1
            return replace(known, seconds=time.perf_counter() - start)
        self.passes += 1
        result = self._run_suffix(varying, max_loss, start)
        self._memo[key] = result
        return result

    def _split(self, varying: TensorId) -> tuple[Callable[..., list[tf.Tensor]], Callable[..., tf.Tensor]]:
        """Traced prefix and suffix functions for the cut of ``varying`` (built once per cut)."""
        node = self.qmodel.cut_node(varying)
        if node not in self._splits:
            # Only the current cut is kept: its traced graphs are large, and a search moves on.
            self._splits.clear()
            prefix, suffix = self.qmodel.split(varying)

            @tf.function(reduce_retracing=True)
            def run_prefix(x: tf.Tensor) -> list[tf.Tensor]:
                out = prefix(x, training=False)
                return list(out) if isinstance(out, (list, tuple)) else [out]

            @tf.function(reduce_retracing=True)
            def run_suffix(*cut: tf.Tensor) -> tf.Tensor:
                return tf.argmax(suffix(list(cut) if len(cut) > 1 else cut[0], training=False), axis=-1)

            self._splits[node] = (run_prefix, run_suffix)
        return self._splits[node]

    def _fill_cache(self, varying: TensorId, context: object) -> None:
        """Run the prefix over all samples once: keep what fits in the budget, measure the cut's range."""
        run_prefix, _ = self._split(varying)
        self._cached, used, largest, caching = [], 0, 0.0, True
        for x, _ in batches(self.data, self.batch_size, self.preprocess):
            cut = [t.numpy() for t in run_prefix(x)]
            largest = max([largest] + [float(np.max(np.abs(c))) for c in cut if c.size])
            size = sum(c.nbytes for c in cut)
            # The first batches are cached while they fit: with fragile samples first, those are
            # the ones a rejected candidate still reaches.
            caching = caching and used + size <= self.cache_bytes
            if caching:
                self._cached.append(cut)
                used += size
        self._cut_range = largest
        self._context = context  # type: ignore[assignment]

    def _run_suffix(self, varying: TensorId, max_loss: float | None, start: float) -> Evaluation:
        """Count correct predictions batch by batch, from the cache where possible, stopping early."""
        run_prefix, run_suffix = self._split(varying)

        def predicted() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for index, (x, y) in enumerate(batches(self.data, self.batch_size, self.preprocess)):
                cached = index < len(self._cached)
                cut = self._cached[index] if cached else [t.numpy() for t in run_prefix(x)]
                yield run_suffix(*cut).numpy(), y

        return self._count(predicted(), max_loss, start)

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
