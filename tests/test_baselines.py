import numpy as np
import pytest

from configs import tiny
from lgcd_jax.baselines import cooccurrence, mf, popularity
from lgcd_jax.data import pipeline, prepared, synthetic
from lgcd_jax.evaluation import evaluator


def _tiny_world(tmp_path):
  """A: 3 items, B: 4 items. Overlap users tie A0 to B0/B1 and A1 to B2."""
  raw = prepared.RawDataset(
      items={"A": [(f"a{i}", f"a {i}") for i in range(3)], "B": [(f"b{i}", f"b {i}") for i in range(4)]},
      pools={
          "A_only": (["u1"], {"A": [[0, 2]]}),
          "B_only": (["u2", "u3"], {"B": [[3, 3, 1], [3]]}),
          "overlap": (["o1", "o2", "o3"], {"A": [[0], [0, 1], [1]], "B": [[0, 1], [0], [2]]}),
      },
      eval={"A2B": {"valid": (["e1"], [[0]], [1]), "test": (["e2", "e3"], [[1], [0, 1]], [2, 0])},
            "B2A": {"valid": (["e4"], [[0]], [0]), "test": (["e5"], [[2]], [1])}})
  prepared.write_prepared(raw, tmp_path / "d", source="test", arguments={})
  return prepared.load_prepared(tmp_path / "d")


def _batch(src_rows, maxlen=4):
  src = np.stack([pipeline.pad_left(r, maxlen) for r in src_rows])
  return {"src": src}


def test_popularity_by_hand(tmp_path):
  ds = _tiny_world(tmp_path)
  scores = np.asarray(popularity.Popularity(ds, "A2B").score(_batch([[0], [1]])))
  # B counts over B_only + overlap: b0: 2, b1: 2, b2: 1, b3: 3
  np.testing.assert_array_equal(scores, [[2, 2, 1, 3]] * 2)


def test_cooccurrence_by_hand(tmp_path):
  ds = _tiny_world(tmp_path)
  model = cooccurrence.Cooccurrence(ds, "A2B")
  scores = np.asarray(model.score(_batch([[0], [1], [0, 1], [0, 0], [2]])))
  # C[a0] = b0: 2 (o1, o2), b1: 1 (o1); C[a1] = b0: 1 (o2), b2: 1 (o3); a2 never co-occurs.
  np.testing.assert_array_equal(scores, [[2, 1, 0, 0], [1, 0, 1, 0], [3, 1, 1, 0], [2, 1, 0, 0],
                                         [0, 0, 0, 0]])
  scores = np.asarray(cooccurrence.Cooccurrence(ds, "B2A").score(_batch([[0], [2]])))
  np.testing.assert_array_equal(scores, [[2, 1, 0], [0, 1, 0]])


def test_mf_recovers_a_low_rank_world(tmp_path):
  ds = _tiny_world(tmp_path)
  model = mf.JointMF(ds, "A2B", rank=3, item_power=0.0)
  scores = np.asarray(model.score(_batch([[0], [1]])))
  assert scores[0].argmax() in (0, 1) and scores[1, 2] > scores[1, 3]


@pytest.fixture(scope="module")
def synthetic_ds(tmp_path_factory):
  out = tmp_path_factory.mktemp("syn") / "d"
  prepared.write_prepared(synthetic.generate(seed=0, scale=1.0), out, source="synthetic",
                          arguments={"seed": 0, "scale": 1.0})
  return prepared.load_prepared(out)


@pytest.mark.parametrize("direction", ["A2B", "B2A"])
def test_cooccurrence_beats_popularity_on_the_demo_world(synthetic_ds, direction):
  """The synthetic world carries real cross-domain signal, measured with the project's own code."""
  config = tiny.get_config()
  results = {}
  for cls in (popularity.Popularity, cooccurrence.Cooccurrence, mf.JointMF):
    model = cls(synthetic_ds, direction, config)
    batches = pipeline.eval_batches(synthetic_ds, direction, "valid", None, maxlen=30, clue_len=4,
                                    text_dim=8, batch_size=128)
    results[cls.name] = evaluator.evaluate(model.score, batches)
  assert results["cooccurrence"]["n_users"] == len(synthetic_ds.eval[direction]["valid"])
  pop, cooc = results["popularity"]["sampled"]["HR@5"], results["cooccurrence"]["sampled"]["HR@5"]
  assert cooc > 1.5 * pop and cooc > 10 * 5 / 1000
  assert results["mf"]["sampled"]["HR@5"] > pop


