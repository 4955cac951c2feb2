"""The input pipeline: batch contract, padding, determinism, cyclic sampling, resume, multi-host, eval."""

import json
import time

import numpy as np
import pytest

from lgcd_jax.data import pipeline
from lgcd_jax.data.clue_records import ClueSet
from lgcd_jax.data.pipeline import (PairPools, eval_batches, make_train_iterator, pad_left, pad_right,
                                    process_slice, sequence_dataset, train_dataset)
from lgcd_jax.data.errors import DataError
from lgcd_jax.data.prepared import RawDataset, Ragged, load_prepared, write_prepared

MAXLEN, CLUE_LEN, TEXT_DIM = 3, 2, 4

A_ONLY = [[0, 1, 2], [3], [4, 5, 0, 1], [2, 3], [5]]
OVERLAP_A = [[0, 1], [2], [3, 4, 5, 0], [1]]
OVERLAP_B = [[1, 2], [3, 4], [5], [6, 0, 1, 2]]
B_ONLY = [[0, 1], [2, 3, 4], [6], [5, 6, 0]]


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
  raw = RawDataset(
      items={"A": [(f"a{i}", f"food {i}") for i in range(6)],
             "B": [(f"b{i}", f"kitchen {i}") for i in range(7)]},
      pools={"A_only": ([f"a_user{i}" for i in range(5)], {"A": A_ONLY}),
             "B_only": ([f"b_user{i}" for i in range(4)], {"B": B_ONLY}),
             "overlap": ([f"o{i}" for i in range(4)], {"A": OVERLAP_A, "B": OVERLAP_B})},
      eval={"A2B": {"valid": (["v0", "v1", "v2"], [[0, 1], [2, 3, 4, 5], [5]], [1, 2, 3]),
                    "test": (["t0", "t1"], [[1], [2]], [4, 5])},
            "B2A": {"valid": (["w0", "w1"], [[0], [1, 2]], [0, 1]),
                    "test": (["x0"], [[3]], [2])}},
  )
  out = tmp_path_factory.mktemp("prep") / "tiny"
  write_prepared(raw, out, source="test", arguments={}, seed=0, num_negatives=4)
  return load_prepared(out)


def make_clues() -> ClueSet:
  # a_user0: 3 items; a_user1: 1 item; a_user3: 2 items; a_user4: a record with no items (left out);
  # a_user2: no record (left out); o1: overlap clue; v0: a valid-split clue.
  rows = [("A_only", "a_user0", [3, 1, 4], [0.9, 0.5, 0.2], True),
          ("A_only", "a_user1", [6], [0.7], False),
          ("A_only", "a_user3", [0, 2], [0.6, 0.4], True),
          ("A_only", "a_user4", [], [], False),
          ("overlap", "o1", [5, 4, 3], [0.8, 0.3, 0.1], True),
          ("valid", "v0", [2], [0.95], True)]
  emb = np.arange(len(rows) * TEXT_DIM, dtype=np.float32).reshape(len(rows), TEXT_DIM) + 1
  has = np.array([r[4] for r in rows])
  return ClueSet("A2B", np.array([r[1] for r in rows]), np.array([r[0] for r in rows]),
                 Ragged.from_lists([r[2] for r in rows]),
                 np.array([s for r in rows for s in r[3]], np.float32), emb * has[:, None], has,
                 np.array(["s"] * len(rows), dtype=object), "bridge:neighbours")


@pytest.fixture(scope="module")
def pools(ds):
  return PairPools.build(ds, "A2B", make_clues(), maxlen=MAXLEN, clue_len=CLUE_LEN, text_dim=TEXT_DIM)


PAIR_SPEC = {"src": (np.int32, (MAXLEN,)), "tgt": (np.int32, (MAXLEN,)),
             "tgt_weight": (np.float32, (MAXLEN,)), "clue": (np.int32, (CLUE_LEN,)),
             "clue_sim": (np.float32, (CLUE_LEN,)), "summary": (np.float32, (TEXT_DIM,)),
             "has_summary": (np.float32, ()), "real": (np.int32, ()), "weight": (np.float32, ()),
             "user": (np.int32, ())}


def check_spec(batch, spec, batch_size):
  assert set(batch) == set(spec)
  for key, (dtype, shape) in spec.items():
    assert batch[key].dtype == dtype, key
    assert batch[key].shape == (batch_size,) + shape, key


