"""The synthetic world: deterministic, the right size, valid, and carrying learnable signal."""

import re

import numpy as np
import pytest

from lgcd_jax.data import prepared
from lgcd_jax.data import synthetic


@pytest.fixture(scope="module")
def world():
  return synthetic.generate_world(seed=0, scale=1.0)


@pytest.fixture(scope="module")
def small():
  return synthetic.generate(seed=0, scale=0.2)


def _as_plain(raw: prepared.RawDataset):
  return (raw.items, raw.pools, raw.eval)


def _all_user_ids(raw):
  ids = [u for user_ids, _ in raw.pools.values() for u in user_ids]
  ids += [u for d in raw.eval.values() for user_ids, _, _ in d.values() for u in user_ids]
  return ids


def test_same_seed_same_world_and_different_seed_differs(small):
  again = synthetic.generate(seed=0, scale=0.2)
  assert _as_plain(again) == _as_plain(small)
  other = synthetic.generate(seed=1, scale=0.2)
  assert [t for _, t in other.items["A"]] != [t for _, t in small.items["A"]]
  assert other.pools["overlap"][1]["B"] != small.pools["overlap"][1]["B"]
  assert other.eval["A2B"]["valid"][2] != small.eval["A2B"]["valid"][2]


@pytest.mark.parametrize("scale", [1.0, 0.2])
def test_sizes(scale, world, small):
  raw = world.raw if scale == 1.0 else small
  for d in prepared.DOMAINS:
    n = len(raw.items[d])
    assert 1000 < n < 1400 if scale == 1.0 else 50 <= n < 300
  users = {pool: len(raw.pools[pool][0]) for pool in prepared.POOLS}
  assert 1200 * scale <= users["A_only"] <= 1700 * scale
  assert 1200 * scale <= users["B_only"] <= 1700 * scale
  assert 800 * scale <= users["overlap"] <= 1400 * scale
  for direction in prepared.DIRECTIONS:
    for split in prepared.SPLITS:
      n = len(raw.eval[direction][split][2])
      assert 180 * scale <= n <= 220 * scale and n >= 20


def test_sizes_scale_linearly():
  a = synthetic.generate(seed=3, scale=0.2)
  b = synthetic.generate(seed=3, scale=0.4)
  assert len(b.items["A"]) == 2 * len(a.items["A"])
  assert len(b.pools["overlap"][0]) == 2 * len(a.pools["overlap"][0])


def test_ids_titles_and_indices_are_valid(world):
  raw = world.raw
  for d in prepared.DOMAINS:
    ids = [i for i, _ in raw.items[d]]
    assert ids[:2] == [f"{d}00001", f"{d}00002"] and len(set(ids)) == len(ids)
    titles = [t for _, t in raw.items[d]]
    assert len(set(titles)) == len(titles)
  user_ids = _all_user_ids(raw)
  assert len(set(user_ids)) == len(user_ids)
  assert all(re.fullmatch(r"u\d{6}", u) for u in user_ids)

  n = {d: len(raw.items[d]) for d in prepared.DOMAINS}
  for pool, domains in prepared.POOLS.items():
    user_ids, seqs = raw.pools[pool]
    min_len = 2 if pool == "overlap" else 3
    for d in domains:
      assert len(seqs[d]) == len(user_ids)
      for s in seqs[d]:
        assert min_len <= len(s) <= synthetic.MAX_LEN
        assert all(0 <= i < n[d] for i in s)
        assert len(set(s)) == len(s)  # no repeated item within a user's domain sequence
  for direction in prepared.DIRECTIONS:
    src, tgt = prepared.direction_domains(direction)
    for split in prepared.SPLITS:
      user_ids, sources, labels = raw.eval[direction][split]
      assert len(user_ids) == len(sources) == len(labels)
      assert all(len(s) >= 2 and all(0 <= i < n[src] for i in s) for s in sources)
      assert all(0 <= label < n[tgt] for label in labels)


