"""The bridge (offline clues): neighbour votes by hand, no self-neighbours, k, text mode, the ClueSet."""

import time

import numpy as np
import pytest

from lgcd_jax.clues.bridge import NeighbourBridge, make_bridge_clues, text_scores
from lgcd_jax.data.clue_records import load_clues, save_clues, validate_clues
from lgcd_jax.data.pipeline import PairPools, eval_batches, pad_left
from lgcd_jax.data.prepared import RawDataset, load_prepared, write_prepared
from lgcd_jax.text.hashing import HashingEncoder

TITLES_A = ["green tea leaves", "black coffee beans", "dark chocolate bar", "olive oil", "pasta sauce",
            "rice noodles", "sea salt flakes"]
TITLES_B = ["tea kettle", "coffee grinder", "chocolate mold", "oil sprayer", "pasta pot", "rice cooker",
            "salt mill"]
OVERLAP_A = [[0, 1], [0, 1, 2], [3], [4, 5], [0], [1, 0]]  # o5 has o0's source set, another target
OVERLAP_B = [[0], [1, 2], [3], [4], [5], [6]]
A_ONLY = [[0, 1], [5, 5, 4], [6], [0, 1, 2]]  # a2: item 6 is in no overlap history -> empty clue
B_ONLY = [[0], [6, 5], [3]]
MAXLEN = 5


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
  raw = RawDataset(
      items={"A": [(f"a{i}", t) for i, t in enumerate(TITLES_A)],
             "B": [(f"b{i}", t) for i, t in enumerate(TITLES_B)]},
      pools={"A_only": ([f"a_user{i}" for i in range(len(A_ONLY))], {"A": A_ONLY}),
             "B_only": ([f"b_user{i}" for i in range(len(B_ONLY))], {"B": B_ONLY}),
             "overlap": ([f"o{i}" for i in range(len(OVERLAP_A))], {"A": OVERLAP_A, "B": OVERLAP_B})},
      eval={"A2B": {"valid": (["v0"], [[2, 3]], [2]), "test": (["t0", "t1"], [[0, 1, 2], [4]], [1, 4])},
            "B2A": {"valid": (["w0"], [[0]], [0]), "test": (["x0"], [[1, 2]], [2])}},
  )
  out = tmp_path_factory.mktemp("bridge") / "tiny"
  write_prepared(raw, out, source="test", arguments={}, seed=0, num_negatives=3)
  return load_prepared(out)


def padded(seqs, maxlen=MAXLEN):
  return np.stack([pad_left(s, maxlen) for s in seqs])


def reference_scores(src_sets, tgt_sets, queries, exclude, k, num_tgt, text_weight=0.0, emb=None,
                     src_seqs=None):
  """Brute force over Python sets: the definition in the bridge's docstring."""

  def mean_dir(seq):
    if not len(seq):
      return np.zeros(emb.shape[1])
    m = emb[list(seq)].mean(axis=0)
    return m / max(np.linalg.norm(m), 1e-12)

  out = np.zeros((len(queries), num_tgt))
  for b, q in enumerate(queries):
    sims = []
    for v, s in enumerate(src_sets):
      if v == exclude[b]:
        continue
      sim = len(set(q) & s) / np.sqrt(max(len(set(q)), 1) * max(len(s), 1))
      if text_weight:
        sim += text_weight * float(mean_dir(q) @ mean_dir(src_seqs[v]))
      sims.append((-sim, v))
    for neg_sim, v in sorted(sims)[:k]:  # ties: the lower row first, as lax.top_k
      if -neg_sim > 0:
        for t in tgt_sets[v]:
          out[b, t] += -neg_sim
  return out


def test_votes_by_hand(ds):
  bridge = NeighbourBridge(ds, "A2B", k=50)
  s = np.asarray(bridge.scores(padded([[0, 1]]), np.array([-1])))[0]
  # a_user0 = {0, 1}: o0 and o5 cos 1, o1 2/sqrt(6), o4 1/sqrt(2); o2, o3 share nothing.
  expected = np.array([1.0, 2 / np.sqrt(6), 2 / np.sqrt(6), 0.0, 0.0, 1 / np.sqrt(2), 1.0])
  np.testing.assert_allclose(s, expected, rtol=1e-6)


