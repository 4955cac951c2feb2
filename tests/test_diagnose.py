"""The part-by-part evaluation of a trained run (lgcd_jax.diagnose) on the shared tiny run."""

import pytest

from lgcd_jax import diagnose
from lgcd_jax.cli import UserError


def test_parts_of_a_trained_run(trained_tiny):
  workdir, results = trained_tiny
  lines = []
  out = diagnose.diagnose(workdir, guess_start_steps=(2,), sample_steps=(1,), echo=lines.append)
  assert set(out) == {"as trained", "chain T'=2", "DDIM S=1", "guess"}  # no anchor in tiny.py
  for split in ("valid", "test"):
    # The run's own sampler gives the figures its results.json reports, to the last digit.
    assert out["as trained"][split]["sampled/HR@5"] == pytest.approx(
        results[split]["sampled"]["HR@5"], abs=1e-9)
    assert out["as trained"][split]["full/HR@10"] == pytest.approx(
        results[split]["full"]["HR@10"], abs=1e-9)
  assert lines[0].endswith(f"best step {results['best_step']}; sampled HR@5 (full HR@10)")
  assert any(line.startswith("guess") for line in lines)


def test_a_workdir_without_a_checkpoint_is_a_clear_error(tmp_path):
  with pytest.raises(UserError, match="no checkpoint"):
    diagnose.diagnose(tmp_path)
