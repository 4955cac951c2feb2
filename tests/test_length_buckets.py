"""Length buckets (data.length_buckets, data.length_window): batches cut to the width they need, and
sorted by length in windows; the model computes the same losses on a cut batch."""

import jax
import numpy as np
import pytest

from conftest import tiny_config
from lgcd_jax import config_check
from lgcd_jax.cli import UserError
from lgcd_jax.data import pipeline
from lgcd_jax.data.prepared import RawDataset, load_prepared, write_prepared
from lgcd_jax.data.pipeline import (PairPools, Pool, bucket_width, needed_width,
                                    parse_length_buckets, train_dataset)
from test_lgcd import _batch, _model

MAXLEN, CLUE_LEN, TEXT_DIM = 8, 3, 4


def test_parse_length_buckets():
  assert parse_length_buckets("8,16,32", 50) == (8, 16, 32, 50)
  assert parse_length_buckets(" 32, 8,8 ", 50) == (8, 32, 50)
  assert parse_length_buckets("64", 50) == (50,)  # capped at maxlen
  assert parse_length_buckets("", 50) == (50,)
  assert parse_length_buckets((4, 2), 8) == (2, 4, 8)
  for bad in ("8,x", "0", "-4", "2.5"):
    with pytest.raises(ValueError, match="length_buckets"):
      parse_length_buckets(bad, 50)


def test_config_check_names_the_field():
  c = tiny_config()
  c.data.length_buckets = "4,four"
  with pytest.raises(UserError, match="config.data.length_buckets"):
    config_check.validate(c)
  c.data.length_buckets = "4"
  c.data.length_window = -1
  with pytest.raises(UserError, match="config.data.length_window"):
    config_check.validate(c)


def test_needed_width_and_bucket_by_hand():
  arr = np.array([[0, 0, 3, 4], [0, 0, 0, 0], [1, 0, 2, 5], [0, 0, 0, 7]])
  np.testing.assert_array_equal(needed_width(arr), [2, 0, 4, 1])
  assert [bucket_width(n, (2, 4, 8)) for n in (0, 1, 2, 3, 5, 9)] == [2, 2, 2, 4, 8, 9]


def _pool(name: str, n: int, seed: int) -> Pool:
  rs = np.random.RandomState(seed)
  # Mostly short rows, a few full ones: like real source histories.
  lengths = np.where(rs.rand(n) < 0.15, MAXLEN, rs.randint(1, 4, n))
  left = np.arange(MAXLEN)[None, :] >= (MAXLEN - lengths)[:, None]
  src = np.where(left, rs.randint(1, 30, (n, MAXLEN)), 0).astype(np.int32)
  tgt_len = rs.randint(1, 3, n) if name == "real" else np.full(n, 5)
  tgt = np.where(np.arange(MAXLEN)[None, :] >= (MAXLEN - tgt_len)[:, None],
                 rs.randint(1, 20, (n, MAXLEN)), 0).astype(np.int32)
  return Pool(name, src, tgt, (tgt > 0).astype(np.float32),
              rs.randint(0, 20, (n, CLUE_LEN)).astype(np.int32),
              rs.rand(n, CLUE_LEN).astype(np.float32), np.full(n, 0), np.zeros((1, TEXT_DIM),
                                                                            np.float32),
              np.arange(n, dtype=np.int32))


@pytest.fixture(scope="module")
def pools():
  return PairPools("A2B", _pool("real", 48, 0), _pool("pseudo", 40, 1), {}, None)


def _data(pools, buckets=None, window=0, batch_size=8, cyclic=True, process=(0, 1)):
  return train_dataset(pools, batch_size, seed=3, cyclic=cyclic, buckets=buckets, window=window,
                       process_index=process[0], process_count=process[1])


@pytest.mark.parametrize("cyclic", [True, False])
def test_cut_batches_equal_the_full_ones_but_for_padding(pools, cyclic):
  full, cut = _data(pools, cyclic=cyclic), _data(pools, (2, 4), cyclic=cyclic)
  widths = set()
  for i in range(12):
    f, c = full[i], cut[i]
    assert set(f) == set(c)
    for key in ("src", "tgt"):
      need = int(needed_width(f[key]).max())
      width = c[key].shape[1]
      assert width == bucket_width(need, (2, 4))
      np.testing.assert_array_equal(c[key], f[key][:, MAXLEN - width:])
      assert not f[key][:, :MAXLEN - width].any()  # only padding was cut
      widths.add((key, width))
    np.testing.assert_array_equal(c["tgt_weight"], f["tgt_weight"][:, MAXLEN - c["tgt"].shape[1]:])
    for key in set(f) - {"src", "tgt", "tgt_weight"}:
      np.testing.assert_array_equal(c[key], f[key])
  assert len({w for k, w in widths if k == "src"}) > 1  # the test exercises more than one width


