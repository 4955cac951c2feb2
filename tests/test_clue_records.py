"""The clue record format: save/load round trip, atomic shards, clear errors on bad files, merging."""

import dataclasses
import json

import numpy as np
import pytest

from lgcd_jax.data import clue_records as clues_lib
from lgcd_jax.data.clue_records import ClueSet, load_clues, merge_clues, save_clues
from lgcd_jax.data.errors import DataError
from lgcd_jax.data.prepared import Ragged

TEXT_DIM = 3


def make_clues(direction="A2B", source="bridge:neighbours") -> ClueSet:
  items = [[3, 1, 4], [2], [], [0, 5], [6]]
  sims = [[0.9, 0.5, 0.2], [0.7], [], [0.4, 0.3], [0.8]]
  n = len(items)
  rng = np.random.default_rng(0)
  has = np.array([True, False, True, True, False])
  emb = rng.normal(size=(n, TEXT_DIM)).astype(np.float32) * has[:, None]
  return ClueSet(
      direction=direction,
      user_ids=np.array(["u1", "u2", "u3", "u1", "v9"]),
      pools=np.array(["A_only", "A_only", "A_only", "overlap", "valid"]),
      items=Ragged.from_lists(items),
      sims=np.array([s for row in sims for s in row], np.float32),
      summary_emb=emb,
      has_summary=has,
      summaries=np.array(["likes tea kettles", "", "wants ümlaut pans " + "x" * 500, "bakes", ""],
                         dtype=object),
      source=source,
  )


def assert_same(a: ClueSet, b: ClueSet):
  assert a.direction == b.direction and a.source == b.source
  np.testing.assert_array_equal(a.user_ids, b.user_ids)
  np.testing.assert_array_equal(a.pools, b.pools)
  np.testing.assert_array_equal(a.items.values, b.items.values)
  np.testing.assert_array_equal(a.items.offsets, b.items.offsets)
  np.testing.assert_array_equal(a.sims, b.sims)
  np.testing.assert_array_equal(a.summary_emb, b.summary_emb)
  np.testing.assert_array_equal(a.has_summary, b.has_summary)
  assert [str(s) for s in a.summaries] == [str(s) for s in b.summaries]


def test_round_trip_over_several_shards(tmp_path):
  c = make_clues()
  save_clues(c, tmp_path, shard_size=2)
  d = tmp_path / "A2B"
  names = sorted(p.name for p in d.iterdir())
  assert names == ["index.json", "shard-00000-of-00003.npz", "shard-00001-of-00003.npz",
                   "shard-00002-of-00003.npz"]
  index = json.loads((d / "index.json").read_text())
  assert index["direction"] == "A2B" and index["source"] == "bridge:neighbours"
  assert index["text_dim"] == TEXT_DIM and index["num_users"] == 5 and index["shard_sizes"] == [2, 2, 1]
  back = load_clues(tmp_path, "A2B", num_target_items=7)
  assert_same(c, back)
  assert back.items.values.dtype == np.int32 and back.sims.dtype == np.float32
  # Shards hold no object arrays: they load without pickle.
  with np.load(d / "shard-00001-of-00003.npz", allow_pickle=False) as z:
    assert {z[k].dtype.kind for k in z.files} <= {"U", "i", "f", "b", "u"}


def test_lookup_and_rows():
  c = make_clues()
  assert c.lookup("A_only", "u1") == 0
  assert c.lookup("overlap", "u1") == 3
  assert c.lookup("valid", "v9") == 4
  assert c.lookup("test", "v9") is None
  np.testing.assert_array_equal(c.rows("A_only", ["u3", "nobody", "u2"]), [2, -1, 1])


def test_resave_with_fewer_shards_removes_stale_ones(tmp_path):
  c = make_clues()
  save_clues(c, tmp_path, shard_size=1)
  assert len(list((tmp_path / "A2B").glob("shard-*.npz"))) == 5
  save_clues(c, tmp_path, shard_size=10)
  assert [p.name for p in (tmp_path / "A2B").glob("shard-*.npz")] == ["shard-00000-of-00001.npz"]
  assert not list((tmp_path / "A2B").glob(".*"))  # no temporary files left behind
  assert_same(c, load_clues(tmp_path, "A2B"))


