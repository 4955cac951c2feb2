"""The hashing sentence encoder and the on-disk cache of title embeddings."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lgcd_jax.data.prepared import PreparedDataset
from lgcd_jax.text import cache
from lgcd_jax.text.hashing import HashingEncoder, tokenize

REPO = Path(__file__).resolve().parents[1]
TEXTS = ["Stainless Steel Chef Knife, 8 inch", "chef knife set with block", "Organic Green Tea (100 bags)",
         "", "!!! ---", "Crème brûlée torch", "green tea"]


def test_tokenize_and_features():
  assert tokenize("Green-TEA, 100 bags!") == ["green", "tea", "100", "bags"]
  enc = HashingEncoder(dim=16)
  assert enc.features("a b c") == ["a", "b", "c", "a b", "b c"]
  assert enc.features("") == []


def test_shape_dtype_and_normalisation():
  enc = HashingEncoder(dim=64)
  assert enc.dim == 64 and "64" in enc.name
  emb = enc.encode(TEXTS)
  assert emb.shape == (len(TEXTS), 64) and emb.dtype == np.float32
  norms = np.linalg.norm(emb, axis=1)
  words = np.array([bool(tokenize(t)) for t in TEXTS])
  np.testing.assert_allclose(norms[words], 1.0, rtol=1e-5)
  np.testing.assert_array_equal(emb[~words], 0.0)  # no words: an exact zero row, never NaN
  assert enc.encode([]).shape == (0, 64)
  # Batching does not change the result.
  np.testing.assert_array_equal(enc.encode(TEXTS, batch_size=2), emb)


def test_case_insensitive_and_seeded():
  enc = HashingEncoder(dim=128, seed=0)
  a, b = enc.encode(["Green TEA", "green tea"])
  np.testing.assert_array_equal(a, b)
  other = HashingEncoder(dim=128, seed=1)
  assert other.name != enc.name
  assert not np.array_equal(other.encode(["green tea"])[0], a)


def test_shared_words_are_more_similar():
  enc = HashingEncoder(dim=384)
  e = enc.encode(["stainless steel chef knife", "chef knife set with wooden block",
                  "organic green tea bags", "green tea", "tea green"])
  cos = e @ e.T
  assert cos[0, 1] > cos[0, 2] + 0.2  # two shared words vs none
  assert cos[2, 3] > cos[2, 0] + 0.2
  assert abs(cos[0, 2]) < 0.3  # unrelated titles are near orthogonal
  # Bigrams see word order: same words, other order is similar but not identical.
  assert 0.3 < cos[3, 4] < 0.99


def test_deterministic_across_processes(tmp_path):
  """Python's `hash` is salted per process; the encoder must not depend on it."""
  expected = HashingEncoder(dim=96, seed=3).encode(TEXTS).tobytes()
  code = ("import sys, json; from lgcd_jax.text.hashing import HashingEncoder; "
          "texts = json.loads(sys.argv[2]); "
          "open(sys.argv[1], 'wb').write(HashingEncoder(dim=96, seed=3).encode(texts).tobytes())")
  for hash_seed in ("1", "987"):
    out = tmp_path / f"emb-{hash_seed}.bin"
    env = {**os.environ, "PYTHONHASHSEED": hash_seed,
           "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    subprocess.run([sys.executable, "-c", code, str(out), json.dumps(TEXTS)], env=env, check=True,
                   cwd=tmp_path, timeout=60)
    assert out.read_bytes() == expected


class CountingEncoder:
  """Wraps an encoder and counts calls to `encode`."""

  def __init__(self, dim=32):
    self.inner = HashingEncoder(dim=dim)
    self.name, self.dim, self.calls = self.inner.name, dim, 0

  def encode(self, texts, batch_size=256, progress=False):
    self.calls += 1
    return self.inner.encode(texts, batch_size, progress)


def make_ds(path, titles_a=("green tea", "black coffee", "dark chocolate")):
  return PreparedDataset(path=path, manifest={}, item_ids={"A": np.array(["a0", "a1", "a2"]),
                                                           "B": np.array(["b0"])},
                         titles={"A": list(titles_a), "B": ["tea kettle"]}, pool_user_ids={}, pools={},
                         eval={})


