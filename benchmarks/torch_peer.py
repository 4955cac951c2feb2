"""A PyTorch peer-style sampler, for a side-by-side with `python -m lgcd_jax.bench` (issue 11).

Written after the structure of the DreamRec / DMCDR research code, not a port of it: a Transformer
encoder over the source sequence gives the condition (its last state), an MLP denoiser on
[x_t, condition, step embedding] predicts x0, classifier-free guidance combines it with the
prediction under a learned null condition, a Python loop runs T DDPM steps, and the result is
scored against every item, then top-10. Fresh weights (throughput does not depend on them).

Not a project dependency: run it with any Python that has torch (README, "Devices and hosts"):

  python benchmarks/torch_peer.py --T=50 --batch=1024 --d=64 --items=27637 --seq_len=50 \
      --layers=2 --heads=2 --cfg_weight=2.0 [--repeats=3] [--json]

or through the bench, which passes its own shapes: `python -m lgcd_jax.bench ... --compare_peer=PY`.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time

import torch
from torch import nn


class PeerSampler(nn.Module):

  def __init__(self, items: int, d: int, seq_len: int, layers: int, heads: int, T: int):
    super().__init__()
    self.T = T
    self.item_emb = nn.Embedding(items + 1, d, padding_idx=0)
    self.pos_emb = nn.Embedding(seq_len, d)
    layer = nn.TransformerEncoderLayer(d, heads, 4 * d, dropout=0.0, batch_first=True,
                                       norm_first=True)
    self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
    self.step_mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.SiLU(), nn.Linear(2 * d, d))
    self.denoiser = nn.Sequential(nn.Linear(3 * d, 2 * d), nn.GELU(), nn.Linear(2 * d, d))
    self.null_cond = nn.Parameter(torch.randn(d) * d**-0.5)
    self.target_items = nn.Parameter(torch.randn(items, d) * d**-0.5)
    betas = torch.linspace(1e-4, 0.02, T, dtype=torch.float64)
    abar = torch.cumprod(1 - betas, 0)
    abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
    self.coef1 = (betas * abar_prev.sqrt() / (1 - abar)).float()
    self.coef2 = ((1 - abar_prev) * (1 - betas).sqrt() / (1 - abar)).float()
    self.sigma = (betas * (1 - abar_prev) / (1 - abar)).sqrt().float()

  def step_embedding(self, t: int, b: int, d: int) -> torch.Tensor:
    half = d // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
    args = t * freqs
    emb = torch.cat([torch.cos(args), torch.sin(args)])[None].expand(b, d)
    return self.step_mlp(emb)

  @torch.no_grad()
  def forward(self, seq: torch.Tensor, cfg_weight: float, k: int = 10):
    b, length = seq.shape
    d = self.item_emb.embedding_dim
    h = self.item_emb(seq) + self.pos_emb(torch.arange(length))[None]
    h = self.encoder(h, src_key_padding_mask=seq == 0)
    cond = h[:, -1]  # left-padded sequences: the last position is the latest item
    null = self.null_cond[None].expand(b, d)
    x = torch.randn(b, d)
    for t in range(self.T - 1, -1, -1):
      step = self.step_embedding(t, b, d)
      x0_c = self.denoiser(torch.cat([x, cond, step], -1))
      x0_u = self.denoiser(torch.cat([x, null, step], -1))
      x0 = x0_u + cfg_weight * (x0_c - x0_u)
      x = self.coef1[t] * x0 + self.coef2[t] * x
      if t > 0:
        x = x + self.sigma[t] * torch.randn_like(x)
    scores = x @ self.target_items.T
    return torch.topk(scores, k, dim=-1)


def main():
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--T", type=int, default=50)
  p.add_argument("--batch", type=int, default=1024)
  p.add_argument("--d", type=int, default=64)
  p.add_argument("--items", type=int, default=27637)
  p.add_argument("--seq_len", type=int, default=50)
  p.add_argument("--layers", type=int, default=2)
  p.add_argument("--heads", type=int, default=2)
  p.add_argument("--cfg_weight", type=float, default=2.0)
  p.add_argument("--repeats", type=int, default=3)
  p.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
  p.add_argument("--json", action="store_true", help="print one JSON line")
  a = p.parse_args()
  if a.threads:
    torch.set_num_threads(a.threads)
  torch.manual_seed(0)
  model = PeerSampler(a.items, a.d, a.seq_len, a.layers, a.heads, a.T).eval()
  gen = torch.Generator().manual_seed(1)
  lengths = torch.randint(1, a.seq_len + 1, (a.batch,), generator=gen)
  seq = torch.randint(1, a.items + 1, (a.batch, a.seq_len), generator=gen)
  seq = torch.where(torch.arange(a.seq_len)[None] >= (a.seq_len - lengths)[:, None], seq, 0)
  model(seq, a.cfg_weight)  # warm-up
  times = []
  for _ in range(a.repeats):
    start = time.perf_counter()
    model(seq, a.cfg_weight)
    times.append(time.perf_counter() - start)
  median = statistics.median(times)
  out = {"T": a.T, "batch": a.batch, "d": a.d, "items": a.items, "seq_len": a.seq_len,
         "layers": a.layers, "heads": a.heads, "cfg_weight": a.cfg_weight,
         "median_s": median, "spread_s": max(times) - min(times),
         "users_per_s": a.batch / median, "best_users_per_s": a.batch / min(times),
         "torch": torch.__version__,
         "threads": torch.get_num_threads()}
  if a.json:
    print(json.dumps(out))
  else:
    print(f"torch peer DDPM-{a.T} + CFG, batch {a.batch}: {out['users_per_s']:,.0f} users/s "
          f"(median {median * 1e3:.1f} ms over {a.repeats}, torch {out['torch']}, "
          f"{out['threads']} threads)")


if __name__ == "__main__":
  main()