def test_length_windows_sort_within_a_window_and_keep_every_row(pools):
  window, bs, use = 3, 8, (2, 4)
  plain, grouped = _data(pools, use, 0, bs), _data(pools, use, window, bs)
  # Real batches are steps 0, 3, 6, ... (the cycle real, pseudo, pseudo): the real pool's first
  # window is its batches 0-2, i.e. steps 0, 3, 6.
  steps = (0, 3, 6)
  plain_users = np.sort(np.concatenate([plain[s]["user"] for s in steps]))
  grouped_batches = [grouped[s] for s in steps]
  np.testing.assert_array_equal(np.sort(np.concatenate([b["user"] for b in grouped_batches])),
                                plain_users)
  lengths = sorted((needed_width(b["src"]).min(), needed_width(b["src"]).max())
                   for b in grouped_batches)
  for (_, hi), (lo, _) in zip(lengths, lengths[1:]):
    assert hi <= lo  # batches hold consecutive runs of the sorted lengths
  # A pure function of (seed, step), and the global batch decides the width on every process.
  again = _data(pools, use, window, bs)
  parts = [_data(pools, use, window, bs, process=(p, 2)) for p in range(2)]
  for i in range(9):
    for k in grouped[i]:
      np.testing.assert_array_equal(grouped[i][k], again[i][k])
      np.testing.assert_array_equal(np.concatenate([parts[0][i][k], parts[1][i][k]]),
                                    grouped[i][k])


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
  rs = np.random.RandomState(0)
  seqs = {d: [list(rs.randint(0, 9, n)) for n in np.where(rs.rand(30) < 0.2, 12, rs.randint(2, 4, 30))]
          for d in "AB"}
  raw = RawDataset(
      items={d: [(f"{d}{i}", f"item {i}") for i in range(9)] for d in "AB"},
      pools={"A_only": ([f"a{i}" for i in range(30)], {"A": seqs["A"]}),
             "B_only": ([f"b{i}" for i in range(30)], {"B": seqs["B"]}),
             "overlap": (["o0"], {"A": [[0, 1]], "B": [[2, 3]]})},
      eval={"A2B": {"valid": (["v0"], [[0]], [1]), "test": (["t0"], [[1]], [2])},
            "B2A": {"valid": (["w0"], [[0]], [1]), "test": (["x0"], [[1]], [2])}})
  out = tmp_path_factory.mktemp("prep") / "lengths"
  write_prepared(raw, out, source="test", arguments={}, seed=0, num_negatives=4)
  return load_prepared(out)


def test_sequence_batches_cut_to_a_common_width(ds):
  maxlen, buckets = MAXLEN, (2, 4, MAXLEN)
  datasets = {}
  for d in "AB":
    full = pipeline.sequence_dataset(ds, d, maxlen, 2, seed=0)
    cut = pipeline.sequence_dataset(ds, d, maxlen, 2, seed=0, buckets=buckets)
    datasets[d] = cut
    for i in range(8):
      f, g = full[i]["seq"], cut[i]["seq"]
      width = g.shape[1]  # the inputs are seq[:, :-1]: their width is bucketed
      assert width - 1 == bucket_width(int(needed_width(f).max()) - 1, buckets)
      np.testing.assert_array_equal(g, f[:, maxlen + 1 - width:])
      assert not f[:, :maxlen + 1 - width].any()
  data = pipeline.TrainingData("A", "B", datasets, None, None, False)
  widths = set()
  for i in range(8):
    src, tgt = data.encoder_batches(i)
    assert src["seq"].shape[1] == tgt["seq"].shape[1]  # one compiled encoder step per width
    widths.add(src["seq"].shape[1])
    for d, b in zip("AB", (src, tgt)):
      own = datasets[d][i]["seq"]
      np.testing.assert_array_equal(b["seq"][:, -own.shape[1]:], own)
      assert not b["seq"][:, :-own.shape[1]].any()
  assert len(widths) > 1


@pytest.mark.parametrize("overrides", [{}, {"model.anchor": "mf"}])
def test_model_losses_on_a_cut_batch_equal_the_full_batch(overrides):
  config = tiny_config(**{"model.dropout": 0.0, **overrides})
  model = _model(config)
  batch = _batch(config, seed=4)
  maxlen = config.data.maxlen
  # Shorten every row to at most 2 items, so that a width-2 batch holds it all.
  for key in ("src", "tgt"):
    batch[key][:, :maxlen - 2] = 0
  batch["tgt_weight"] = np.where(batch["tgt"] > 0, batch["tgt_weight"], 0).astype(np.float32)
  cut = {**batch, "src": batch["src"][:, -2:], "tgt": batch["tgt"][:, -2:],
         "tgt_weight": batch["tgt_weight"][:, -2:]}
  rng = jax.random.key(0)
  # Eager (no jit): the ops' first compiles are shared with the rest of the suite.
  loss_full, m_full = model.loss(batch, rng, train=False)
  loss_cut, m_cut = model.loss(cut, rng, train=False)
  np.testing.assert_allclose(loss_cut, loss_full, rtol=1e-5, atol=1e-5)
  for k in m_full:
    np.testing.assert_allclose(m_cut[k], m_full[k], rtol=1e-5, atol=1e-5, err_msg=k)
  np.testing.assert_allclose(model.sample(cut, rng), model.sample(batch, rng), rtol=1e-4,
                             atol=1e-5)


