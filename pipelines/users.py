"""Who needs a language clue in a direction, in a fixed order (so that --limit and resuming agree).

Users needing clues in direction S->T (DESIGN.md §2): the single-domain source pool ("A_only" for A2B),
the training overlap users (shown only their source side), and the direction's valid and test users.
They are listed pool by pool in that order, each pool in its stored order.

A user is identified by its pool and row, never by its id alone: the uid column of the LLMCDSR files is a
line index per file (user "5" of valid.txt and user "5" of train_overlap.txt are different people).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from lgcd_jax.data.prepared import PreparedDataset, direction_domains

USER_CHOICES = ("all", "single", "A_only", "B_only", "overlap", "valid", "test")


@dataclasses.dataclass(frozen=True)
class UserTask:
  """One user to write a clue for."""

  pool: str  # the ClueSet pool: "A_only" / "B_only" / "overlap" / "valid" / "test"
  user_id: str  # unique within its pool only (see the module docstring)
  source: np.ndarray  # source-domain item indices, in time order (oldest first)
  row: int = -1  # the user's row within its pool (with `pool`, what identifies the user)


def clue_pools(direction: str, users: str = "all") -> list[str]:
  """The ClueSet pools a `--users` choice selects in `direction`."""
  src, tgt = direction_domains(direction)
  single = f"{src}_only"
  if users == "all":
    return [single, "overlap", "valid", "test"]
  if users in ("single", single):
    return [single]
  if users == f"{tgt}_only":
    raise ValueError(f"{tgt}_only users have no {src} history, so they need no clue in {direction}; "
                     f"use --users={single} (the single-domain source pool)")
  if users in ("overlap", "valid", "test"):
    return [users]
  raise ValueError(f"--users must be one of {USER_CHOICES}, got {users!r}")


def select_users(ds: PreparedDataset, direction: str, users: str = "all",
                 limit: int = 0) -> list[UserTask]:
  """The users of the chosen pools in order; the first `limit` of them when limit > 0."""
  src, _ = direction_domains(direction)
  tasks: list[UserTask] = []
  for pool in clue_pools(direction, users):
    if pool in ("valid", "test"):
      ev = ds.eval[direction][pool]
      ids, seqs = ev.user_ids, ev.source
    else:
      ids, seqs = ds.pool_user_ids[pool], ds.pools[pool][src]
    for i in range(len(ids)):
      if limit > 0 and len(tasks) >= limit:
        return tasks
      tasks.append(UserTask(pool=pool, user_id=str(ids[i]), source=np.asarray(seqs[i]), row=i))
  return tasks


def held_out_histories(ds: PreparedDataset) -> set[tuple[str, tuple[int, ...]]]:
  """(domain, source sequence) of every held-out (valid/test) user of either direction.

  What identifies a held-out user across files: ids do not (a per-file line index in the LLMCDSR
  release), so a training overlap user whose history on either side equals one of these is never an
  in-context example (it may be the same person, whose target items are an eval label).
  """
  out: set[tuple[str, tuple[int, ...]]] = set()
  for direction, splits in ds.eval.items():
    src, _ = direction_domains(direction)
    for ev in splits.values():
      out.update((src, tuple(int(x) for x in seq)) for seq in ev.source)
  return out
