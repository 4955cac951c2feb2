import os
import pickle

import pytest

from lgcd_jax.data import safe_pickle
from lgcd_jax.data.errors import DataError


class _Evil:

  def __reduce__(self):
    return (os.system, ("touch PWNED",))


def test_loads_a_plain_dict(tmp_path):
  path = tmp_path / "ok.pkl"
  path.write_bytes(pickle.dumps({"B0001": 0, "B0002": "a title"}, protocol=4))
  assert safe_pickle.load_dict(path) == {"B0001": 0, "B0002": "a title"}


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
def test_refuses_code_execution(tmp_path, protocol, monkeypatch):
  monkeypatch.chdir(tmp_path)
  path = tmp_path / "evil.pkl"
  path.write_bytes(pickle.dumps({"x": _Evil()}, protocol=protocol))
  with pytest.raises(DataError, match="evil.pkl"):
    safe_pickle.load_dict(path)
  assert not (tmp_path / "PWNED").exists()


@pytest.mark.parametrize("value", [[1, 2], {"a": 1.5}, {"a": [1]}, {"a": {"b": 1}}, {"a": True}, 3])
def test_refuses_other_types(tmp_path, value):
  path = tmp_path / "bad.pkl"
  path.write_bytes(pickle.dumps(value))
  with pytest.raises(DataError, match="bad.pkl"):
    safe_pickle.load_dict(path)


def test_truncated_and_empty(tmp_path):
  path = tmp_path / "t.pkl"
  path.write_bytes(pickle.dumps({"a": 1})[:-3])
  with pytest.raises(DataError, match="t.pkl"):
    safe_pickle.load_dict(path)
  path.write_bytes(b"")
  with pytest.raises(DataError, match="empty"):
    safe_pickle.load_dict(path)