@pytest.mark.parametrize("k", [1, 2, 3, 50])
def test_votes_match_brute_force(ds, k):
  bridge = NeighbourBridge(ds, "A2B", k=k)
  queries = A_ONLY + OVERLAP_A + [[2, 3], [], [6, 6, 3]]
  exclude = np.array([-1] * len(A_ONLY) + list(range(len(OVERLAP_A))) + [-1, 2, -1])
  got = np.asarray(bridge.scores(padded(queries), exclude))
  want = reference_scores([set(s) for s in OVERLAP_A], OVERLAP_B, queries, exclude, k, len(TITLES_B))
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)


def test_k_limits_neighbours(ds):
  # {0, 1, 2}: o1 cos 1 > o0 = o5 = 2/sqrt(6) > o4 = 1/sqrt(3).
  q, none = padded([[0, 1, 2]]), np.array([-1])
  one = np.asarray(NeighbourBridge(ds, "A2B", k=1).scores(q, none))[0]
  np.testing.assert_allclose(one, [0, 1, 1, 0, 0, 0, 0], atol=1e-6)  # o1's targets only
  two = np.asarray(NeighbourBridge(ds, "A2B", k=2).scores(q, none))[0]
  assert np.flatnonzero(two).tolist() == [0, 1, 2]  # + o0 (the lower row of the tie with o5)
  three = np.asarray(NeighbourBridge(ds, "A2B", k=3).scores(q, none))[0]
  assert np.flatnonzero(three).tolist() == [0, 1, 2, 6]
  assert NeighbourBridge(ds, "A2B", k=1000).k == len(OVERLAP_A)


def test_overlap_user_is_never_its_own_neighbour(ds):
  # With k=1, o0 ({0, 1}) would be its own best neighbour and get its real target item 0 as its clue.
  with_self = np.asarray(NeighbourBridge(ds, "A2B", k=1).scores(padded([[0, 1]]), np.array([-1])))[0]
  assert int(np.argmax(with_self)) == 0
  clues = make_bridge_clues(ds, "A2B", k=1, clue_len=3, pools=("overlap",), text_dim=4)
  items = {u: clues.items[i].tolist() for i, u in enumerate(clues.user_ids)}
  assert items["o0"] == [6]  # o5: same source set, another row, so a legitimate neighbour
  assert items["o5"] == [0]  # and the mirror image
  # No overlap user's clue holds its own target items here (each target item belongs to one user).
  for row, u in enumerate(clues.user_ids):
    assert not set(items[u]) & set(OVERLAP_B[row])
  # Larger k: still never its own items, and the votes of the others are intact.
  clues = make_bridge_clues(ds, "A2B", k=50, clue_len=7, pools=("overlap",), text_dim=4)
  assert clues.items[0].tolist() == [6, 1, 2, 5]
  np.testing.assert_allclose(clues.sims[clues.items.offsets[0]:clues.items.offsets[1]],
                             [1, 2 / np.sqrt(6), 2 / np.sqrt(6), 1 / np.sqrt(2)], rtol=1e-6)