def test_train_steps_on_bucketed_batches(tmp_path):
  # The bench compiles one step per batch shape before timing (the loop's jit retraces per width).
  from lgcd_jax import bench, builder
  from lgcd_jax.data import loading
  # One bucket below maxlen and two timed steps: the fewest compiles that still give two widths in
  # each stage (every compile of a tiny step costs seconds).
  config = tiny_config(**{"data.length_buckets": "6", "data.length_window": 2})
  setup = builder.build(config, loading.load_dataset(config, tmp_path), tmp_path)
  row = bench.bench_train(setup, setup.state, 2)
  assert row["shapes"] > 1 and row["encoder"]["shapes"] > 1  # several widths were trained on
  for r in (row, row["encoder"]):
    assert r["users_per_s"] > 0 and r["flops_per_user"] > 0


@pytest.fixture(scope="module")
def tiny_setup(tmp_path_factory):
  from lgcd_jax import builder
  from lgcd_jax.data import loading
  config = tiny_config()
  workdir = tmp_path_factory.mktemp("eval_buckets")
  return builder.build(config, loading.load_dataset(config, workdir), workdir)


def test_eval_batches_in_length_buckets_hold_every_user_once(tiny_setup):
  setup, buckets = tiny_setup, (2, 4, 12)
  c = setup.config
  args = (setup.ds, c.direction, "valid", setup.clues, c.data.maxlen, c.data.clue_len,
          c.clues.text_dim, 16)
  plain = list(pipeline.eval_batches(*args))
  cut = list(pipeline.eval_batches(*args, buckets=buckets))
  assert len(cut) == len(plain)
  by_user = {}
  for b in plain:
    for i, u in enumerate(b["user"]):
      if u >= 0:
        by_user[int(u)] = {k: v[i] for k, v in b.items()}
  seen, widths = [], set()
  for b in cut:
    width = b["src"].shape[1]
    widths.add(width)
    assert width == bucket_width(int(needed_width(b["src"]).max()), buckets)
    assert (b["weight"] > 0).sum() == (b["user"] >= 0).sum()
    for i, u in enumerate(b["user"]):
      if u < 0:
        continue
      seen.append(int(u))
      row = by_user[int(u)]
      np.testing.assert_array_equal(row["src"][-width:], b["src"][i])
      assert not row["src"][:-width].any()  # only padding was cut
      for k in ("label", "negatives", "clue", "clue_sim", "summary", "noise_id"):
        np.testing.assert_array_equal(row[k], b[k][i], err_msg=k)
  assert sorted(seen) == sorted(by_user)  # every user once
  assert len(widths) > 1


def test_evaluation_in_length_buckets_gives_the_same_metrics(tiny_setup):
  import dataclasses
  from lgcd_jax import train
  plain = train.evaluate_split(tiny_setup, tiny_setup.state, "valid")
  config = tiny_setup.config.unlock()
  config.data.eval_length_buckets = "2,4"
  config.data.eval_batch_size = 16  # several batches, so that they differ in width
  bucketed = dataclasses.replace(tiny_setup, config=config.lock())
  cut = train.evaluate_split(bucketed, tiny_setup.state, "valid")
  assert cut["n_users"] == plain["n_users"]
  for proto in ("sampled", "full"):
    for k, v in plain[proto].items():
      assert cut[proto][k] == pytest.approx(v, abs=1e-6), (proto, k)
  for bucket, v in plain["by_source_length"].items():
    assert cut["by_source_length"][bucket]["n_users"] == v["n_users"]
    for proto in ("sampled", "full"):
      for k, x in v[proto].items():
        assert cut["by_source_length"][bucket][proto][k] == pytest.approx(x, abs=1e-6)


def test_eval_length_buckets_are_validated():
  c = tiny_config(**{"data.eval_length_buckets": "4,x"})
  with pytest.raises(UserError, match="config.data.eval_length_buckets"):
    config_check.validate(c)


def test_bench_population_row(tiny_setup):
  from lgcd_jax import bench
  batches = bench.population_batches(tiny_setup, 64, (2, 4, 12))
  widths = [b["src"].shape[1] for b in batches]
  assert widths == sorted(widths) and len(set(widths)) > 1
  n = sum(len(r) for r in tiny_setup.ds.domain_sequences("A"))
  assert sum(b["weight"].sum() for b in batches) <= n
  row = bench.bench_population(tiny_setup, tiny_setup.state, 64, "ddim", 2, (2, 4, 12), 1)
  assert row["users"] == int(sum(b["weight"].sum() for b in batches))
  assert row["users_per_s"] > 0 and row["flops_per_user"] > 0
  assert sum(w["batches"] for w in row["widths"]) == len(batches)
  flops = [w["flops_per_user"] for w in row["widths"]]
  assert flops == sorted(flops) and flops[0] < flops[-1]  # narrow batches cost less
  total = sum(w["batches"] * 64 * w["flops_per_user"] for w in row["widths"])
  assert row["flops_per_user"] == pytest.approx(total / row["users"])  # padded rows count as cost