def test_llm_only_clue_scores_by_hand():
  from lgcd_jax.baselines.llm_only import clue_scores
  clue = np.array([[3, 1, 0], [2, 2, 0]])  # items + 1, 0 = pad
  sims = np.array([[0.5, 0.9, 0.0], [0.4, 0.7, 0.0]], np.float32)
  scores = np.asarray(clue_scores(clue, sims, 4))
  assert scores.shape == (2, 4)
  # user 0: item 2 (sim .5, rank 0) and item 0 (sim .9, rank 1); others 0.
  assert scores[0, 0] > scores[0, 2] > 0 and scores[0, 1] == scores[0, 3] == 0
  # a repeated item keeps its best entry
  assert scores[1, 1] == pytest.approx(0.7 + 1e-3 * 2 / 3, abs=1e-6)


def test_llm_only_with_bridge_equals_neighbour_votes(tmp_path):
  from lgcd_jax.baselines.llm_only import LLMOnly
  from lgcd_jax.clues.bridge import NeighbourBridge
  ds = _tiny_world(tmp_path)
  config = tiny.get_config()
  batch = _batch([[0], [1], [0, 1]])
  got = np.asarray(LLMOnly(ds, "A2B", config).score(batch))
  want = np.asarray(NeighbourBridge(ds, "A2B", k=config.clues.bridge_k).scores(
      batch["src"], -np.ones(3, np.int32)))
  np.testing.assert_allclose(got, want)
  assert got[0, 0] > 0  # a0's neighbours (o1, o2) vote for b0


def test_mf_scores_equal_the_dense_svd_fold_in(synthetic_ds):
  """Exact truncated SVD of the add-one normalised joint matrix, cold user folded in, by hand."""
  model = mf.JointMF(synthetic_ds, "A2B", rank=8, item_power=0.25)
  matrix, offsets = mf.joint_matrix(synthetic_ds)
  dense = matrix.toarray()
  ud, idg = dense.sum(1), dense.sum(0)
  r = dense / np.sqrt(ud + 1.0)[:, None] / np.sqrt(idg + 1.0)[None, :]
  v = np.linalg.svd(r, full_matrices=False)[2][:8].T
  n_a = synthetic_ds.num_items("A")
  src_items = [[0, 3, 5], [7]]
  x = np.zeros((2, n_a))
  for i, items in enumerate(src_items):
    x[i, items] = 1.0
  u = (x / np.sqrt(idg[:n_a] + 1.0)) @ v[:n_a]
  want = (u @ v[n_a:].T) * (idg[n_a:] + 1.0) ** 0.25
  got = np.asarray(model.score(_batch(src_items)), np.float64)
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-5)


def test_recency_mf_weighs_recent_items_by_hand(synthetic_ds):
  """mf_recency = the MF fold-in with the i-th most recent source item weighted gamma ** i; at
  gamma = 1 it is the plain MF."""
  src_items = [[0, 3, 5], [7]]
  plain = mf.JointMF(synthetic_ds, "A2B", rank=8, item_power=0.25)
  np.testing.assert_allclose(
      np.asarray(mf.RecencyMF(synthetic_ds, "A2B", recency=1.0, rank=8, item_power=0.25)
                 .score(_batch(src_items))),
      np.asarray(plain.score(_batch(src_items))), rtol=1e-5, atol=1e-6)
  model = mf.RecencyMF(synthetic_ds, "A2B", recency=0.5, rank=8, item_power=0.25)
  v_src, v_tgt, scale = (np.asarray(a, np.float64) for a in (plain.v_src, plain.v_tgt, plain.tgt_scale))
  u0 = 0.25 * v_src[0] + 0.5 * v_src[3] + 1.0 * v_src[5]  # 5 is the most recent item
  want = np.stack([u0, v_src[7]]) @ v_tgt.T * scale
  got = np.asarray(model.score(_batch(src_items)), np.float64)
  np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
  with pytest.raises(ValueError, match="mf_recency"):
    mf.RecencyMF(synthetic_ds, "A2B", recency=0.0, rank=8)