def test_cache_miss_hit_and_invalidation(tmp_path):
  ds = make_ds(tmp_path)
  enc = CountingEncoder()
  first = cache.title_embeddings(ds, "A", enc)
  assert enc.calls == 1
  np.testing.assert_array_equal(first, enc.inner.encode(ds.titles["A"]))
  files = sorted((tmp_path / "embeddings").iterdir())
  assert [f.name for f in files] == [f"A-{enc.name}-{cache.titles_key(ds.titles['A'])}.npy"]
  assert len(cache.titles_key(ds.titles["A"])) == 16

  again = cache.title_embeddings(ds, "A", enc)  # hit: no encoding
  assert enc.calls == 1
  np.testing.assert_array_equal(again, first)

  cache.title_embeddings(ds, "B", enc)  # another domain, another file
  assert enc.calls == 2

  changed = make_ds(tmp_path, ("green tea", "black coffee", "milk chocolate"))
  emb = cache.title_embeddings(changed, "A", enc)  # titles changed: another key, recomputed
  assert enc.calls == 3
  assert not np.array_equal(emb[2], first[2])
  np.testing.assert_array_equal(emb[:2], first[:2])
  assert len(list((tmp_path / "embeddings").glob("A-*.npy"))) == 2

  other_dim = CountingEncoder(dim=16)  # the encoder's name (with its dim) is part of the key
  assert cache.title_embeddings(ds, "A", other_dim).shape == (3, 16)
  assert other_dim.calls == 1


def test_cache_recomputes_bad_files(tmp_path):
  ds = make_ds(tmp_path)
  enc = CountingEncoder()
  path = cache.cache_path(ds, "A", enc)
  path.parent.mkdir(parents=True)
  np.save(path, np.ones((2, enc.dim), np.float32))  # wrong shape
  emb = cache.title_embeddings(ds, "A", enc)
  assert enc.calls == 1 and emb.shape == (3, enc.dim)
  np.testing.assert_array_equal(np.load(path), emb)  # replaced by the right one
  path.write_bytes(b"not an npy file")  # corrupt
  np.testing.assert_array_equal(cache.title_embeddings(ds, "A", enc), emb)
  assert enc.calls == 2


def test_cache_locations(tmp_path):
  enc = CountingEncoder()
  no_path = make_ds(None)
  cache.title_embeddings(no_path, "A", enc)
  cache.title_embeddings(no_path, "A", enc)
  assert enc.calls == 2  # nowhere to cache
  assert cache.cache_path(no_path, "A", enc) is None
  cache.title_embeddings(no_path, "A", enc, cache_dir=tmp_path / "elsewhere")
  cache.title_embeddings(no_path, "A", enc, cache_dir=tmp_path / "elsewhere")
  assert enc.calls == 3
  assert len(list((tmp_path / "elsewhere").glob("A-*.npy"))) == 1


def test_atomic_write_leaves_no_temp_files(tmp_path, monkeypatch):
  ds = make_ds(tmp_path)
  enc = CountingEncoder()
  cache.title_embeddings(ds, "A", enc)
  cache.title_embeddings(ds, "B", enc)
  assert sorted(f.suffix for f in (tmp_path / "embeddings").iterdir()) == [".npy", ".npy"]

  # A crash at the final rename leaves neither a cache file nor a temporary one behind.
  def boom(*args, **kwargs):
    raise OSError("disk full")

  changed = make_ds(tmp_path, ("x", "y", "z"))
  monkeypatch.setattr(os, "replace", boom)
  with pytest.raises(OSError, match="disk full"):
    cache.title_embeddings(changed, "A", enc)
  monkeypatch.undo()
  names = sorted(f.name for f in (tmp_path / "embeddings").iterdir())
  assert len(names) == 2 and all(n.endswith(".npy") and not n.startswith(".") for n in names)
  assert cache.cache_path(changed, "A", enc).name not in names


def test_progress_in_a_log_file_is_whole_lines(capsys):
  """With stderr not a terminal (a log file), progress reports are separate lines, about ten of
  them, ending with the total, instead of carriage-return redraws run together."""
  texts = [f"title number {i}" for i in range(1000)]
  HashingEncoder(dim=32).encode(texts, batch_size=7, progress=True)
  err = capsys.readouterr().err
  assert "\r" not in err
  lines = err.strip().splitlines()
  assert 5 <= len(lines) <= 12, lines
  assert lines[-1].endswith("1000/1000 texts")
  assert all(line.endswith(" texts") for line in lines)