def test_pad_by_hand():
  np.testing.assert_array_equal(pad_left([4, 5, 6, 7], 3), [6, 7, 8])  # most recent kept, +1
  np.testing.assert_array_equal(pad_left([4], 3), [0, 0, 5])
  np.testing.assert_array_equal(pad_left([], 2), [0, 0])
  np.testing.assert_array_equal(pad_right([4, 5, 6], 2), [5, 6])  # first (most likely) kept
  np.testing.assert_array_equal(pad_right([4], 3), [5, 0, 0])
  np.testing.assert_allclose(pad_right([0.5], 2, shift=0, dtype=np.float32), [0.5, 0.0])
  assert pad_left([1], 2).dtype == np.int32


def test_ragged_padding_matches_row_by_row():
  rng = np.random.default_rng(1)
  seqs = [rng.integers(0, 50, size=rng.integers(0, 9)).tolist() for _ in range(40)]
  r = Ragged.from_lists(seqs)
  padded = pipeline.pad_ragged_left(r, 5)
  np.testing.assert_array_equal(padded, np.stack([pad_left(s, 5) for s in seqs]))
  right = pipeline._ragged_pad(r.values, r.offsets, 5, left=False, shift=1)
  np.testing.assert_array_equal(right, np.stack([pad_right(s, 5) for s in seqs]))


def expected_domain_A():
  return {tuple(pad_left(s, MAXLEN + 1)) for s in A_ONLY + OVERLAP_A if len(s) >= 2}


def test_sequence_dataset_shapes_and_epochs(ds):
  data = sequence_dataset(ds, "A", MAXLEN, batch_size=2, seed=0, process_index=0, process_count=1)
  b = data[0]
  assert b["seq"].dtype == np.int32 and b["seq"].shape == (2, MAXLEN + 1)
  assert b["weight"].dtype == np.float32 and np.all(b["weight"] == 1)
  expected = expected_domain_A()
  assert len(expected) == 5  # the three sequences of length 1 are skipped
  rows = np.concatenate([data[i]["seq"] for i in range(15)])  # 30 positions = 6 epochs of 5
  epochs = [rows[5 * e:5 * e + 5] for e in range(6)]
  for e in epochs:  # each epoch visits every sequence exactly once
    assert sorted(map(tuple, e)) == sorted(expected)
  assert len({tuple(map(tuple, e)) for e in epochs}) > 1  # reshuffled per epoch
  # Determinism: same seed, same batches; another seed, other batches.
  again = sequence_dataset(ds, "A", MAXLEN, batch_size=2, seed=0, process_index=0, process_count=1)
  other = sequence_dataset(ds, "A", MAXLEN, batch_size=2, seed=1, process_index=0, process_count=1)
  np.testing.assert_array_equal(np.concatenate([again[i]["seq"] for i in range(15)]), rows)
  assert not np.array_equal(np.concatenate([other[i]["seq"] for i in range(15)]), rows)


def test_every_epoch_is_a_different_permutation():
  rows_of = pipeline._permutation_stream(seed=3, stream="real", n=50)
  perms = [rows_of(50 * e, 50) for e in range(4)]
  for p in perms:
    np.testing.assert_array_equal(np.sort(p), np.arange(50))
  assert len({tuple(p) for p in perms}) == 4
  # A window straddling two epochs reads the end of one and the start of the next.
  np.testing.assert_array_equal(rows_of(45, 10), np.concatenate([perms[0][45:], perms[1][:5]]))


