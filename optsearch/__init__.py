"""optsearch: per-layer fixed-point formats for trained Keras CNNs (OptSearchCNN)."""

__version__ = "0.1.0"
