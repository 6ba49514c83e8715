"""The error every reader of interaction data raises (`training.readers`,
`training.arrow_readers`): one line that names the file and, where known, the line or row."""

from __future__ import annotations


class DataFormatError(ValueError):
    """A data file that cannot be read; the message names the file and, where known, the line."""


__all__ = ["DataFormatError"]