def test_pair_pools_by_hand(pools):
  assert pools.counts == {"real": 4, "real_users": 4, "real_with_clue": 1, "real_left_out_empty": 0, "pseudo": 3,
                          "pseudo_left_out_no_clue": 2, "pseudo_left_out_empty_source": 0}
  assert pools.clue_source == "bridge:neighbours"
  real = pools.real.batch(np.arange(4))
  check_spec(real, PAIR_SPEC, 4)
  np.testing.assert_array_equal(real["src"][2], [5, 6, 1])  # A [3,4,5,0]: last 3, +1
  np.testing.assert_array_equal(real["tgt"][3], [1, 2, 3])  # B [6,0,1,2]: last 3, +1
  np.testing.assert_array_equal(real["tgt"][0], [0, 2, 3])
  np.testing.assert_array_equal(real["tgt_weight"][0], [0, 1, 1])
  np.testing.assert_array_equal(real["real"], 1)
  np.testing.assert_array_equal(real["user"], [0, 1, 2, 3])
  # o1 has a clue (pool "overlap"): items [5,4,3] -> first 2, +1, with their sims.
  np.testing.assert_array_equal(real["clue"], [[0, 0], [6, 5], [0, 0], [0, 0]])
  np.testing.assert_allclose(real["clue_sim"][1], [0.8, 0.3])
  np.testing.assert_array_equal(real["has_summary"], [0, 1, 0, 0])
  np.testing.assert_array_equal(real["summary"][1], np.arange(17, 21))
  assert not real["summary"][[0, 2, 3]].any()

  pseudo = pools.pseudo.batch(np.arange(3))
  check_spec(pseudo, PAIR_SPEC, 3)
  np.testing.assert_array_equal(pseudo["user"], [0, 1, 3])  # a_user2 / a_user4 left out
  np.testing.assert_array_equal(pseudo["real"], 0)
  np.testing.assert_array_equal(pseudo["src"][0], [1, 2, 3])
  # a_user0's clue [3,1,4] reversed so the most likely (3) is last: [4,1,3] -> +1.
  np.testing.assert_array_equal(pseudo["tgt"][0], [5, 2, 4])
  np.testing.assert_allclose(pseudo["tgt_weight"][0], [0.2, 0.5, 0.9])
  np.testing.assert_array_equal(pseudo["tgt"][1], [0, 0, 7])
  np.testing.assert_allclose(pseudo["tgt_weight"][1], [0, 0, 0.7])
  np.testing.assert_array_equal(pseudo["clue"], [[4, 2], [7, 0], [1, 3]])
  np.testing.assert_allclose(pseudo["clue_sim"], [[0.9, 0.5], [0.7, 0], [0.6, 0.4]])
  np.testing.assert_array_equal(pseudo["has_summary"], [1, 0, 1])
  np.testing.assert_array_equal(pseudo["summary"][2], np.arange(9, 13))
  assert not pseudo["summary"][1].any()


def test_pseudo_truncation_keeps_most_likely(ds):
  p = PairPools.build(ds, "A2B", make_clues(), maxlen=2, clue_len=1, text_dim=TEXT_DIM)
  b = p.pseudo.batch(np.array([0]))
  np.testing.assert_array_equal(b["tgt"][0], [2, 4])  # [3,1] of [3,1,4], reversed, +1
  np.testing.assert_allclose(b["tgt_weight"][0], [0.5, 0.9])
  np.testing.assert_array_equal(b["clue"][0], [4])


def test_no_clues(ds):
  p = PairPools.build(ds, "B2A", None, maxlen=MAXLEN, clue_len=CLUE_LEN, text_dim=TEXT_DIM)
  assert len(p.pseudo) == 0 and len(p.real) == 4 and p.clue_source is None
  b = train_dataset(p, 4, seed=0, use_pseudo=False, process_index=0, process_count=1)[0]
  check_spec(b, PAIR_SPEC, 4)
  assert not b["clue"].any() and not b["summary"].any() and not b["has_summary"].any()
  with pytest.raises(ValueError, match="pseudo pool is empty"):
    train_dataset(p, 4, seed=0, process_index=0, process_count=1)
  e = eval_batches(ds, "B2A", "valid", None, MAXLEN, CLUE_LEN, TEXT_DIM, batch_size=4)[0]
  assert not e["clue"].any() and not e["summary"].any()


# The interleaved order of the overlap users (RawDataset.overlap_before): o0 = a0 b1 a1 b2,
# o1 = b3 a2 b4, o2 = a3 a4 b5 a5 a0, o3 = b6 b0 b1 a1 b2.
OVERLAP_BEFORE = {"A": [[0, 1], [1], [0, 0, 1, 1], [3]], "B": [[1, 2], [0, 1], [2], [0, 0, 0, 1]]}


def _ordered_raw(before=OVERLAP_BEFORE):
  return RawDataset(
      items={"A": [(f"a{i}", f"food {i}") for i in range(6)],
             "B": [(f"b{i}", f"kitchen {i}") for i in range(7)]},
      pools={"A_only": (["a_user0"], {"A": [[0, 1]]}), "B_only": (["b_user0"], {"B": [[2, 3]]}),
             "overlap": ([f"o{i}" for i in range(4)], {"A": OVERLAP_A, "B": OVERLAP_B})},
      eval={d: {"valid": (["v0"], [[0]], [1]), "test": (["t0"], [[1]], [2])}
            for d in ("A2B", "B2A")},
      overlap_before=before)


