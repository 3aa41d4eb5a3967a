"""Kept so that ``import optsearch.quantizer_layer`` (the README's and 0.1.0's way to load a saved
quantized model) still registers the layer; the layer lives in ``optsearch.model.quantizer_layer``."""

from optsearch.model.quantizer_layer import FixedPointQuantizer

__all__ = ["FixedPointQuantizer"]
