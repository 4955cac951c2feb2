"""lgcd_jax/results.py: the results schema every method shares, results.json and metrics.jsonl."""

import json

import jax.numpy as jnp
import numpy as np

from lgcd_jax import results


def _split(n_users: int, hr: float, **extra) -> dict:
  return {"sampled": {"HR@10": np.float32(hr)}, "full": {"HR@10": jnp.asarray(hr / 2)},
          "n_users": np.int64(n_users), "ignored": "not in the schema", **extra}


def test_make_results_keeps_the_schema_and_plain_json_values():
  res = results.make_results("mf", "A2B", "prepared/x", _split(3, 0.5), _split(4, 0.25),
                             steps_run=np.int32(7), extra={"arr": np.arange(2)})
  assert res == {"method": "mf", "direction": "A2B", "data": "prepared/x",
                 "valid": {"sampled": {"HR@10": 0.5}, "full": {"HR@10": 0.25}},
                 "test": {"sampled": {"HR@10": 0.25}, "full": {"HR@10": 0.125}},
                 "n_users": {"valid": 3, "test": 4}, "steps_run": 7, "extra": {"arr": [0, 1]}}
  json.dumps(res)  # plain Python values only
  buckets = {"0-1": {"n_users": 1}}
  both = results.make_results("mf", "A2B", "d", _split(1, 1.0, by_source_length=buckets),
                              _split(1, 1.0, by_source_length=buckets))
  assert both["by_source_length"] == {"valid": buckets, "test": buckets}
  one = results.make_results("mf", "A2B", "d", _split(1, 1.0, by_source_length=buckets), _split(1, 1.0))
  assert "by_source_length" not in one


def test_results_json_and_metrics_log(tmp_path):
  path = results.write_results(tmp_path, {"method": "popularity"})
  assert path == tmp_path / "results.json" and json.loads(path.read_text()) == {"method": "popularity"}
  log = results.MetricsLog(tmp_path / "run")
  log.write("train", step=np.int64(1), loss=jnp.asarray(0.5))
  log.write("eval", step=2)
  lines = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
  assert [(r["kind"], r["step"]) for r in lines] == [("train", 1), ("eval", 2)]
  assert lines[0]["loss"] == 0.5 and all(isinstance(r["time"], float) for r in lines)
  off = results.MetricsLog(tmp_path / "off", enabled=False)
  off.write("train", step=1)
  assert not (tmp_path / "off").exists()
