"""The activation quantizer as a registered, serializable Keras layer (spec §2, eq. 1-2).

Import this module before loading a saved quantized model, so Keras finds the class:
``import optsearch.model.quantizer_layer; keras.saving.load_model("quantized.keras")``
(``safe_mode`` stays on: the layer holds no Python code, unlike a ``Lambda``).
"""

from __future__ import annotations

import math
from typing import Any

import keras

from optsearch.core.fixedpoint import DEFAULT_MODE, Format, Overflow, QuantizerMode, Rounding


@keras.saving.register_keras_serializable(package="optsearch", name="FixedPointQuantizer")
class FixedPointQuantizer(keras.layers.Layer):
    """``Q(x) = clip(round(x * 2**F), -t, t) / 2**F``, round half to even, or the identity when disabled.

    The format lives in non-trainable variables so that a search can change it in place without
    rebuilding or retracing the model. Scaling by the exact power of two ``2**F`` makes the
    result bit-identical to ``optsearch.core.fixedpoint.quantize`` in float32.

    ``rounding`` and ``overflow`` (a ``QuantizerMode``) are fixed when the layer is made: they
    choose the ops that are traced. The defaults are the paper's quantizer; the config holds them
    only when they differ, so default layers save and load as before. A ``wrap`` layer has one more
    variable, ``2**BW``.
    """

    def __init__(
        self,
        bw: int = 8,
        f: int = 0,
        enabled: bool = True,
        rounding: Rounding = DEFAULT_MODE.rounding,
        overflow: Overflow = DEFAULT_MODE.overflow,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._mode = QuantizerMode(rounding, overflow)
        self._format = Format(bw, f)
        self._enabled = bool(enabled)
        self.scale = self.add_weight(
            name="scale", shape=(), initializer="ones", trainable=False, dtype="float32"
        )
        self.threshold = self.add_weight(
            name="threshold", shape=(), initializer="zeros", trainable=False, dtype="float32"
        )
        self.enabled_flag = self.add_weight(
            name="enabled", shape=(), initializer="zeros", trainable=False, dtype="float32"
        )
        self.modulus = (
            self.add_weight(name="modulus", shape=(), initializer="ones", trainable=False, dtype="float32")
            if self._mode.overflow == "wrap"
            else None
        )
        self._check(self._format)
        self._assign()

    @property
    def mode(self) -> QuantizerMode:
        """How the layer rounds and overflows (fixed for the layer's lifetime)."""
        return self._mode

    @property
    def format(self) -> Format:
        """The current format (also when disabled)."""
        return self._format

    @property
    def enabled(self) -> bool:
        """False when the layer passes its input through unchanged (float)."""
        return self._enabled

    def set_format(self, fmt: Format | None) -> None:
        """Quantize to ``fmt`` from now on, or pass through unchanged when ``fmt`` is None."""
        if fmt is not None:
            self._check(fmt)
            self._format = fmt
        self._enabled = fmt is not None
        self._assign()

    def _assign(self) -> None:
        self.scale.assign(math.ldexp(1.0, self._format.f))
        self.threshold.assign(float(self._format.max_code))
        self.enabled_flag.assign(1.0 if self._enabled else 0.0)
        if self.modulus is not None:
            self.modulus.assign(math.ldexp(1.0, self._format.bw))

    def _check(self, fmt: Format) -> None:
        if self.modulus is not None and fmt.bw >= 128:
            raise ValueError(f"wrap-around at {fmt} needs 2**BW to be finite in float32 (BW <= 127)")

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        x = ops.cast(inputs, "float32")

        def quantized() -> Any:
            if self._mode.rounding == "convergent":
                codes = ops.round(x * self.scale)  # round half to even, as numpy's rint
            else:
                codes = ops.floor(x * self.scale)
            if self.modulus is None:
                return ops.clip(codes, -self.threshold, self.threshold) / self.scale
            return _wrap(codes, self.modulus) / self.scale

        def active() -> Any:
            # A pruned format (t = 0) is all +0.0, as in numpy; clipping to [-0, 0] could give -0.0.
            return ops.cond(self.threshold > 0.0, quantized, lambda: ops.zeros_like(x))

        # Branches, not a select: a disabled quantizer costs nothing, and only one path is computed.
        return ops.cond(self.enabled_flag > 0.0, active, lambda: x)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(bw=self._format.bw, f=self._format.f, enabled=self._enabled)
        if self._mode != DEFAULT_MODE:
            config.update(rounding=self._mode.rounding, overflow=self._mode.overflow)
        return config


def _wrap(codes: Any, span: Any) -> Any:
    """``optsearch.core.fixedpoint._wrap`` with ``span = 2**BW``, op for op (each step exact in float32)."""
    ops = keras.ops
    half = span * 0.5
    m = codes - ops.floor(codes / span) * span
    wrapped = ops.where(m >= half, m - span, m)
    inside = ops.logical_and(codes >= -half, codes < half)
    return ops.where(inside, codes, wrapped)
