import json
import pickle

import pytest

from lgcd_jax.data import llmcdsr, prepare, prepared
from lgcd_jax.data.errors import DataError


def test_food_kitchen_manifest(food_kitchen_prepared):
  m = food_kitchen_prepared.manifest
  assert m["num_items"] == {"A": 8661, "B": 27637}
  assert m["num_users"] == {"A_only": 5472, "B_only": 38191, "overlap": 7501}
  assert m["eval_users"] == {"A2B": {"valid": 597, "test": 637}, "B2A": {"valid": 363, "test": 300}}
  ev = food_kitchen_prepared.eval["A2B"]["test"]
  assert ev.negatives.shape == (637, 999)
  assert not (ev.negatives == ev.label[:, None]).any()
  assert all(len(set(row)) == 999 for row in ev.negatives[:20])


def _write_release(root, *, train_a="1\t0,1\n2\t1,2\n", train_b="3\t3,4\n",
                   overlap="4\t0,3,1,4\n", valid="5\t0,1,3\n6\t3,2\n", test="7\t2,4\n"):
  """A 3-item A domain (ids 0..2) and 2-item B domain (ids 3..4) in the release layout."""
  root.mkdir(exist_ok=True)
  (root / "num.txt").write_text("3\n2\n")
  (root / "train_A.txt").write_text(train_a)
  (root / "train_B.txt").write_text(train_b)
  (root / "train_overlap.txt").write_text(overlap)
  (root / "valid.txt").write_text(valid)
  (root / "test.txt").write_text(test)
  for d, asins in (("A", ["a0", "a1", "a2"]), ("B", ["b0", "b1"])):
    (root / f"item_set_{d}.pkl").write_bytes(pickle.dumps({x: i for i, x in enumerate(asins)}))
    (root / f"text_{d}.pkl").write_bytes(pickle.dumps({x: f"title {x}" for x in asins}))
  return root


def test_small_release_split(tmp_path):
  raw, _ = llmcdsr.build_llmcdsr(_write_release(tmp_path / "r"))
  assert raw.pools["overlap"][1] == {"A": [[0, 1]], "B": [[0, 1]]}
  assert raw.pools["B_only"][1]["B"] == [[0, 1]]
  # Overlap user 4: a0 b0 a1 b1 -> the other domain's items before each item.
  assert raw.overlap_before == {"A": [[0, 1]], "B": [[1, 2]]}
  # valid user 5: label b0 (B) -> A2B with the A items before it; user 6: label a2 -> B2A.
  assert raw.eval["A2B"]["valid"] == (["5"], [[0, 1]], [0])
  assert raw.eval["B2A"]["valid"] == (["6"], [[0]], [2])
  assert raw.eval["B2A"]["test"] == ([], [], [])
  assert raw.eval["A2B"]["test"] == (["7"], [[2]], [1])


@pytest.mark.parametrize("field,text,line,match", [
    ("train_a", "1\t0,1\n2\t0,x\n", 2, "comma-separated"),
    ("train_a", "1\t0,1\n2\t0,9\n", 2, "unknown item id 9"),
    ("train_a", "1\t0,1\n2 0,1\n", 2, "user<TAB>"),
    ("train_a", "1\t0,1\n2\t0,3\n", 2, "other domain"),
    ("overlap", "4\t0,1\n", 1, "both domains"),
    ("valid", "5\t0,1,3\n5\t3,2\n", 2, "twice"),
])
def test_bad_lines_name_file_and_line(tmp_path, field, text, line, match):
  files = {"train_a": "train_A.txt", "overlap": "train_overlap.txt", "valid": "valid.txt"}
  root = _write_release(tmp_path / "r", **{field: text})
  with pytest.raises(DataError, match=match) as e:
    llmcdsr.build_llmcdsr(root)
  assert e.value.path.endswith(files[field]) and e.value.line == line
  assert f"{files[field]}:{line}:" in str(e.value)


def test_empty_file(tmp_path):
  root = _write_release(tmp_path / "r", test="\n")
  with pytest.raises(DataError, match="test.txt: empty file"):
    llmcdsr.build_llmcdsr(root)


def test_prepare_cli_is_atomic_and_refuses_to_clobber(tmp_path, capsys, monkeypatch):
  root = _write_release(tmp_path / "r")
  out = tmp_path / "out"
  assert prepare.main(["--source=llmcdsr", f"--input={root}", f"--output={out}"]) == 0
  manifest = json.loads((out / "manifest.json").read_text())
  assert manifest["num_negatives"] == 1 and manifest["source"] == "llmcdsr"
  assert prepare.main(["--source=llmcdsr", f"--input={root}", f"--output={out}"]) == 2
  assert "already exists" in capsys.readouterr().err

  # A crash while writing leaves neither a half-made output nor temporary litter.
  def boom(*a, **k):
    raise RuntimeError("disk full")
  monkeypatch.setattr(prepared.np, "savez", boom)
  with pytest.raises(RuntimeError):
    prepare.main(["--source=llmcdsr", f"--input={root}", f"--output={tmp_path / 'out2'}"])
  assert sorted(p.name for p in tmp_path.iterdir()) == ["out", "r"]


def test_bad_input_exit_code(tmp_path, capsys):
  root = _write_release(tmp_path / "r", train_b="3\t3,99\n")
  assert prepare.main(["--source=llmcdsr", f"--input={root}", f"--output={tmp_path / 'o'}"]) == 2
  assert "train_B.txt:1: unknown item id 99" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()


def test_titles_are_html_unescaped(tmp_path):
  # 602 Food and 2,171 Kitchen titles of the release carry raw entities such as `&amp;`.
  root = _write_release(tmp_path / "r")
  (root / "text_A.pkl").write_bytes(pickle.dumps(
      {"a0": "Salt &amp; Pepper", "a1": "Bob&#39;s Red Mill", "a2": " Caf&eacute; &lt;Blend&gt; "}))
  raw, _ = llmcdsr.build_llmcdsr(root)
  assert [t for _, t in raw.items["A"]] == ["Salt & Pepper", "Bob's Red Mill", "Café <Blend>"]
  assert raw.items["B"] == [("b0", "title b0"), ("b1", "title b1")]
