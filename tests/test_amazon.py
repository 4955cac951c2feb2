"""Tests for the raw Amazon dump parser: layouts, cleaning, k-core, hold-out, bad input."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest

from lgcd_jax.data.amazon import build_amazon
from lgcd_jax.data.errors import DataError
from lgcd_jax.data.prepared import DIRECTIONS, SPLITS, load_prepared, write_prepared

# A small hand-made catalogue: domain A (food) and B (kitchen). Times are in seconds.
BASE_REVIEWS = {
    "A": [("u1", "FA02", 100), ("u1", "FA01", 200), ("u2", "FA01", 110), ("u3", "FA03", 50),
          ("u3", "FA02", 60), ("u5", "FA03", 500)],
    "B": [("u1", "KB03", 150), ("u1", "KB01", 300), ("u2", "KB02", 120), ("u2", "KB03", 400),
          ("u4", "KB01", 70), ("u5", "KB01", 10)],
}
BASE_META = {
    "A": [("FA01", "Bob's Red Mill Oats"), ("FA02", "Green Tea, 100 bags"), ("FA03", "Olive Oil"),
          ("FA99", "Never Reviewed Jam"), ("FA98", "")],
    "B": [("KB01", "Chef's Knife 8\""), ("KB02", "Cast Iron Skillet"), ("KB03", "Kettle"),
          ("KB97", None)],
}


def review_line(layout: str, user: str, item: str, seconds: int) -> str:
  if layout == "2023":
    return json.dumps({"rating": 5.0, "title": "great", "text": "ok", "asin": item + "-variant",
                       "parent_asin": item, "user_id": user, "timestamp": seconds * 1000,
                       "verified_purchase": True})
  rec = {"reviewerID": user, "asin": item, "reviewerName": "X", "overall": 5.0,
         "unixReviewTime": seconds, "reviewTime": "01 1, 2014"}
  if layout == "2014":
    rec["helpful"] = [0, 0]
  else:
    rec.update(verified=True, vote="2")
  return json.dumps(rec)


def meta_line(layout: str, item: str, title: str | None) -> str:
  if layout == "2014":
    rec = {"asin": item, "price": None, "related": {"also_bought": ["FA09"]},
           "salesRank": {"Grocery": 5}, "categories": [["Grocery"]]}
    if title is not None:
      rec["title"] = title
    return repr(rec)  # a Python literal: single quotes, None, like the real 2014 dumps
  key = "parent_asin" if layout == "2023" else "asin"
  rec = {key: item, "main_category": "x", "price": None, "also_buy": []}
  if title is not None:
    rec["title"] = title
  return json.dumps(rec)


def write_file(path: Path, lines: list[str], gz: bool = False) -> Path:
  data = "".join(line + "\n" for line in lines).encode("utf-8")
  path.write_bytes(gzip.compress(data) if gz else data)
  return path


def write_dataset(root: Path, reviews=None, meta=None, layout: str = "2018", gz: bool = False,
                  layouts: dict[str, str] | None = None) -> tuple[Path, Path, Path, Path]:
  """Writes the four files; `layouts` may override the layout per domain."""
  reviews = BASE_REVIEWS if reviews is None else reviews
  meta = BASE_META if meta is None else meta
  # Extensions deliberately lie about compression: detection must use the magic bytes.
  ext = ".jsonl" if gz else ".json.gz"
  paths = []
  for d in ("A", "B"):
    lay = (layouts or {}).get(d, layout)
    paths.append(write_file(root / f"reviews_{d}{ext}",
                            [review_line(lay, *r) for r in reviews[d]], gz))
    paths.append(write_file(root / f"meta_{d}{ext}", [meta_line(lay, *m) for m in meta[d]], gz))
  return tuple(paths)


@pytest.mark.parametrize("gz", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize("layout", ["2014", "2018", "2023"])
def test_layouts_parse_to_the_same_dataset(tmp_path, layout, gz):
  raw, stats = build_amazon(*write_dataset(tmp_path, layout=layout, gz=gz), eval_users=0)
  assert set(stats["layouts"].values()) == {layout}
  assert raw.items["A"] == [("FA01", "Bob's Red Mill Oats"), ("FA02", "Green Tea, 100 bags"),
                            ("FA03", "Olive Oil")]
  assert raw.items["B"] == [("KB01", "Chef's Knife 8\""), ("KB02", "Cast Iron Skillet"),
                            ("KB03", "Kettle")]
  assert raw.pools["A_only"] == (["u3"], {"A": [[2, 1]]})
  assert raw.pools["B_only"] == (["u4"], {"B": [[0]]})
  assert raw.pools["overlap"] == (["u1", "u2", "u5"], {"A": [[1, 0], [0], [2]],
                                                       "B": [[2, 0], [1, 2], [0]]})
  # The order between the domains, by time: u1 = FA02 KB03 FA01 KB01, u2 = FA01 KB02 KB03,
  # u5 = KB01 FA03.
  assert raw.overlap_before == {"A": [[0, 1], [0], [1]], "B": [[1, 2], [1, 1], [0]]}
  assert all(len(raw.eval[d][s][0]) == 0 for d in DIRECTIONS for s in SPLITS)
  assert stats["records"] == {"source_reviews": 6, "source_meta": 5, "target_reviews": 6,
                              "target_meta": 4}
  assert stats["meta_without_title"] == {"A": 1, "B": 1}
  assert stats["meta_unreviewed"] == {"A": 1, "B": 0}


def test_mixed_layouts_and_2014_json_fallback(tmp_path):
  # A in 2014 layout with one JSON metadata line (true/null are not Python literals), B in 2018.
  paths = write_dataset(tmp_path, layouts={"A": "2014", "B": "2018"})
  lines = paths[1].read_text().splitlines()
  lines[2] = json.dumps({"asin": "FA03", "title": "Olive Oil (JSON)", "in_stock": True, "x": None})
  write_file(paths[1], lines)
  raw, stats = build_amazon(*paths, eval_users=0)
  assert stats["layouts"] == {"source_reviews": "2014", "source_meta": "2014",
                              "target_reviews": "2018", "target_meta": "2018"}
  assert raw.items["A"][2] == ("FA03", "Olive Oil (JSON)")


def test_2023_uses_parent_asin_and_millisecond_timestamps(tmp_path):
  # Times 1.5 s apart but in the same second: only correct ms handling orders them by time.
  reviews = {"A": [("u1", "FA01", 0), ("u2", "FA01", 0)], "B": [("u1", "KB01", 0), ("u2", "KB02", 0)]}
  paths = write_dataset(tmp_path, reviews=reviews, layout="2023")
  lines = [json.dumps({"user_id": "u1", "parent_asin": "FA02", "asin": "zz", "timestamp": 1_500}),
           json.dumps({"user_id": "u1", "parent_asin": "FA03", "asin": "zz", "timestamp": 1_000})]
  write_file(paths[0], lines + paths[0].read_text().splitlines())
  raw, _ = build_amazon(*paths, eval_users=0)
  assert [i for i, _ in raw.items["A"]] == ["FA01", "FA02", "FA03"]  # never the variant `asin`
  assert raw.pools["overlap"][1]["A"][0] == [0, 2, 1]  # FA01 @0 ms, FA03 @1000 ms, FA02 @1500 ms


def test_dedupe_keeps_earliest_and_ties_keep_file_order(tmp_path):
  reviews = {
      "A": BASE_REVIEWS["A"] + [("u1", "FA01", 50),  # earlier repeat: FA01 moves before FA02
                                ("u1", "FA02", 150),  # later repeat: dropped
                                ("u6", "FA03", 300), ("u6", "FA01", 300), ("u6", "FA02", 300)],
      "B": BASE_REVIEWS["B"] + [("u6", "KB02", 5), ("u6", "KB02", 5)],  # exact repeat
  }
  raw, stats = build_amazon(*write_dataset(tmp_path, reviews=reviews), eval_users=0)
  ids, seqs = raw.pools["overlap"]
  assert ids == ["u1", "u2", "u5", "u6"]
  assert seqs["A"][0] == [0, 1]  # FA01 @50 before FA02 @100 (keeping the latest gives [1, 0])
  assert seqs["A"][3] == [2, 0, 1]  # same time: order of the file
  assert seqs["B"][3] == [1]
  assert stats["domains"]["A"]["duplicates_removed"] == 2
  assert stats["domains"]["B"]["duplicates_removed"] == 1


def test_items_without_title_are_dropped_and_can_change_the_pool(tmp_path):
  # u7's only B item has an empty title, so u7 is an A-only user; u8's only A item has no metadata.
  reviews = {"A": BASE_REVIEWS["A"] + [("u7", "FA01", 1), ("u8", "FA77", 1)],
             "B": BASE_REVIEWS["B"] + [("u7", "KB97", 2), ("u8", "KB02", 3), ("u1", "KB97", 4)]}
  raw, stats = build_amazon(*write_dataset(tmp_path, reviews=reviews), eval_users=0)
  assert raw.pools["A_only"][0] == ["u3", "u7"]
  assert raw.pools["B_only"] == (["u4", "u8"], {"B": [[0], [1]]})
  assert "KB97" not in [i for i, _ in raw.items["B"]]
  assert stats["domains"]["A"]["items_without_title"] == 1
  assert stats["domains"]["A"]["interactions_dropped_no_title"] == 1
  assert stats["domains"]["B"]["items_without_title"] == 1
  assert stats["domains"]["B"]["interactions_dropped_no_title"] == 2


def test_kcore_hand_checked(tmp_path):
  reviews = {
      # k=2 in A: a3 and u4 fall in round 1; then u3 has one item left and falls in round 2.
      "A": [("u1", "a1", 1), ("u1", "a2", 2), ("u2", "a1", 3), ("u2", "a2", 4),
            ("u3", "a1", 5), ("u3", "a3", 6), ("u4", "a4", 7)],
      # k=2 in B: only u5 (one item) falls; u3 keeps its B items and becomes B-only.
      "B": [("u1", "b1", 1), ("u1", "b2", 2), ("u2", "b2", 3), ("u2", "b1", 4),
            ("u3", "b1", 5), ("u3", "b2", 6), ("u5", "b2", 7)],
  }
  meta = {"A": [(f"a{i}", f"food {i}") for i in range(1, 5)],
          "B": [(f"b{i}", f"tool {i}") for i in range(1, 3)]}
  paths = write_dataset(tmp_path, reviews=reviews, meta=meta)
  raw, stats = build_amazon(*paths, kcore=2, eval_users=0)
  assert raw.items["A"] == [("a1", "food 1"), ("a2", "food 2")]
  assert raw.pools["A_only"] == ([], {"A": []})
  assert raw.pools["B_only"] == (["u3"], {"B": [[0, 1]]})
  assert raw.pools["overlap"] == (["u1", "u2"], {"A": [[0, 1], [0, 1]], "B": [[0, 1], [1, 0]]})
  a, b = stats["domains"]["A"], stats["domains"]["B"]
  assert (a["kcore_rounds"], a["kcore_users_removed"], a["kcore_items_removed"],
          a["kcore_interactions_removed"]) == (2, 2, 2, 3)
  assert (b["kcore_rounds"], b["kcore_users_removed"], b["kcore_items_removed"],
          b["kcore_interactions_removed"]) == (1, 1, 0, 1)

  raw0, _ = build_amazon(*paths, kcore=0, eval_users=0)  # no filtering at all
  assert raw0.pools["overlap"][0] == ["u1", "u2", "u3"]
  assert raw0.pools["A_only"][0] == ["u4"] and raw0.pools["B_only"][0] == ["u5"]
  assert len(raw0.items["A"]) == 4


def synthetic_reviews(num_overlap: int = 30, seed: int = 0):
  """Random histories with distinct times, so the expected order is unambiguous."""
  rng = np.random.default_rng(seed)
  reviews = {"A": [], "B": []}
  clock = iter(rng.permutation(100_000).tolist())
  users = ([(f"o{i:02d}", "AB") for i in range(num_overlap)] + [(f"a{i}", "A") for i in range(5)]
           + [(f"b{i}", "B") for i in range(5)])
  for user, doms in users:
    for d in doms:
      for item in rng.choice(12, size=int(rng.integers(1, 5)), replace=False):
        reviews[d].append((user, f"{d}{item:03d}", next(clock)))
  meta = {d: [(f"{d}{i:03d}", f"title {d}{i}") for i in range(12)] for d in "AB"}
  return reviews, meta


def test_held_out_users(tmp_path):
  reviews, meta = synthetic_reviews()
  raw, stats = build_amazon(*write_dataset(tmp_path, reviews=reviews, meta=meta), eval_users=10)
  index = {d: {item: i for i, (item, _) in enumerate(raw.items[d])} for d in "AB"}
  history = {d: {} for d in "AB"}
  times = {d: {} for d in "AB"}
  for d in "AB":
    for user, item, t in sorted(reviews[d], key=lambda r: r[2]):
      history[d].setdefault(user, []).append(index[d][item])
      times[d].setdefault(user, []).append(t)

  pool_users = set().union(*(set(ids) for ids, _ in raw.pools.values()))
  held = []
  for direction in DIRECTIONS:
    src, tgt = direction[0], direction[2]
    for split in SPLITS:
      ids, sources, labels = raw.eval[direction][split]
      assert ids, (direction, split)  # every (direction, split) gets users
      for user, source, label in zip(ids, sources, labels):
        label_time = times[tgt][user][-1]
        assert source == [i for i, t in zip(history[src][user], times[src][user]) if t <= label_time]
        assert label == history[tgt][user][-1]
      held += ids
  assert len(held) == len(set(held)) == 10
  assert sum(len(raw.eval[d]["valid"][0]) for d in DIRECTIONS) == 5
  assert not pool_users & set(held)
  assert sorted(held + raw.pools["overlap"][0]) == [f"o{i:02d}" for i in range(30)]
  assert stats["eval_hidden_interactions"] == sum(
      len(history["B" if d == "A2B" else "A"][u]) - 1
      for d in DIRECTIONS for s in SPLITS for u in raw.eval[d][s][0])

  raw_default, stats_default = build_amazon(*write_dataset(tmp_path, reviews=reviews, meta=meta))
  assert stats_default["eval_users"] == {d: {s: 1 for s in SPLITS} for d in DIRECTIONS}


def test_seed_determinism(tmp_path):
  reviews, meta = synthetic_reviews()
  paths = write_dataset(tmp_path, reviews=reviews, meta=meta)
  first, _ = build_amazon(*paths, eval_users=8, seed=3)
  again, _ = build_amazon(*paths, eval_users=8, seed=3)
  other, _ = build_amazon(*paths, eval_users=8, seed=4)
  assert first == again
  assert first.items == other.items
  held = lambda raw: {u for d in DIRECTIONS for s in SPLITS for u in raw.eval[d][s][0]}
  assert len(held(first)) == 8 and held(first) != held(other)


def test_eval_users_out_of_range_and_no_overlap(tmp_path):
  paths = write_dataset(tmp_path)
  with pytest.raises(ValueError, match="eval_users"):
    build_amazon(*paths, eval_users=4)  # only 3 overlap users
  reviews = {"A": [r for r in BASE_REVIEWS["A"] if r[0] == "u3"],
             "B": [r for r in BASE_REVIEWS["B"] if r[0] == "u4"]}
  (tmp_path / "disjoint").mkdir()
  with pytest.raises(DataError, match="both domains"):
    build_amazon(*write_dataset(tmp_path / "disjoint", reviews=reviews))


def test_progress_prints_a_line_per_file(tmp_path, capsys):
  build_amazon(*write_dataset(tmp_path), eval_users=0, progress=True)
  err = capsys.readouterr().err.splitlines()
  assert len(err) == 4 and all("layout 2018" in line for line in err)


GOOD_REVIEW = review_line("2018", "u1", "FA01", 1)
GOOD_META_2014 = meta_line("2014", "FA01", "Oats")
GOOD_META_2018 = meta_line("2018", "FA01", "Oats")

# (case id, file index in write_dataset's order, lines, expected 1-based line or None)
BAD_INPUTS = [
    ("review_not_json", 0, [GOOD_REVIEW, "", "{not json", GOOD_REVIEW], 3),
    ("review_truncated_json", 2, [GOOD_REVIEW, GOOD_REVIEW[:-5]], 2),
    ("review_not_object", 0, [GOOD_REVIEW, "[1, 2]"], 2),
    ("review_missing_user", 0, [GOOD_REVIEW, '{"asin": "FA01", "unixReviewTime": 1}'], 2),
    ("review_missing_time", 2, [GOOD_REVIEW, GOOD_REVIEW, '{"reviewerID": "u", "asin": "x"}'], 3),
    ("review_time_string", 0,
     [GOOD_REVIEW, '{"reviewerID": "u", "asin": "x", "unixReviewTime": "123"}'], 2),
    ("review_time_bool", 0, ['{"reviewerID": "u", "asin": "x", "unixReviewTime": true}'], 1),
    ("review_time_nan", 0, [GOOD_REVIEW, '{"reviewerID": "u", "asin": "x", "unixReviewTime": NaN}'],
     2),
    ("review_user_not_string", 0, [GOOD_REVIEW, '{"reviewerID": 7, "asin": "x", '
                                   '"unixReviewTime": 1}'], 2),
    ("review_2023_time_string", 0,
     ['{"user_id": "u", "parent_asin": "x", "timestamp": 5}',
      '{"user_id": "u", "parent_asin": "y", "timestamp": "1700000000000"}'], 2),
    ("review_unknown_layout", 0, ["", '{"foo": 1, "bar": 2}'], 2),
    ("review_is_metadata", 0, [GOOD_META_2018], 1),
    ("review_empty_file", 0, [], None),
    ("review_blank_only", 2, ["", "  ", ""], None),
    ("review_bad_utf8", 0, [GOOD_REVIEW, "\udcff"], 2),
    ("meta_2014_malformed", 1, [GOOD_META_2014, "", "{'asin': 'FA02', 'title': }"], 3),
    ("meta_2014_not_dict", 1, [GOOD_META_2014, "['FA02', 'title']"], 2),
    ("meta_2014_missing_asin", 1, [GOOD_META_2014, "{'title': 'x'}"], 2),
    ("meta_2018_not_json", 3, [GOOD_META_2018, "{'asin': 'KB01', 'title': 'x'}"], 2),
    ("meta_title_wrong_type", 3, [GOOD_META_2018, '{"asin": "KB02", "title": ["a"]}'], 2),
    ("meta_asin_wrong_type", 1, [GOOD_META_2018, '{"asin": 12, "title": "a"}'], 2),
    ("meta_unknown_layout", 1, ['{"sku": "FA01", "title": "x"}'], 1),
    ("meta_is_reviews", 3, [GOOD_REVIEW], 1),
    ("meta_empty_file", 3, [""], None),
    ("meta_layout_mismatch", 1, ['{"parent_asin": "FA01", "title": "x"}'], 1),
]


def _write_raw(path: Path, lines: list[str]) -> None:
  # surrogateescape turns "\udcff" into the invalid UTF-8 byte 0xff.
  path.write_bytes("".join(line + "\n" for line in lines).encode("utf-8", "surrogateescape"))


@pytest.mark.parametrize("case,which,lines,line", BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS])
def test_bad_input_names_file_and_line(tmp_path, case, which, lines, line):
  paths = write_dataset(tmp_path)
  bad = tmp_path / f"bad_{case}.json"
  _write_raw(bad, lines)
  args = list(paths)
  args[which] = bad
  with pytest.raises(DataError) as info:
    build_amazon(*args, eval_users=0)
  assert bad.name in str(info.value)
  assert info.value.line == line
  if line is not None:
    assert f"{bad.name}:{line}:" in str(info.value)


def test_bad_input_in_gzip_counts_lines_too(tmp_path):
  paths = list(write_dataset(tmp_path))
  paths[2] = write_file(tmp_path / "target.bin", [GOOD_REVIEW] * 4 + ["{oops"], gz=True)
  with pytest.raises(DataError, match=r"target\.bin:5:"):
    build_amazon(*paths, eval_users=0)


def test_corrupt_gzip_and_missing_file(tmp_path):
  paths = list(write_dataset(tmp_path))
  data = gzip.compress("".join(GOOD_REVIEW + "\n" for _ in range(2000)).encode())
  paths[0] = tmp_path / "truncated.gz"
  paths[0].write_bytes(data[:len(data) // 2])
  with pytest.raises(DataError, match="truncated.gz"):
    build_amazon(*paths, eval_users=0)
  paths[0] = tmp_path / "nowhere.json"
  with pytest.raises(DataError, match="nowhere.json"):
    build_amazon(*paths, eval_users=0)


@pytest.mark.parametrize("position", [0, 1])
@pytest.mark.parametrize("payload", [
    "__import__('os').system('touch {marker}')",
    "{{'asin': 'FA02', 'title': __import__('os').system('touch {marker}')}}",
    "{{'asin': 'FA02', 'title': (lambda: open('{marker}', 'w'))()}}",
])
def test_code_in_2014_metadata_is_rejected_not_run(tmp_path, payload, position):
  paths = list(write_dataset(tmp_path, layout="2014"))
  marker = tmp_path / "pwned"
  lines = paths[1].read_text().splitlines()
  lines.insert(position, payload.format(marker=marker))
  write_file(paths[1], lines)
  with pytest.raises(DataError) as info:
    build_amazon(*paths, eval_users=0)
  assert info.value.line == position + 1 and paths[1].name in str(info.value)
  assert not marker.exists()


def test_end_to_end_write_and_load_prepared(tmp_path):
  reviews, meta = synthetic_reviews()
  raw, stats = build_amazon(*write_dataset(tmp_path, reviews=reviews, meta=meta, gz=True),
                            kcore=1, eval_users=8, seed=0)
  manifest = write_prepared(raw, tmp_path / "out", source="amazon",
                            arguments={"kcore": 1, "eval_users": 8}, seed=0,
                            extra_manifest={"amazon_stats": stats})
  loaded = load_prepared(tmp_path / "out")
  assert loaded.manifest == json.loads(json.dumps(manifest))
  for d in "AB":
    assert loaded.num_items(d) == len(raw.items[d]) == stats["domains"][d]["items"]
    assert loaded.titles[d] == [t for _, t in raw.items[d]]
  for pool, (ids, seqs) in raw.pools.items():
    assert loaded.pool_user_ids[pool].tolist() == ids
    assert loaded.manifest["num_users"][pool] == stats["num_users"][pool]
    for d, rows in seqs.items():
      assert loaded.pools[pool][d].to_lists() == rows
  for direction in DIRECTIONS:
    for split in SPLITS:
      ids, sources, labels = raw.eval[direction][split]
      users = loaded.eval[direction][split]
      assert len(users) == len(ids) == stats["eval_users"][direction][split] > 0
      assert users.label.tolist() == labels and users.source.to_lists() == sources


@pytest.mark.parametrize("layout", ["2014", "2018", "2023"])
def test_titles_are_html_unescaped(tmp_path, layout):
  meta = {"A": [("FA01", "Salt &amp; Pepper"), ("FA02", "Bob&#39;s Tea"), ("FA03", "Olive Oil")],
          "B": [("KB01", "Chef&#x27;s Knife"), ("KB02", "Pot &amp;amp; Pan"), ("KB03", "Kettle")]}
  raw, _ = build_amazon(*write_dataset(tmp_path, meta=meta, layout=layout), eval_users=0)
  assert [t for _, t in raw.items["A"]] == ["Salt & Pepper", "Bob's Tea", "Olive Oil"]
  # Unescaped once, as a browser shows it: a double-escaped entity keeps one level.
  assert [t for _, t in raw.items["B"]] == ["Chef's Knife", "Pot &amp; Pan", "Kettle"]


def test_eval_source_history_stops_at_the_label_time(tmp_path):
  # Every eval input is the source history up to the label's time. A: FA01 0, FA02 1, FA03 2;
  # B: KB01 0, KB02 1, KB03 2. u1: A at 100, 200, 250, B at 150, 300: as B2A its label FA03 (250)
  # sees KB03 only, not KB01 bought later. u2: FA02 at 400, the time of its label KB03: kept. u5: its
  # only B item (10) precedes its only A item (500): as A2B it has no source item at all.
  reviews = {"A": BASE_REVIEWS["A"] + [("u1", "FA03", 250), ("u2", "FA02", 400)],
             "B": BASE_REVIEWS["B"]}
  expect = {("u1", "A2B"): ([1, 0, 2], 0, 0), ("u1", "B2A"): ([2], 2, 1),
            ("u2", "A2B"): ([0, 1], 2, 0), ("u2", "B2A"): ([1, 2], 1, 0),
            ("u5", "A2B"): ([], 0, 1), ("u5", "B2A"): ([0], 2, 0)}
  paths = write_dataset(tmp_path, reviews=reviews)
  seen = set()
  for seed in range(4):
    raw, stats = build_amazon(*paths, eval_users=3, seed=seed)
    hidden = empty = 0
    for direction in DIRECTIONS:
      for split in SPLITS:
        for user, source, label in zip(*raw.eval[direction][split]):
          want_source, want_label, later = expect[user, direction]
          assert (source, label) == (want_source, want_label), (seed, user, direction)
          hidden, empty = hidden + later, empty + (not source)
          seen.add((user, direction))
    assert stats["eval_hidden_later_source_items"] == hidden
    assert sum(stats["eval_users_with_empty_source"].values()) == empty
  assert {("u1", "B2A"), ("u5", "A2B")} & seen  # a later source item was actually cut