def test_crash_midway_leaves_directory_marked_incomplete(tmp_path, monkeypatch):
  c = make_clues()
  save_clues(c, tmp_path, shard_size=2)
  real_write = clues_lib.atomic.atomic_write_bytes
  calls = []

  def failing_write(path, data):
    calls.append(path)
    if len(calls) == 2:
      raise OSError("disk full")
    real_write(path, data)

  monkeypatch.setattr(clues_lib.atomic, "atomic_write_bytes", failing_write)
  with pytest.raises(OSError):
    save_clues(c, tmp_path, shard_size=2)
  # The old index was dropped before any shard was rewritten, and no new one was written.
  assert not (tmp_path / "A2B" / "index.json").exists()
  with pytest.raises(DataError, match="index.json"):
    load_clues(tmp_path, "A2B")


def test_missing_directory_or_direction(tmp_path):
  with pytest.raises(DataError, match="no index.json"):
    load_clues(tmp_path, "B2A")
  save_clues(make_clues(), tmp_path)
  (tmp_path / "A2B" / "index.json").rename(tmp_path / "other.json")
  with pytest.raises(DataError, match="no index.json"):
    load_clues(tmp_path, "A2B")


def test_corrupt_or_missing_shard_names_the_file(tmp_path):
  save_clues(make_clues(), tmp_path, shard_size=2)
  shard = tmp_path / "A2B" / "shard-00001-of-00003.npz"
  data = shard.read_bytes()
  shard.write_bytes(data[: len(data) // 2])
  with pytest.raises(DataError) as e:
    load_clues(tmp_path, "A2B")
  assert e.value.path == str(shard) and "corrupt" in str(e.value)
  shard.write_bytes(b"not a zip file at all")
  with pytest.raises(DataError, match="shard-00001-of-00003.npz"):
    load_clues(tmp_path, "A2B")
  shard.unlink()
  with pytest.raises(DataError, match="missing clue shard"):
    load_clues(tmp_path, "A2B")


def _rewrite_shard(path, **changes):
  with np.load(path, allow_pickle=False) as z:
    arrays = {k: z[k] for k in z.files}
  arrays.update(changes)
  with open(path, "wb") as f:
    np.savez(f, **arrays)


def test_out_of_range_item_nan_sims_and_mismatched_lengths(tmp_path):
  save_clues(make_clues(), tmp_path, shard_size=2)
  shard = tmp_path / "A2B" / "shard-00000-of-00003.npz"
  with pytest.raises(DataError, match=r"item index 6 out of range \[0, 6\)") as e:
    load_clues(tmp_path, "A2B", num_target_items=6)
  assert e.value.path.endswith("shard-00002-of-00003.npz")
  load_clues(tmp_path, "A2B", num_target_items=7)

  _rewrite_shard(shard, sims=np.array([0.9, np.nan, 0.2, 0.7], np.float32))
  with pytest.raises(DataError, match="NaN") as e:
    load_clues(tmp_path, "A2B")
  assert e.value.path == str(shard)

  _rewrite_shard(shard, sims=np.array([0.9, 0.5, 0.2, 0.7], np.float32), user_ids=np.array(["u1"]))
  with pytest.raises(DataError, match="mismatched lengths"):
    load_clues(tmp_path, "A2B")


def test_save_rejects_bad_clues(tmp_path):
  c = make_clues()
  c.sims[1] = np.nan
  with pytest.raises(DataError, match="NaN"):
    save_clues(c, tmp_path)
  c = make_clues()
  c.pools[0] = "train"
  with pytest.raises(DataError, match="unknown pools"):
    save_clues(c, tmp_path)
  assert not (tmp_path / "A2B").exists()


def test_merge():
  c = make_clues()
  lo = ClueSet("A2B", c.user_ids[:2], c.pools[:2], Ragged.from_lists(c.items.to_lists()[:2]),
               c.sims[:4], c.summary_emb[:2], c.has_summary[:2], c.summaries[:2], "bridge:neighbours")
  hi = ClueSet("A2B", c.user_ids[2:], c.pools[2:], Ragged.from_lists(c.items.to_lists()[2:]),
               c.sims[4:], c.summary_emb[2:], c.has_summary[2:], c.summaries[2:], "replay")
  merged = merge_clues([lo, hi])
  assert merged.source == "bridge:neighbours+replay"
  assert_same(dataclasses.replace(c, source=merged.source), merged)
  assert merged.lookup("valid", "v9") == 4
  with pytest.raises(DataError, match="more than once"):
    merge_clues([c, c])
  with pytest.raises(ValueError, match="directions"):
    merge_clues([c, make_clues("B2A")])
