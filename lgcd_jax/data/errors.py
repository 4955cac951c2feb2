"""The one error type for bad input data: it always names the file (and the line, when there is one)."""

from __future__ import annotations


class DataError(ValueError):
  """Bad input data. `str()` reads `FILE:LINE: message` so a user can jump to the spot."""

  def __init__(self, message: str, path: object = None, line: int | None = None):
    self.path = None if path is None else str(path)
    self.line = line
    self.reason = message
    where = ""
    if self.path is not None:
      where = self.path + (f":{line}" if line is not None else "") + ": "
    super().__init__(where + message)
