"""Atomic writes: the file appears whole or not at all."""

import pytest

from lgcd_jax.data import atomic


def test_atomic_open_renames_into_place_only_on_success(tmp_path):
  out = tmp_path / "sub" / "recs.jsonl"
  with atomic.atomic_open(out) as f:
    f.write("one\n")
    assert not out.exists()  # nothing at the final path while it is being written
  assert out.read_text() == "one\n"

  with pytest.raises(RuntimeError):
    with atomic.atomic_open(out) as f:
      f.write("half")
      raise RuntimeError("killed mid-write")
  assert out.read_text() == "one\n"  # the old file is untouched
  assert sorted(p.name for p in out.parent.iterdir()) == ["recs.jsonl"]  # no temporary left


def test_atomic_write_bytes_and_json(tmp_path):
  atomic.atomic_write_bytes(tmp_path / "b", b"\x00\x01")
  assert (tmp_path / "b").read_bytes() == b"\x00\x01"
  atomic.atomic_write_json(tmp_path / "j.json", {"a": 1})
  assert (tmp_path / "j.json").read_text() == '{\n  "a": 1\n}\n'
  with pytest.raises(ValueError):
    with atomic.atomic_open(tmp_path / "x", "a"):
      pass


def test_atomic_directory_keeps_a_copy_another_process_finished_meanwhile(tmp_path):
  # Two hosts preparing the same directory: the one that finishes second must not move the first
  # one's copy aside (its reader would find files missing); it gets FileExistsError instead.
  final = tmp_path / "data"
  with pytest.raises(FileExistsError):
    with atomic.atomic_directory(final) as tmp:
      (tmp / "mine.txt").write_text("second")
      final.mkdir()
      (final / "theirs.txt").write_text("first")
  assert sorted(p.name for p in final.iterdir()) == ["theirs.txt"]
  assert not [p for p in tmp_path.iterdir() if p.name.startswith(".data.")]  # no temp left
  # With overwrite the finished copy is replaced, as before.
  with atomic.atomic_directory(final, overwrite=True) as tmp:
    (tmp / "mine.txt").write_text("new")
  assert sorted(p.name for p in final.iterdir()) == ["mine.txt"]

