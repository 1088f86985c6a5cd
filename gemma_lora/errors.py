"""The exceptions `gemma_lora` raises for user mistakes.

Every error a user can cause (a bad parameter, a malformed data file, a model
that cannot be found) is raised as a subclass of `GemmaLoraError`, with a
message that names the parameter, file, line or field and says what was
expected. Anything else that escapes is a bug in `gemma_lora`.
"""


class GemmaLoraError(Exception):
    """Base class of every error caused by user input."""


class ConfigError(GemmaLoraError, ValueError):
    """A run parameter has a value that cannot work."""


class DataError(GemmaLoraError, ValueError):
    """A data file or record is malformed."""


class ModelError(GemmaLoraError, RuntimeError):
    """A model, preset or adapter cannot be found, converted or loaded."""