def _next_pairs(ds, direction):
  """The `next` pools of `direction` and one batch of all their real pairs."""
  p = PairPools.build(ds, direction, None, maxlen=MAXLEN, clue_len=CLUE_LEN, text_dim=TEXT_DIM,
                      real_pairs="next")
  return p, p.real.batch(np.arange(len(p.real)))


def test_next_item_pairs_by_hand(tmp_path):
  write_prepared(_ordered_raw(), tmp_path / "ordered", source="test", arguments={}, num_negatives=2)
  ds = load_prepared(tmp_path / "ordered")
  assert ds.manifest["overlap_order"] is True
  p, b = _next_pairs(ds, "A2B")
  # One pair per B item with an A item before it (b3 of o1 and b6 b0 b1 of o3 have none).
  np.testing.assert_array_equal(b["user"], [0, 0, 1, 2, 3])
  np.testing.assert_array_equal(b["src"], [[0, 0, 1], [0, 1, 2], [0, 0, 3], [0, 4, 5], [0, 0, 2]])
  np.testing.assert_array_equal(b["tgt"][:, -1], [2, 3, 5, 6, 3])
  assert not b["tgt"][:, :-1].any()
  np.testing.assert_array_equal(b["tgt_weight"], (b["tgt"] > 0).astype(np.float32))
  assert p.counts["real"] == 5 and p.counts["real_users"] == 4
  _, b = _next_pairs(ds, "B2A")
  np.testing.assert_array_equal(b["user"], [0, 1, 2, 2, 3])
  # o3's a1 follows b6 b0 b1: the source is cut to the last MAXLEN = 3 of them.
  np.testing.assert_array_equal(b["src"], [[0, 0, 2], [0, 0, 4], [0, 0, 6], [0, 0, 6], [7, 1, 2]])
  np.testing.assert_array_equal(b["tgt"][:, -1], [2, 3, 6, 1, 2])
  # "whole" on the same data is still one pair per user.
  assert len(PairPools.build(ds, "B2A", None, maxlen=MAXLEN, clue_len=CLUE_LEN,
                             text_dim=TEXT_DIM).real) == 4


def test_next_item_pairs_need_the_order(ds, tmp_path):
  with pytest.raises(DataError, match="real_pairs='next' needs the order"):
    PairPools.build(ds, "A2B", None, maxlen=MAXLEN, clue_len=CLUE_LEN, text_dim=TEXT_DIM,
                    real_pairs="next")
  with pytest.raises(ValueError, match="real_pairs must be one of"):
    PairPools.build(ds, "A2B", None, maxlen=MAXLEN, clue_len=CLUE_LEN, text_dim=TEXT_DIM,
                    real_pairs="cut")
  bad = {"A": OVERLAP_BEFORE["A"], "B": [[2, 1], [0, 1], [2], [0, 0, 0, 1]]}  # o0's counts fall
  with pytest.raises(DataError, match=r"row 0's counts must rise"):
    write_prepared(_ordered_raw(bad), tmp_path / "bad", source="test", arguments={},
                   num_negatives=2)
  assert not (tmp_path / "bad").exists()
  # A users.npz whose counts point past a user's other-domain sequence, or fall, is refused when
  # loaded: the same check as on writing.
  write_prepared(_ordered_raw(), tmp_path / "edited", source="test", arguments={}, num_negatives=2)
  with np.load(tmp_path / "edited" / "users.npz") as z:
    good = {k: z[k] for k in z.files}
  for index, value in ((0, 9), (1, 0)):  # user 0's B counts are [1, 2]: 9 is past, [1, 0] falls
    arrays = {k: v.copy() for k, v in good.items()}
    arrays["overlap.B.before"][index] = value
    np.savez(tmp_path / "edited" / "users.npz", **arrays)
    with pytest.raises(DataError, match=r"users.npz.*overlap.B.before: row 0's counts must rise"):
      load_prepared(tmp_path / "edited")
  short = {"A": OVERLAP_BEFORE["A"], "B": [[1], [0, 1], [2], [0, 0, 0, 1]]}
  with pytest.raises(DataError, match="row 0 has 1 counts for 2 items"):
    write_prepared(_ordered_raw(short), tmp_path / "bad", source="test", arguments={},
                   num_negatives=2)


def test_clue_mismatches_are_errors(ds):
  with pytest.raises(ValueError, match="text_dim"):
    PairPools.build(ds, "A2B", make_clues(), maxlen=MAXLEN, clue_len=CLUE_LEN, text_dim=8)
  with pytest.raises(ValueError, match="A2B"):
    PairPools.build(ds, "B2A", make_clues(), maxlen=MAXLEN, clue_len=CLUE_LEN, text_dim=TEXT_DIM)


