"""Baselines that run through the same data and evaluation code as LGCD.

Each baseline is fitted on the training pools of a prepared dataset and exposes
`score(batch) -> [B, num_target_items]` over the eval-batch contract (`batch["src"]` holds the user's
source items + 1, left-padded with 0).
"""
