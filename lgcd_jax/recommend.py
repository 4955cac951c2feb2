"""Serve recommendations from a checkpoint: `python -m lgcd_jax.recommend`.

  python -m lgcd_jax.recommend --workdir=DIR --input=users.jsonl --output=recs.jsonl --topk=10 \
      [--sampler=ddim --steps=S --batch_size=B --length_buckets=4,8,16,32]
      (or --checkpoint=PATH instead of --workdir)

Input lines: {"user": ID, "source_items": [...], "clue": {...} (optional)}. Source items are original ids
(ASINs, strings) or prepared indices (integers). A clue, as the LLM pipeline writes it per user, is
{"items": [target ids or indices, most likely first], "sims": [...], "summary_emb": [...] (optional)};
without one the bridge clue is computed at serving, with the training run's bridge (clues.bridge_mode,
bridge_k, text_weight; the overlap users and title embeddings stored in the checkpoint), exactly as the
training run's bridge clues were made. Each output line's "clue_source" says what made its clue:
"request" (the line's own clue), "serving:bridge:<mode>" (computed here), or "none" (the model takes no
clue input: DMCDR, EMCDR). A model trained on LLM clues still gets bridge clues for lines without one, so
a warning says so once. A line needing a bridge clue that this checkpoint cannot rebuild is an error line.
Output lines, one per input line in input order: {"user", "items": [original ids], "scores": [...],
"clue_source"}, or {"user" (if known), "line": N, "error": "<why>"} for a line that cannot be served.

It needs no training data: the best checkpoint holds the weights (title embeddings included), the config,
the item vocabularies and the bridge's overlap users. `Recommender` is the importable API for a service.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Iterable, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import app, flags
from flax import nnx

from lgcd_jax import checkpoint as ckpt_lib
from lgcd_jax import cli, inference, user_keys
from lgcd_jax.cli import UserError
from lgcd_jax.clues import bridge
from lgcd_jax.data import atomic, pipeline
from lgcd_jax.data.prepared import PreparedDataset, Ragged, direction_domains
from lgcd_jax.model.lgcd import LGCD, uses_clues



class LineError(ValueError):
  pass


class NoCheckpoint(UserError, FileNotFoundError):
  pass


def _find_checkpoint(workdir: str | None, checkpoint: str | None) -> tuple[Path, int | None]:
  """(manager directory, step or None for its latest)."""
  if checkpoint:
    path = Path(checkpoint)
    if path.name.isdigit() and path.is_dir():
      return path.parent, int(path.name)
    return path, None
  if not workdir:
    raise UserError("give --workdir=DIR or --checkpoint=PATH")
  return Path(workdir) / "checkpoints" / "best", None


class Recommender:
  """Restores the best checkpoint once, then serves batches of users through one jitted function."""

  def __init__(self, workdir: str | None = None, checkpoint: str | None = None,
               sampler: str | None = None, steps: int | None = None, batch_size: int = 256,
               length_buckets: str | None = None):
    """length_buckets: widths ("4,8,16,32") each batch's src is cut to, as evaluation's
    data.eval_length_buckets does (the same output, less work for short histories; "": maxlen
    wide); None: the checkpoint's data.eval_length_buckets."""
    manager_dir, step = _find_checkpoint(workdir, checkpoint)
    if not manager_dir.exists():
      raise NoCheckpoint(f"no checkpoint at {manager_dir}: train first (python main.py "
                         f"--workdir=...) or give --checkpoint=PATH")
    ckpt = ckpt_lib.Checkpointer.for_directory(manager_dir)
    try:
      meta = ckpt.restore_meta(step)
    except ckpt_lib.CheckpointReadError as e:
      raise UserError(f"{e}; retrain or point --checkpoint at an intact one") from e
    if meta is None:
      raise NoCheckpoint(f"no finished checkpoint in {manager_dir}")
    self.meta = meta
    self.config = ml_collections.ConfigDict(json.loads(meta["config"]))
    c = self.config
    self.src_ids = np.asarray(meta["vocab"]["source"], dtype=str)
    self.tgt_ids = np.asarray(meta["vocab"]["target"], dtype=str)
    self.src_index = {x: i for i, x in enumerate(self.src_ids)}
    self.tgt_index = {x: i for i, x in enumerate(self.tgt_ids)}
    n_src, n_tgt = len(self.src_ids), len(self.tgt_ids)
    zeros = lambda n: np.zeros((n, c.clues.text_dim), np.float32)  # replaced by the checkpoint's
    model = LGCD(c, n_src, n_tgt, zeros(n_src), zeros(n_tgt), rngs=nnx.Rngs(0))
    # The checkpoint holds (model, optimizer); serving reads the model part only.
    self.graphdef, like = nnx.split(model)
    try:
      self.state = ckpt.restore_model_state(like, step)
    except ckpt_lib.CheckpointReadError as e:
      raise UserError(f"{e}; retrain or point --checkpoint at an intact one") from e
    self.sampler = sampler or c.model.sampler
    self.steps = int(steps or c.model.sample_steps)
    self.batch_size = int(batch_size)
    spec = c.data.get("eval_length_buckets", "") if length_buckets is None else length_buckets
    try:
      self.length_buckets = (pipeline.parse_length_buckets(spec, c.data.maxlen, "--length_buckets")
                             if spec else None)
    except ValueError as e:
      raise UserError(str(e)) from None
    self.rng = inference.sampling_key(c.seed)
    # The item tables' projected features are constants of the checkpoint: computed once here
    # rather than in every batch.
    self.feats = inference.item_features_step(self.graphdef, self.state)
    # Within a batch too: groups of users sorted by length, each cut to its width (on the CPU).
    self.grouping = inference.default_grouping()
    self._bridge = None

  # --- clues --------------------------------------------------------------------------------------

  @property
  def trained_clue_source(self) -> str | None:
    """Where the training run's clues came from ("bridge:neighbours", "anthropic:<model>", ...)."""
    return self.meta.get("clue_source")

  @property
  def takes_clues(self) -> bool:
    """Whether the model reads clue input at all (DMCDR and EMCDR do not)."""
    return uses_clues(self.config)

  @property
  def bridge_mode(self) -> str:
    return str(self.config.clues.get("bridge_mode", "neighbours"))

  @property
  def bridge_source(self) -> str:
    """The label of a clue computed at serving: "serving:bridge:<mode>"."""
    return f"serving:bridge:{self.bridge_mode}"

  def _make_bridge(self):
    """The training run's bridge, rebuilt from the checkpoint (or LineError saying why it cannot)."""
    c = self.config
    mode, text_weight = self.bridge_mode, float(c.clues.get("text_weight", 0.0))
    what = f"the training run's bridge (clues.bridge_mode={mode!r}, text_weight={text_weight:g})"
    src_dom, tgt_dom = direction_domains(c.direction)
    data = self.meta.get("bridge")
    if mode == "neighbours" and not data:
      raise LineError(f"{what} needs the training overlap users, and this checkpoint stores none; "
                      "give the line a clue")
    pools = ({"overlap": {src_dom: Ragged.from_lists(data["source"]),
                          tgt_dom: Ragged.from_lists(data["target"])}} if data else {})
    ds = PreparedDataset(None, {}, {src_dom: self.src_ids, tgt_dom: self.tgt_ids}, {}, {}, pools, {})
    # The frozen title embeddings in the checkpoint are the ones the training run's bridge used.
    model = nnx.merge(self.graphdef, self.state)
    titles = lambda table: (np.asarray(jax.device_get(table.title_embedding[...]))[1:]
                            if table.has_titles else None)
    try:
      made = bridge.make_bridge(ds, c.direction, mode=mode, k=int(c.clues.bridge_k),
                                text_weight=text_weight, src_title_emb=titles(model.src_table),
                                tgt_title_emb=titles(model.tgt_table))
    except ValueError as e:
      raise LineError(f"{what} cannot be rebuilt from this checkpoint ({e}); give the line a clue"
                      ) from None
    trained = self.trained_clue_source
    if trained != f"bridge:{mode}":
      logging.warning("the model was trained with clues from %s; lines without a clue get %s "
                      "clues computed at serving (labelled %s)", trained or "nowhere",
                      f"bridge:{mode}", self.bridge_source)
    return made

  def _ensure_bridge(self):
    """The serving bridge, built on first use; LineError (for every line needing it) if it cannot be."""
    if self._bridge is None:
      try:
        self._bridge = self._make_bridge()
      except LineError as e:
        self._bridge = e  # every later line gets the same answer without retrying
    if isinstance(self._bridge, LineError):
      raise LineError(str(self._bridge))
    return self._bridge

  def _bridge_top(self, src: np.ndarray, clue_len: int) -> tuple[np.ndarray, np.ndarray]:
    """The training run's bridge's top `clue_len` (scores, items) for users shown only `src`."""
    self._ensure_bridge()
    exclude = -np.ones(src.shape[0], np.int32)  # a served user is not a training overlap user
    values, items = jax.device_get(self._bridge.top(src, exclude, clue_len))
    return np.asarray(values), np.asarray(items)

  # --- parsing ------------------------------------------------------------------------------------

  def _item(self, x, index: dict, n: int, what: str) -> int:
    if isinstance(x, bool):
      raise LineError(f"{what}: {x!r} is not an item id")
    if isinstance(x, int):
      if not 0 <= x < n:
        raise LineError(f"{what}: index {x} is outside [0, {n})")
      return x
    if isinstance(x, str) and x in index:
      return index[x]
    raise LineError(f"{what}: unknown item {x!r}")

  def parse(self, record) -> dict:
    """A validated request: {"user", "src": [indices], "clue": (items, sims, summary) or None}."""
    if not isinstance(record, dict):
      raise LineError("a line must be a JSON object")
    if "user" not in record:
      raise LineError('missing "user"')
    items = record.get("source_items")
    if not isinstance(items, list):
      raise LineError('"source_items" must be a list of item ids')
    if not items:
      raise LineError("empty source history: nothing to recommend from")
    src = [self._item(x, self.src_index, len(self.src_ids), "source_items") for x in items]
    clue = record.get("clue")
    if clue is not None:
      if not isinstance(clue, dict) or not isinstance(clue.get("items"), list):
        raise LineError('"clue" must be an object with an "items" list')
      c_items = [self._item(x, self.tgt_index, len(self.tgt_ids), "clue.items")
                 for x in clue["items"]]
      sims = clue.get("sims", [1.0] * len(c_items))
      if (not isinstance(sims, list) or len(sims) != len(c_items)
          or not all(isinstance(s, (int, float)) and np.isfinite(s) for s in sims)):
        raise LineError('"clue.sims" must be finite numbers, one per clue item')
      summary = clue.get("summary_emb")
      if summary is not None:
        if (not isinstance(summary, list) or len(summary) != self.config.clues.text_dim
            or not all(isinstance(s, (int, float)) and np.isfinite(s) for s in summary)):
          raise LineError(f'"clue.summary_emb" must be {self.config.clues.text_dim} finite numbers')
      clue = (c_items, [float(s) for s in sims], summary)
    elif self.takes_clues:
      self._ensure_bridge()  # a line this checkpoint cannot make a clue for is an error line
    return {"user": record["user"], "src": src, "clue": clue}

  # --- serving ------------------------------------------------------------------------------------

  def _batch(self, requests: list[dict]) -> tuple[dict, list[str]]:
    c = self.config
    b, maxlen, clue_len, text_dim = self.batch_size, c.data.maxlen, c.data.clue_len, c.clues.text_dim
    padded = requests + [requests[-1]] * (b - len(requests))  # padding rows repeat the last user
    src = np.stack([pipeline.pad_left(r["src"], maxlen) for r in padded])
    noise_id = user_keys.noise_ids(r["user"] for r in padded)
    clue = np.zeros((b, clue_len), np.int32)
    clue_sim = np.zeros((b, clue_len), np.float32)
    summary = np.zeros((b, text_dim), np.float32)
    has_summary = np.zeros((b,), np.float32)
    sources = []
    takes_clues = self.takes_clues
    need_bridge = [i for i, r in enumerate(padded) if r["clue"] is None] if takes_clues else []
    if need_bridge:
      # The whole fixed-shape batch goes to the bridge (one compilation); only the rows needing it
      # are read.
      values, items = self._bridge_top(src, min(clue_len, len(self.tgt_ids)))
      keep, sims = bridge.relative_sims(values[need_bridge])  # the training run's bridge clue rule
      items = items[need_bridge]
      for row, i in enumerate(need_bridge):
        n = int(keep[row].sum())
        clue[i, :n] = items[row][keep[row]] + 1
        clue_sim[i, :n] = sims[row][keep[row]]
    for i, r in enumerate(padded):
      if r["clue"] is not None:
        c_items, sims, summ = r["clue"]
        c_items, sims = c_items[:clue_len], sims[:clue_len]
        clue[i, :len(c_items)] = np.asarray(c_items, np.int32) + 1
        clue_sim[i, :len(sims)] = sims
        if summ is not None:
          summary[i] = summ
          has_summary[i] = 1.0
      if i < len(requests):
        sources.append("none" if not takes_clues
                       else "request" if r["clue"] is not None else self.bridge_source)
    if self.length_buckets:  # as evaluation does: the same scores at the width the batch needs
      width = pipeline.bucket_width(int(pipeline.needed_width(src).max()), self.length_buckets)
      src = src[:, maxlen - width:]
    batch = {"src": src, "clue": clue, "clue_sim": clue_sim, "summary": summary,
             "has_summary": has_summary, "noise_id": noise_id}
    return batch, sources

  def recommend_batch(self, requests: list[dict], topk: int) -> list[dict]:
    """Requests (from `parse`, at most batch_size) -> one output record each."""
    topk = min(int(topk), len(self.tgt_ids))
    batch, sources = self._batch(requests)
    # Streamed over item chunks; one key per user (its noise_id), so its output does not depend on
    # its line or batch.
    scores, items = inference.top_k_step(self.graphdef, self.state,
                                         {k: jnp.asarray(v) for k, v in batch.items()},
                                         self.sampler, self.steps, self.rng, topk,
                                         micro_batch=self.grouping[0],
                                         group_widths=self.grouping[1], feats=self.feats)
    scores, items = np.asarray(scores), np.asarray(items)
    return [{"user": r["user"], "items": self.tgt_ids[items[i]].tolist(),
             "scores": [float(x) for x in scores[i]], "clue_source": sources[i]}
            for i, r in enumerate(requests)]

  def serve_lines(self, lines: Iterable[str], topk: int) -> Iterator[dict]:
    """One output record per input line, in order; bad lines give error records, the rest are served."""
    pending: list[tuple[int, dict]] = []
    out: dict[int, dict] = {}
    next_out = 1

    def flush():
      nonlocal pending
      if pending:
        for (lineno, _), rec in zip(pending, self.recommend_batch([r for _, r in pending], topk)):
          out[lineno] = rec
        pending = []

    for lineno, line in enumerate(lines, 1):
      record = None
      try:
        record = json.loads(line)
        pending.append((lineno, self.parse(record)))
      except (json.JSONDecodeError, UnicodeDecodeError) as e:
        out[lineno] = {"line": lineno, "error": f"malformed JSON: {e}"}
      except LineError as e:
        err = {"line": lineno, "error": str(e)}
        if isinstance(record, dict) and "user" in record:
          err = {"user": record["user"], **err}
        out[lineno] = err
      if len(pending) == self.batch_size:
        flush()
      while next_out in out:
        yield out.pop(next_out)
        next_out += 1
    flush()
    while next_out in out:
      yield out.pop(next_out)
      next_out += 1