def test_eval_users_held_out_of_training(world):
  raw = world.raw
  train = {u for user_ids, _ in raw.pools.values() for u in user_ids}
  seen = set()
  for direction in prepared.DIRECTIONS:
    for split in prepared.SPLITS:
      ids = set(raw.eval[direction][split][0])
      assert not ids & train
      assert not ids & seen
      seen |= ids


def _tokens(title: str) -> set[str]:
  return set(re.findall(r"[a-z0-9][a-z0-9'\-.]*", title.lower()))


def _mean_jaccard(world, d1, d2, rng, n=8000):
  toks = {d: [_tokens(t) for _, t in world.raw.items[d]] for d in (d1, d2)}
  i = rng.integers(len(toks[d1]), size=n)
  j = rng.integers(len(toks[d2]), size=n)
  keep = ~((i == j) & (d1 == d2))
  i, j = i[keep], j[keep]
  jac = np.array([len(toks[d1][a] & toks[d2][b]) / len(toks[d1][a] | toks[d2][b]) for a, b in zip(i, j)])
  same = world.item_topics[d1][i] == world.item_topics[d2][j]
  assert same.sum() > 100
  return jac[same].mean(), jac[~same].mean()


def test_titles_carry_the_topic(world):
  rng = np.random.default_rng(0)
  within = {}
  for d in prepared.DOMAINS:
    same, diff = _mean_jaccard(world, d, d, rng)
    assert same > 1.8 * diff, (d, same, diff)
    within[d] = same
  # Across domains the text is a weak clue: some topic signal, far less word overlap than within.
  same, diff = _mean_jaccard(world, "A", "B", rng)
  assert same > diff
  assert same < 0.5 * min(within.values())


def _hit_rate_at_10(scores: np.ndarray, labels: np.ndarray) -> float:
  """Pessimistic ties: every other item with an equal score counts as ranked above the label."""
  label_scores = scores[np.arange(len(labels)), labels][:, None]
  rank = (scores > label_scores).sum(1) + (scores == label_scores).sum(1) - 1
  return float((rank < 10).mean())


def cross_domain_hit_rates(raw, direction="A2B", split="valid") -> tuple[float, float]:
  """HR@10 over all target items for a co-occurrence scorer and a popularity scorer."""
  src, tgt = prepared.direction_domains(direction)
  n_src, n_tgt = len(raw.items[src]), len(raw.items[tgt])
  overlap = raw.pools["overlap"][1]
  x_src = np.zeros((len(overlap[src]), n_src))
  x_tgt = np.zeros((len(overlap[tgt]), n_tgt))
  for u, (a, b) in enumerate(zip(overlap[src], overlap[tgt])):
    x_src[u, a] = 1.0
    x_tgt[u, b] = 1.0
  cooc = x_src.T @ x_tgt  # [a, b]: training overlap users who have both a and b
  popularity = np.zeros(n_tgt)
  for _, seqs in raw.pools.values():
    for s in seqs.get(tgt, []):
      np.add.at(popularity, s, 1.0)
  _, sources, labels = raw.eval[direction][split]
  labels = np.asarray(labels)
  x_eval = np.zeros((len(sources), n_src))
  for u, s in enumerate(sources):
    x_eval[u, s] = 1.0
  hr_cooc = _hit_rate_at_10(x_eval @ cooc, labels)
  hr_pop = _hit_rate_at_10(np.tile(popularity, (len(labels), 1)), labels)
  return hr_cooc, hr_pop


def test_cross_domain_transfer_is_learnable(world):
  chance = 10 / len(world.raw.items["B"])
  hr_cooc, hr_pop = cross_domain_hit_rates(world.raw, "A2B", "valid")
  print(f"A2B valid HR@10: co-occurrence {hr_cooc:.3f}, popularity {hr_pop:.3f}, chance {chance:.4f}")
  assert hr_pop > 2 * chance  # popularity is long-tailed, so it is a real (weak) baseline
  assert hr_cooc >= 1.5 * hr_pop
  assert hr_cooc > 2 * chance
  hr_cooc, hr_pop = cross_domain_hit_rates(world.raw, "B2A", "valid")
  assert hr_cooc >= 1.5 * hr_pop


