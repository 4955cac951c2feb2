"""Helpers shared by the pipelines/ tests: a tiny prepared world and the fake Anthropic server (its config:
`conftest.tiny_config(data_dir=...)`)."""

from __future__ import annotations

import contextlib
from pathlib import Path

from lgcd_jax.data import synthetic
from lgcd_jax.data.prepared import write_prepared
from pipelines import fake_anthropic as fa


def write_tiny_world(tmp_path_factory, name: str, seed: int) -> Path:
  """A prepared synthetic world at scale 0.2 (each test module takes its own seed)."""
  out = tmp_path_factory.mktemp(name) / "tiny"
  write_prepared(synthetic.generate(seed=seed, scale=0.2), out, source="synthetic",
                 arguments={"scale": 0.2}, seed=seed)
  return out


@contextlib.contextmanager
def fake_server(monkeypatch, api_key: str, target_titles, **kwargs):
  """The fake server, with the SDK pointed at it and only `api_key` in the environment."""
  with fa.FakeAnthropic(api_key=api_key, target_titles=target_titles, **kwargs) as s:
    for name in ("ANTHROPIC_AUTH_TOKEN", "ANTHROPIC_PROFILE", "ANTHROPIC_LOG"):
      monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ANTHROPIC_API_KEY", api_key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", s.url)
    yield s