def _define_flags():
  """CLI flags, defined only when run as a program (importing the module defines none)."""
  flags.DEFINE_string("workdir", None, "A training run's workdir (its best checkpoint).")
  flags.DEFINE_string("checkpoint", None, "A checkpoint directory instead of --workdir.")
  flags.DEFINE_string("input", None, "users.jsonl")
  flags.DEFINE_string("output", None, "recs.jsonl (written atomically)")
  flags.DEFINE_integer("topk", 10, "Items per user.")
  flags.DEFINE_enum("sampler", None, ["ddim", "ddpm"], "Default: the checkpoint's config.")
  flags.DEFINE_integer("steps", None, "DDIM steps. Default: the checkpoint's config.")
  flags.DEFINE_integer("batch_size", 256, "Users per compiled call.")
  flags.DEFINE_string("length_buckets", None, "Cut each batch's source histories to the smallest "
                      "of these widths that holds them (e.g. 4,8,16,32; the same output, one "
                      "compiled call per width; sort the input by history length to gain most). "
                      "Default: the checkpoint's data.eval_length_buckets; '' for none.")


def main(argv):
  del argv
  f = flags.FLAGS
  if not f.input or not f.output:
    cli.fail("--input and --output are required")
  if f.topk < 1 or f.batch_size < 1:
    cli.fail("--topk and --batch_size must be positive")
  if not os.path.isfile(f.input):
    cli.fail(f"--input={f.input}: no such file")
  start = time.perf_counter()
  with cli.user_errors():
    rec = Recommender(f.workdir, f.checkpoint, f.sampler, f.steps, f.batch_size,
                      f.length_buckets)
  out_path = Path(f.output)
  served = failed = 0
  serve_start = time.perf_counter()
  # Written as it is served, renamed into place at the end: a crash leaves no half-written output.
  with open(f.input, encoding="utf-8", errors="replace") as f_in, \
      atomic.atomic_open(out_path) as f_out:
    for record in rec.serve_lines(f_in, f.topk):
      f_out.write(json.dumps(record) + "\n")
      if "error" in record:
        failed += 1
      else:
        served += 1
  elapsed = time.perf_counter() - serve_start
  print(f"served {served} users, {failed} lines with errors, {served / max(elapsed, 1e-9):,.0f} "
        f"users/s (load {serve_start - start:.1f}s); wrote {out_path}", file=sys.stderr)


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=cli.flags_parser)
