"""Error kinds raised by the library; the CLI maps each to one `error:` line and an exit code.

Exit codes follow the command-line contract: 2 for bad input of any kind, 1 for a run that
failed on its own (divergence, I/O), 130 for an interrupt.
"""


class CharRNNError(Exception):
    """Base of every error charrnn reports to a user."""

    exit_code = 2


class ConfigError(CharRNNError):
    """A config file, key, value or override is wrong."""


class DataError(CharRNNError):
    """A corpus is missing, empty, too short or not decodable."""


class CheckpointError(CharRNNError):
    """A checkpoint is missing, truncated, foreign, too new or unsafe."""


class ModelError(CharRNNError):
    """An unknown model family or an impossible model shape."""


class DeviceError(CharRNNError):
    """A device that this machine does not have."""


class SamplingError(CharRNNError):
    """Sampling options or a prime that cannot be used."""


class RunDirError(CharRNNError):
    """A run directory that is in use, already holds a run, or cannot be resumed as asked."""


class TrainingFailed(CharRNNError):
    """A run that failed on its own: a non-finite loss, or a checkpoint that could not be written."""

    exit_code = 1


class FetchError(CharRNNError):
    """A download that failed on its own: unreachable, interrupted, truncated, corrupt, disk full."""

    exit_code = 1


class MissingDependency(CharRNNError):
    """An optional library that a command needs is not installed (the message says how to)."""

    exit_code = 1
