"""Token prices per model (USD per million tokens) for the run summary and --dry_run.

The table holds list prices as published for standard (not priority) processing; the Message Batches API
bills half of them. Prices change: a model missing here gets a cost of null with a note, never a guess,
and `--price_per_mtok=IN,OUT` overrides the table for one run. Token counts for --dry_run are estimated
from characters (CHARS_PER_TOKEN), a rough rule for English text; a real run reports the API's counts.
"""

from __future__ import annotations

import math

# model (or alias) -> (input, output) USD per million tokens
PRICES_PER_MTOK: dict[str, tuple[float, float]] = {
    "claude-haiku-4-5": (1.0, 5.0),
    "claude-haiku-4-5-20251001": (1.0, 5.0),
    "claude-sonnet-4-5": (3.0, 15.0),
    "claude-sonnet-4-5-20250929": (3.0, 15.0),
    "claude-sonnet-4-0": (3.0, 15.0),
    "claude-sonnet-4-20250514": (3.0, 15.0),
    "claude-opus-4-5": (5.0, 25.0),
    "claude-opus-4-5-20251101": (5.0, 25.0),
    "claude-opus-4-1": (15.0, 75.0),
    "claude-opus-4-1-20250805": (15.0, 75.0),
    "claude-3-5-haiku-latest": (0.8, 4.0),
    "claude-3-5-haiku-20241022": (0.8, 4.0),
    "claude-3-haiku-20240307": (0.25, 1.25),
}
BATCH_DISCOUNT = 0.5
CHARS_PER_TOKEN = 3.5


def estimate_tokens(chars: int) -> int:
  return int(math.ceil(chars / CHARS_PER_TOKEN))


def price(model: str, override: tuple[float, float] | None = None) -> tuple[float, float] | None:
  if override is not None:
    return override
  return PRICES_PER_MTOK.get(model)


def cost_usd(model: str, input_tokens: int, output_tokens: int, *, batch: bool = False,
             override: tuple[float, float] | None = None) -> tuple[float | None, str | None]:
  """(cost or None, note or None)."""
  p = price(model, override)
  if p is None:
    return None, (f"no price for model {model!r} in pipelines/pricing.py; pass "
                  "--price_per_mtok=IN,OUT to estimate")
  cost = (input_tokens * p[0] + output_tokens * p[1]) / 1e6
  note = None
  if batch:
    cost *= BATCH_DISCOUNT
    note = f"Message Batches price: {BATCH_DISCOUNT:g} x standard"
  return round(cost, 6), note