def test_clue_set_contents_and_round_trip(ds, tmp_path):
  stats = {}
  clues = make_bridge_clues(ds, "A2B", k=50, clue_len=4, maxlen=MAXLEN, text_dim=8, stats=stats)
  validate_clues(clues, len(TITLES_B))
  assert clues.source == "bridge:neighbours" and clues.direction == "A2B"
  assert clues.pools.tolist() == ["A_only"] * 4 + ["overlap"] * 6 + ["valid"] + ["test"] * 2
  assert clues.user_ids.tolist()[:4] == [f"a_user{i}" for i in range(4)]
  assert clues.summary_emb.shape == (len(clues), 8) and not clues.summary_emb.any()
  assert not clues.has_summary.any() and all(s == "" for s in clues.summaries)
  # a_user0 = {0, 1}: votes 1 (items 0, 6), 2/sqrt(6) (items 1, 2), 1/sqrt(2) (5); clue_len 4.
  row = clues.lookup("A_only", "a_user0")
  assert clues.items[row].tolist() == [0, 6, 1, 2]
  lo = clues.items.offsets[row]
  np.testing.assert_allclose(clues.sims[lo:lo + 4], [1, 1, 2 / np.sqrt(6), 2 / np.sqrt(6)], rtol=1e-6)
  # Every clue: scores strictly positive, sims in (0, 1], the first is 1, non-increasing.
  for i in range(len(clues)):
    s = clues.sims[clues.items.offsets[i]:clues.items.offsets[i + 1]]
    if len(s):
      assert s[0] == pytest.approx(1.0) and np.all(s > 0) and np.all(np.diff(s) <= 1e-7)
  assert len(clues.items[clues.lookup("A_only", "a_user2")]) == 0
  assert stats["A_only"] == {"users": 4, "empty_clues": 1, "empty_source": 0}
  # o2 ({3}) and o3 ({4, 5}) share source items with nobody but themselves, who may not vote.
  assert stats["overlap"] == {"users": 6, "empty_clues": 2, "empty_source": 0}
  assert stats["test"]["users"] == 2 and stats["seconds"] >= 0

  save_clues(clues, tmp_path / "clues", shard_size=5)
  back = load_clues(tmp_path / "clues", "A2B", num_target_items=len(TITLES_B))
  assert back.source == clues.source and back.text_dim == 8
  for field in ("user_ids", "pools", "sims", "summary_emb", "has_summary"):
    np.testing.assert_array_equal(getattr(back, field), getattr(clues, field))
  np.testing.assert_array_equal(back.items.values, clues.items.values)
  np.testing.assert_array_equal(back.items.offsets, clues.items.offsets)
  assert back.summaries.tolist() == clues.summaries.tolist()

  # The input pipeline accepts them: the pseudo pool = single-domain users with a non-empty clue.
  pools = PairPools.build(ds, "A2B", back, maxlen=MAXLEN, clue_len=4, text_dim=8)
  assert pools.counts["pseudo"] == 3 and pools.counts["pseudo_left_out_no_clue"] == 1
  assert pools.clue_source == "bridge:neighbours"


def test_b2a_pools_and_batches(ds):
  clues = make_bridge_clues(ds, "B2A", k=2, clue_len=2, batch_size=2, text_dim=4,
                            pools=("single", "valid", "test"))
  assert clues.pools.tolist() == ["B_only"] * 3 + ["valid", "test"]
  # b_user0 = {B0}: only o0 has B0 -> its A items 0 and 1, each with vote 1.
  assert sorted(clues.items[0].tolist()) == [0, 1]
  # Batches of 2 (the last one padded) give the same clues as one batch.
  whole = make_bridge_clues(ds, "B2A", k=2, clue_len=2, batch_size=64, text_dim=4,
                            pools=("single", "valid", "test"))
  np.testing.assert_array_equal(whole.items.values, clues.items.values)
  np.testing.assert_allclose(whole.sims, clues.sims)
  # clue_len above the catalogue size: every item may be in a clue.
  full = make_bridge_clues(ds, "B2A", k=50, clue_len=20, text_dim=4, pools=("single",))
  # b_user1 = {5, 6}: o4 (B {5}, A {0}) and o5 (B {6}, A {0, 1}), both cos 1/sqrt(2).
  assert full.items[1].tolist() == [0, 1]
  np.testing.assert_allclose(full.sims[full.items.offsets[1]:full.items.offsets[2]], [1.0, 0.5], rtol=1e-6)
  with pytest.raises(ValueError, match="unknown pool"):
    make_bridge_clues(ds, "B2A", pools=("A_only",), text_dim=4)


def test_text_weight_adds_title_similarity(ds):
  emb = HashingEncoder(dim=64).encode(TITLES_A)
  bridge = NeighbourBridge(ds, "A2B", k=3, text_weight=0.5, src_title_emb=emb)
  queries = [[2, 3], [6], [5, 4], [0, 1]]
  exclude = np.array([-1, -1, 3, -1])
  got = np.asarray(bridge.scores(padded(queries), exclude))
  want = reference_scores([set(s) for s in OVERLAP_A], OVERLAP_B, queries, exclude, 3, len(TITLES_B),
                          text_weight=0.5, emb=emb, src_seqs=OVERLAP_A)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
  with pytest.raises(ValueError, match="src_title_emb"):
    NeighbourBridge(ds, "A2B", text_weight=0.5)


