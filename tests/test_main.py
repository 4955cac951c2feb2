"""main.py: where a run's results land (--workdir, else config.workdir, else the default name)."""

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _run(*args):
  cmd = [sys.executable, "main.py", "--config=configs/tiny.py", "--config.method=popularity", *args]
  subprocess.run(cmd, cwd=REPO, check=True, capture_output=True, timeout=300)


def test_config_workdir_names_the_workdir_and_the_flag_wins(tmp_path):
  _run(f"--config.workdir={tmp_path / 'from_config'}")
  saved = json.loads((tmp_path / "from_config" / "results.json").read_text())
  assert saved["method"] == "popularity"
  _run(f"--config.workdir={tmp_path / 'ignored'}", f"--workdir={tmp_path / 'from_flag'}")
  assert (tmp_path / "from_flag" / "results.json").exists()
  assert not (tmp_path / "ignored").exists()
