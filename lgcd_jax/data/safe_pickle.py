"""A restricted unpickler for untrusted pickles: it admits only dict, str and int.

The LLMCDSR release ships its item tables as pickles. A pickle can run arbitrary code on load
(`__reduce__` -> `os.system`), so we never call `pickle.load` on them. Plain dicts of str/int need no
global lookup at all, so every `find_class` is refused and the result's types are checked after loading.
"""

from __future__ import annotations

import io
import os
import pickle

from lgcd_jax.data.errors import DataError

_MAX_BYTES = 1 << 30


class _RestrictedUnpickler(pickle.Unpickler):

  def find_class(self, module, name):
    # dict/str/int are built from opcodes; any global lookup is an attempt to reach code.
    raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")


def _check(value, path, depth=0):
  if isinstance(value, bool) or not isinstance(value, (dict, str, int)):
    raise DataError(f"pickle holds a {type(value).__name__}; only dict, str and int are allowed", path)
  if isinstance(value, dict):
    if depth > 0:
      raise DataError("pickle holds a nested dict; expected a flat dict of str/int", path)
    for k, v in value.items():
      _check(k, path, depth + 1)
      _check(v, path, depth + 1)


def load_dict(path: str | os.PathLike) -> dict:
  """Loads a pickle that must hold one flat dict whose keys and values are str or int."""
  try:
    with open(path, "rb") as f:
      data = f.read(_MAX_BYTES + 1)
  except OSError as e:
    raise DataError(f"cannot read: {e.strerror}", path) from None
  if len(data) > _MAX_BYTES:
    raise DataError("pickle is larger than 1 GiB", path)
  if not data:
    raise DataError("empty file", path)
  try:
    value = _RestrictedUnpickler(io.BytesIO(data)).load()
  except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError,
          AttributeError, MemoryError, RecursionError) as e:
    raise DataError(f"not a safe pickle of a dict of str/int: {e}", path) from None
  if not isinstance(value, dict):
    raise DataError(f"pickle holds a {type(value).__name__}, expected a dict", path)
  _check(value, path)
  return value