def test_text_mode_ranks_by_title_similarity(ds):
  enc = HashingEncoder(dim=384)  # no bucket collisions between these few titles' features
  e_a, e_b = enc.encode(TITLES_A), enc.encode(TITLES_B)
  queries = [[0], [1], [5], [3, 4], []]
  got = np.asarray(text_scores(padded(queries), e_a, e_b))
  for b, q in enumerate(queries[:-1]):
    m = e_a[q].mean(axis=0)
    np.testing.assert_allclose(got[b], e_b @ (m / np.linalg.norm(m)), rtol=1e-5, atol=1e-6)
  np.testing.assert_array_equal(got[-1], 0.0)  # no source items: no preference
  # The target item sharing a word with the source title wins.
  assert np.argmax(got[0]) == 0 and np.argmax(got[1]) == 1 and np.argmax(got[2]) == 5
  assert set(np.argsort(-got[3])[:2].tolist()) == {3, 4}

  clues = make_bridge_clues(ds, "A2B", mode="text", clue_len=3, src_title_emb=e_a, tgt_title_emb=e_b,
                            text_dim=4, pools=("single", "test"))
  assert clues.source == "bridge:text"
  row = clues.lookup("A_only", "a_user1")  # rice noodles, rice noodles, pasta sauce
  scores = np.asarray(text_scores(padded([A_ONLY[1]]), e_a, e_b))[0]
  top = [i for i in np.argsort(-scores, kind="stable")[:3] if scores[i] > 0]
  assert clues.items[row].tolist() == top and top[:2] == [5, 4]
  with pytest.raises(ValueError, match="needs src_title_emb"):
    make_bridge_clues(ds, "A2B", mode="text", text_dim=4)


def test_food_kitchen_neighbour_ranking(food_kitchen_prepared):
  """The k=50 user-neighbour reference of DESIGN.md §1, through the project's evaluator."""
  from lgcd_jax.evaluation.evaluator import evaluate
  ds = food_kitchen_prepared
  reference = {"A2B": 0.124, "B2A": 0.110}
  for direction, ref in reference.items():
    start = time.perf_counter()
    bridge = NeighbourBridge(ds, direction, k=50)
    batches = eval_batches(ds, direction, "test", None, maxlen=50, clue_len=20, text_dim=8,
                           batch_size=256)
    res = evaluate(lambda b: bridge.scores(b["src"], -np.ones(len(b["src"]), np.int64)), batches)
    hr5 = res["sampled"]["HR@5"]
    print(f"\nbridge neighbours k=50 {direction} test: sampled HR@5 {hr5:.4f} (reference {ref}), "
          f"full HR@10 {res['full']['HR@10']:.4f}, {res['n_users']} users, "
          f"{time.perf_counter() - start:.1f}s")
    assert abs(hr5 - ref) <= 0.04
  # The eval users' clues are the top of the same scores.
  clues = make_bridge_clues(ds, "B2A", k=50, clue_len=20, pools=("test",), text_dim=8)
  users = ds.eval["B2A"]["test"]
  src = np.stack([pad_left(users.source[i], 50) for i in range(4)])
  s = np.asarray(NeighbourBridge(ds, "B2A", k=50).scores(src, -np.ones(4, np.int64)))
  for i in range(4):
    items = clues.items[i]
    np.testing.assert_allclose(s[i, items], np.sort(s[i])[::-1][:len(items)], rtol=1e-5)


def test_mf_mode_clues_are_the_joint_mf_top_items(ds):
  """Mode "mf": each clue is the joint MF baseline's top target items (score > 0) for the user's source
  items, most likely first, with sims relative to the best; single-domain users get clues too."""
  from lgcd_jax.baselines.mf import JointMF
  clues = make_bridge_clues(ds, "A2B", mode="mf", clue_len=3, maxlen=MAXLEN, text_dim=8,
                            mf_rank=2, mf_item_power=0.25)
  assert clues.source == "bridge:mf"
  joint = JointMF(ds, "A2B", rank=2, item_power=0.25)
  for pool, uid, seq in [("A_only", "a_user1", A_ONLY[1]), ("overlap", "o3", OVERLAP_A[3]),
                         ("test", "t0", [0, 1, 2])]:
    scores = np.asarray(joint.score({"src": padded([seq])}))[0]
    order = np.argsort(-scores, kind="stable")[:3]
    order = order[scores[order] > 0]
    row = clues.lookup(pool, uid)
    assert clues.items[row].tolist() == order.tolist()
    lo = clues.items.offsets[row]
    np.testing.assert_allclose(clues.sims[lo:lo + len(order)], scores[order] / scores[order[0]],
                               rtol=1e-5)
