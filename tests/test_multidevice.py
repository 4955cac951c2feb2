"""The same training steps on 1 and on 4 (fake CPU) devices give the same losses and metrics."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, sys
import jax
from configs import tiny
from lgcd_jax import builder, sharding, train
from lgcd_jax.data import loading, pipeline

config = tiny.get_config()
ds = loading.load_dataset(config, sys.argv[1])
setup = builder.build(config, ds)
c, state = setup.config, setup.state
data = pipeline.training_data(c, ds, setup.clues)
put = lambda b: sharding.put_batch(setup.mesh, b)
key = jax.random.key(0)
losses = []
for i in range(3):
  src, tgt = data.encoder_batches(i)
  state, m = train.encoder_step(setup.graphdef, state, put(src), put(tgt), jax.random.fold_in(key, i))
  losses.append(float(m["encoder_loss/src"] + m["encoder_loss/tgt"]))
for i in range(4):
  state, m = train.train_step(setup.graphdef, state, put(data.pairs[i]),
                              jax.random.fold_in(key, 10 + i))
  losses.append(float(m["loss"]))
valid = train.evaluate_split(setup, state, "valid")
print("RESULT " + json.dumps({"devices": jax.device_count(), "losses": losses,
                              "valid": valid["sampled"]}))
"""


def _run(tmp_path, devices):
  env = {**os.environ, "JAX_PLATFORMS": "cpu",
         "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}
  out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], cwd=REPO, env=env,
                       capture_output=True, text=True, timeout=600)
  assert out.returncode == 0, out.stderr[-3000:]
  line = [l for l in out.stdout.splitlines() if l.startswith("RESULT ")][-1]
  return json.loads(line[len("RESULT "):])


def test_one_and_four_devices_agree(tmp_path):
  one = _run(tmp_path, 1)
  four = _run(tmp_path, 4)
  assert one["devices"] == 1 and four["devices"] == 4
  np.testing.assert_allclose(one["losses"], four["losses"], rtol=2e-4, atol=2e-5)
  for k, v in one["valid"].items():
    assert abs(v - four["valid"][k]) < 0.02, (k, v, four["valid"][k])