def test_transfer_comes_from_the_shared_taste(world):
  # Control: re-pair overlap users' B sequences with other users' A sequences; the same scorer must
  # then lose its edge over popularity, so the gain above is the A-B link, not an artefact.
  raw = world.raw
  ids, seqs = raw.pools["overlap"]
  perm = np.random.default_rng(0).permutation(len(ids))
  shuffled = prepared.RawDataset(
      items=raw.items,
      pools={**raw.pools, "overlap": (ids, {"A": seqs["A"], "B": [seqs["B"][i] for i in perm]})},
      eval=raw.eval)
  hr_cooc, hr_pop = cross_domain_hit_rates(shuffled, "A2B", "valid")
  assert hr_cooc < 1.2 * hr_pop


def test_write_prepared_round_trip(small, tmp_path):
  manifest = prepared.write_prepared(small, tmp_path / "d", source="synthetic",
                                     arguments={"seed": 0, "scale": 0.2}, seed=0)
  data = prepared.load_prepared(tmp_path / "d")
  assert data.manifest == manifest
  assert manifest["num_negatives"] == len(small.items["B"]) - 1
  for d in prepared.DOMAINS:
    assert data.item_ids[d].tolist() == [i for i, _ in small.items[d]]
    assert data.titles[d] == [t for _, t in small.items[d]]
  for pool, domains in prepared.POOLS.items():
    assert data.pool_user_ids[pool].tolist() == small.pools[pool][0]
    for d in domains:
      assert data.pools[pool][d].to_lists() == small.pools[pool][1][d]
  for direction in prepared.DIRECTIONS:
    for split in prepared.SPLITS:
      user_ids, sources, labels = small.eval[direction][split]
      ev = data.eval[direction][split]
      assert ev.user_ids.tolist() == user_ids
      assert ev.source.to_lists() == sources
      assert ev.label.tolist() == labels
      assert not (ev.negatives == ev.label[:, None]).any()


@pytest.mark.parametrize("kwargs", [
    {"scale": 0.0}, {"scale": 0.01}, {"overlap_share": 0.0}, {"overlap_share": 1.0},
    {"num_topics": 0}, {"drift": 1.5},
])
def test_rejects_bad_arguments(kwargs):
  with pytest.raises(ValueError):
    synthetic.generate(seed=0, **kwargs)


def test_prepare_cli_builds_the_synthetic_world_it_is_asked_for(tmp_path, capsys):
  from lgcd_jax.data import prepare
  out = tmp_path / "world"
  args = ["--source=synthetic", f"--output={out}", "--scale=0.1", "--overlap_share=0.2",
          "--eval_users=30"]
  assert prepare.main(args) == 0
  data = prepared.load_prepared(out)
  assert len(data.pool_user_ids["overlap"]) == round(round(4000 * 0.1) * 0.2)  # 400 users, 20 %
  for direction in prepared.DIRECTIONS:
    for split in prepared.SPLITS:
      assert len(data.eval[direction][split].user_ids) == 3  # 30 per split at scale 1.0, x 0.1
  assert data.manifest["arguments"]["overlap_share"] == 0.2
  capsys.readouterr()
  assert prepare.main(["--source=synthetic", f"--output={tmp_path / 'bad'}",
                       "--overlap_share=1.5"]) == 2
  assert "error: --overlap_share" in capsys.readouterr().err
  assert not (tmp_path / "bad").exists()


def test_overlap_order_is_an_interleaving(small):
  """overlap_before puts each overlap user's A and B items into one timeline: item i of a domain with
  c other-domain items before it sits at position i + c, and those positions cover the timeline."""
  _, seqs = small.pools["overlap"]
  before = small.overlap_before
  mixed = 0
  for a, b, ca, cb in zip(seqs["A"], seqs["B"], before["A"], before["B"]):
    assert len(ca) == len(a) and len(cb) == len(b)
    positions = [i + c for i, c in enumerate(ca)] + [j + c for j, c in enumerate(cb)]
    assert sorted(positions) == list(range(len(a) + len(b)))
    mixed += 0 < cb[-1] and cb[0] < len(a)  # not simply all A, then all B
  assert mixed > len(seqs["A"]) // 2
