"""User-facing errors: the CLI prints their message on one line and exits with code 2."""


class OptsearchError(Exception):
    """A problem with the user's input (file, model, data or setting) that they can fix.

    The message names the file, layer or field, says what is wrong, and what to do.
    """


class ModelError(OptsearchError):
    """The model file is missing, unreadable, unsafe, or has nothing to quantize."""


class DataError(OptsearchError):
    """The evaluation data are missing, malformed, or do not fit the model."""