def steps(data, n):
  return [data[i] for i in range(n)]


def test_cyclic_order_and_epochs(pools):
  data = train_dataset(pools, 2, seed=0, process_index=0, process_count=1)
  batches = steps(data, 12)
  for b in batches:
    check_spec(b, PAIR_SPEC, 2)
  flags = [int(b["real"][0]) for b in batches]
  assert flags == [1, 0, 0] * 4
  assert all(np.all(b["real"] == b["real"][0]) for b in batches)
  # The real pool's batches (steps 0, 3) cover its 4 users once; the pseudo pool's (1, 2, 4) cover 3+3.
  real_users = np.concatenate([batches[i]["user"] for i in (0, 3)])
  assert sorted(real_users) == [0, 1, 2, 3]
  pseudo_users = np.concatenate([batches[i]["user"] for i in (1, 2, 4)])
  assert sorted(pseudo_users[:3]) == [0, 1, 3] and sorted(pseudo_users[3:]) == [0, 1, 3]
  # Determinism and seed dependence.
  again = steps(train_dataset(pools, 2, seed=0, process_index=0, process_count=1), 12)
  other = steps(train_dataset(pools, 2, seed=5, process_index=0, process_count=1), 12)
  for a, b in zip(batches, again):
    for k in a:
      np.testing.assert_array_equal(a[k], b[k])
  assert any(not np.array_equal(a["user"], b["user"]) for a, b in zip(batches, other))


def test_other_cycle(pools):
  data = train_dataset(pools, 2, seed=0, cycle=("real", "real", "pseudo"), process_index=0,
                       process_count=1)
  assert [int(data[i]["real"][0]) for i in range(6)] == [1, 1, 0, 1, 1, 0]
  with pytest.raises(ValueError, match="cycle"):
    train_dataset(pools, 2, seed=0, cycle=("real", "fake"), process_index=0, process_count=1)


def test_random_mix(pools):
  # Union of 4 real + 3 pseudo; a batch of 7 is exactly one epoch of the union.
  data = train_dataset(pools, 7, seed=0, cyclic=False, process_index=0, process_count=1)
  for i in range(5):
    b = data[i]
    check_spec(b, PAIR_SPEC, 7)
    assert int(b["real"].sum()) == 4
    assert sorted(b["user"][b["real"] == 1]) == [0, 1, 2, 3]
    assert sorted(b["user"][b["real"] == 0]) == [0, 1, 3]
    # Each row's data is its pool's row: real rows have tgt_weight 1, pseudo rows the sims.
    assert np.all(b["tgt_weight"][b["real"] == 1][b["tgt"][b["real"] == 1] > 0] == 1)
    assert np.all(b["tgt_weight"][b["real"] == 0] < 1)
  small = train_dataset(pools, 3, seed=0, cyclic=False, process_index=0, process_count=1)
  assert any(0 < small[i]["real"].sum() < 3 for i in range(10))  # both kinds within a batch
  assert not np.array_equal(data[0]["real"], data[1]["real"])  # the order is reshuffled


def test_use_pseudo_false_is_real_only(pools):
  data = train_dataset(pools, 2, seed=0, use_pseudo=False, process_index=0, process_count=1)
  batches = steps(data, 6)
  assert all(np.all(b["real"] == 1) for b in batches)
  assert sorted(np.concatenate([b["user"] for b in batches[:2]])) == [0, 1, 2, 3]


def test_resume_from_iterator_state_equals_uninterrupted_run(pools):
  data = train_dataset(pools, 2, seed=7, process_index=0, process_count=1)
  full = make_train_iterator(data)
  expected = [next(full) for _ in range(9)]
  it = make_train_iterator(data)
  for _ in range(4):
    next(it)
  state = json.loads(json.dumps(it.get_state()))  # small and JSON-able
  resumed = make_train_iterator(data)
  resumed.set_state(state)
  got = [next(resumed) for _ in range(5)]
  from_step = make_train_iterator(data, start_step=4)
  got2 = [next(from_step) for _ in range(5)]
  for e, g, g2 in zip(expected[4:], got, got2):
    for k in e:
      np.testing.assert_array_equal(e[k], g[k])
      np.testing.assert_array_equal(e[k], g2[k])


def test_process_slices_concatenate_to_global_batch(pools):
  glob = train_dataset(pools, 4, seed=0, cyclic=False, process_index=0, process_count=1)
  parts = [train_dataset(pools, 4, seed=0, cyclic=False, process_index=p, process_count=2)
           for p in range(2)]
  for i in range(5):
    g = glob[i]
    for k in g:
      np.testing.assert_array_equal(np.concatenate([parts[0][i][k], parts[1][i][k]]), g[k])
      np.testing.assert_array_equal(process_slice(g, 1, 2)[k], parts[1][i][k])
    assert process_slice(g, 0, 2)["src"].shape == (2, MAXLEN)
  with pytest.raises(ValueError, match="divide"):
    process_slice(glob[0], 0, 3)
  with pytest.raises(ValueError, match="divide"):
    train_dataset(pools, 5, seed=0, process_index=0, process_count=2)


def test_default_process_is_jax_process(pools):
  a = train_dataset(pools, 2, seed=0)[0]  # jax.process_index() / process_count() on one host
  b = train_dataset(pools, 2, seed=0, process_index=0, process_count=1)[0]
  np.testing.assert_array_equal(a["user"], b["user"])


def test_eval_covers_every_user_once(ds):
  data = eval_batches(ds, "A2B", "valid", make_clues(), MAXLEN, CLUE_LEN, TEXT_DIM, batch_size=2)
  assert len(data) == 2
  batches = list(data)
  spec = {"src": (np.int32, (MAXLEN,)), "clue": (np.int32, (CLUE_LEN,)),
          "clue_sim": (np.float32, (CLUE_LEN,)), "summary": (np.float32, (TEXT_DIM,)),
          "has_summary": (np.float32, ()), "label": (np.int32, ()), "negatives": (np.int32, (4,)),
          "weight": (np.float32, ()), "user": (np.int32, ()),
          "noise_id": (np.uint32, ())}  # each user's own sampling-noise key (lgcd_jax.user_keys)
  for b in batches:
    check_spec(b, spec, 2)
  weight = np.concatenate([b["weight"] for b in batches])
  user = np.concatenate([b["user"] for b in batches])
  np.testing.assert_array_equal(weight, [1, 1, 1, 0])
  np.testing.assert_array_equal(user, [0, 1, 2, -1])
  label = np.concatenate([b["label"] for b in batches])
  np.testing.assert_array_equal(label[:3], [1, 2, 3])
  negatives = np.concatenate([b["negatives"] for b in batches])
  assert not np.any(negatives[:3] == label[:3, None])
  np.testing.assert_array_equal(batches[0]["src"][1], [4, 5, 6])  # [2,3,4,5]: last 3, +1
  # v0's clue was written for pool "valid"; the others have none.
  np.testing.assert_array_equal(batches[0]["clue"], [[3, 0], [0, 0]])
  np.testing.assert_allclose(batches[0]["clue_sim"][0], [0.95, 0])
  np.testing.assert_array_equal(batches[0]["has_summary"], [1, 0])
  np.testing.assert_array_equal(batches[0]["summary"][0], np.arange(21, 25))
  # The padding row is a real-looking row (never an all-padding sequence), only weighted out.
  assert batches[1]["src"][1].any()
  # A split that fills its batches exactly gets no padding rows.
  full = list(eval_batches(ds, "A2B", "test", None, MAXLEN, CLUE_LEN, TEXT_DIM, batch_size=2))
  assert len(full) == 1 and np.all(full[0]["weight"] == 1)


def test_batch_assembly_is_fast():
  rng = np.random.default_rng(0)
  n, maxlen, clue_len, text_dim = 20000, 50, 20, 384

  def pool(name):
    return pipeline.Pool(
        name, rng.integers(0, 100, (n, maxlen), dtype=np.int32),
        rng.integers(0, 100, (n, maxlen), dtype=np.int32), rng.random((n, maxlen), np.float32),
        rng.integers(0, 100, (n, clue_len), dtype=np.int32), rng.random((n, clue_len), np.float32),
        rng.integers(0, n + 1, n), rng.random((n + 1, text_dim), np.float32),
        np.arange(n, dtype=np.int32))

  pools = PairPools("A2B", pool("real"), pool("pseudo"), {}, None)
  for cyclic in (True, False):
    data = train_dataset(pools, 256, seed=0, cyclic=cyclic, process_index=0, process_count=1)
    data[0]
    times = []
    for i in range(1, 40):
      t = time.perf_counter()
      data[i]
      times.append(time.perf_counter() - t)
    # Well under 1 ms on an idle machine; the bound leaves room for a busy shared one.
    assert np.median(times) < 5e-3, (cyclic, np.median(times))
