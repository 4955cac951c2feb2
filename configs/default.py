"""Shared defaults for every config. Other configs start from `get_base_config()` and override.

The config is locked by `config_flags`, so `--config.model.dd=1` (a typo) is an error.
"""

import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.data_dir = ""  # a prepared dataset (python -m lgcd_jax.data.prepare)
  c.direction = "A2B"  # "A2B" or "B2A": source domain -> target domain
  c.method = "lgcd"  # lgcd | popularity | cooccurrence | mf | emcdr | dmcdr | llm_only
  c.seed = 0
  c.workdir = ""  # --workdir flag wins; empty means workdirs/<config name>
  # Synthetic demo data is prepared in-process when data_dir is empty and this is set.
  # overlap_share: share of training users with both domains; eval_users: held-out users per
  # (direction, split) at scale 1.0 (the world scales it).
  c.synthetic = ml_collections.ConfigDict({"enabled": False, "scale": 1.0, "seed": 0,
                                           "overlap_share": 0.3, "eval_users": 200})

  c.data = ml_collections.ConfigDict()
  c.data.maxlen = 50  # sequences are truncated to their most recent `maxlen` items
  c.data.clue_len = 20  # clue items per user
  c.data.batch_size = 256
  c.data.eval_batch_size = 512
  # Real pairs: "whole" = an overlap user's whole source vs whole target sequence; "next" = one pair
  # per target item, the source items before it vs that item (shaped like an eval user).
  c.data.real_pairs = "whole"
  # Training batches cut to the sequence width they need (lgcd_jax/data/pipeline.py, "Length
  # buckets"): "8,16,32" cuts every batch's src, tgt and seq columns to the smallest of these widths
  # (or maxlen) that holds its longest row. Sequences are left-padded and the encoder masks padding,
  # so only the work changes (and the shapes of the dropout masks). "" keeps the maxlen width.
  c.data.length_buckets = ""
  # With length buckets: > 0 sorts each window of this many consecutive batches by source length
  # before cutting it into batches (whose order in the window is then shuffled), so most batches
  # are short; 0 keeps the batches as the plain per-epoch shuffle draws them.
  c.data.length_window = 0
  # Evaluation batches the same way, exactly: "4,8,16,32" sorts each split's users by source length
  # and cuts each batch's src to the smallest of these widths (or maxlen) that holds it. The users,
  # their noise and their scores are the same as with maxlen-wide batches (up to float rounding);
  # only the work shrinks, at one compiled sampler per width. "" keeps every batch maxlen wide.
  c.data.eval_length_buckets = ""

  # Language clues (pseudo-overlap). An empty clue_dir means: compute bridge clues in-process.
  c.clues = ml_collections.ConfigDict()
  c.clues.clue_dir = ""
  c.clues.bridge_k = 50  # neighbours for the bridge
  c.clues.bridge_mode = "neighbours"  # neighbours | text
  c.clues.text_weight = 0.0  # weight of title-embedding similarity in the bridge's neighbour score
  c.clues.encoder = "hashing"  # hashing | minilm
  c.clues.encoder_path = ""  # a sentence-transformers folder for minilm
  c.clues.text_dim = 384
  # The least share of valid and of test users a clue_dir must have a clue for (1.0: every one); the
  # users without one would be evaluated with an empty clue. Runs log the counts per pool and split.
  c.clues.min_eval_coverage = 1.0
  c.clues.domain_names = ""  # "A name|B name" for LLM prompts, e.g. "Grocery & Gourmet Food|Home & Kitchen"

  c.baselines = ml_collections.ConfigDict()
  c.baselines.mf_rank = 64
  c.baselines.mf_item_power = 0.25  # fold-in scores x deg(item)^power; 0.25 chosen on Food-Kitchen valid
  # mf_recency: the fold-in weighs the i-th most recent source item mf_recency ** i (0.5 chosen on
  # Food-Kitchen valid, both directions; LGCD's model.anchor_recency starts from the same profile).
  c.baselines.mf_recency = 0.5
  c.baselines.cooc_normalize = False

  c.model = ml_collections.ConfigDict()
  c.model.d = 64
  c.model.heads = 2
  c.model.encoder_layers = 2
  c.model.denoiser_layers = 2
  c.model.dropout = 0.1
  c.model.num_experts = 4
  c.model.diffusion_steps = 100  # T
  # Cosine reaches noise (abar_T ~ 0) at any T; linear 1e-4..0.02 with T=50..100 stops at
  # abar_T ~ 0.6..0.36, so the denoiser could always copy x_t and never learn to use its conditions.
  c.model.beta_schedule = "cosine"  # linear | cosine | exp
  c.model.beta_start = 1e-4
  c.model.beta_end = 0.02
  c.model.conditioning = "cross_attention"  # cross_attention | linear | cfg | collab_only | semantic_only
  c.model.cfg_dropout = 0.1
  c.model.cfg_weight = 2.0
  c.model.id_init = "random"  # random | mf | mf_scores: ID embeddings from the joint MF's item factors
  # "mf": x0_hat is generated around a learned position-weighted sum of the source items' features
  # (with id_init="mf_scores", the joint MF's fold-in at initialisation); "none": from scratch.
  c.model.anchor = "none"  # none | mf
  # The anchor's initial weight of the i-th most recent source item is anchor_recency ** i.
  c.model.anchor_recency = 1.0
  # The anchor's weights when sampling: "trained", or "initial" (the anchor_recency profile, scale 1).
  # A training pair's source items were in the joint MF that initialised the tables, together with
  # its target items, so every source item points at them however old it is; an eval user was never
  # in the MF, and for it the recency profile holds (BUILD_NOTES, issue 12, seventh session).
  c.model.anchor_at_sampling = "trained"
  # What x0 (the diffusion's and the guesser's target) is for a pair: "encoder" = Enc_T of the target
  # sequence (DESIGN.md §2); "items" = the tgt_weight-weighted mean of the target items' features,
  # the vectors every item is scored against, so the MSE and the recommendation loss pull x0_hat the
  # same way (Enc_T's last state is trained to predict the item after the sequence, not its items).
  c.model.x0 = "encoder"
  c.model.item_bias = False  # score = <x0_hat, e_i> + b_i (a learned per-item popularity prior)
  c.model.item_bias_init = "zero"  # zero | log_popularity (over all target-domain training users)
  c.model.use_diffusion = True
  c.model.use_pseudo = True
  c.model.use_clues = True  # False: no clue input at all (what method=dmcdr implies)
  c.model.use_alignment = True
  c.model.use_guesser = True
  c.model.use_moe = True
  c.model.cyclic_batch = True
  c.model.cycle = "real,pseudo,pseudo"
  c.model.guess_start_step = 50  # T' < T: the reverse chain starts from the guess noised to T'
  c.model.sampler = "ddim"  # ddpm | ddim
  c.model.sample_steps = 10  # S for DDIM

  c.train = ml_collections.ConfigDict()
  c.train.encoder_steps = 500
  c.train.steps = 2000
  c.train.lr = 1e-3
  c.train.weight_decay = 0.0
  # > 0: evaluate, select and serve an exponential moving average of the weights (lgcd_jax/ema.py)
  c.train.ema_decay = 0.0
  c.train.warmup_steps = 100
  c.train.grad_clip = 1.0
  c.train.alignment_weight = 0.1  # lambda
  c.train.alignment_temperature = 0.1
  c.train.rec_weight = 1.0
  c.train.guesser_weight = 1.0
  c.train.guesser_rec_weight = 1.0  # rec loss on the guess (the reverse chain's start)
  c.train.encoder_negatives = 256  # shared sampled negatives of the next-item loss (<=0: full)
  c.train.pseudo_weight = 0.3
  # model.anchor = "mf": weight of the mean squared size of what the guesser and the denoiser add to
  # the anchor (0: unpenalised).
  c.train.residual_weight = 0.0
  # Share of diffusion rows whose x_t is the guess (gradient stopped) noised to a t < T', not x0
  # noised: the sampler starts the chain from the noised guess, so the denoiser learns to correct
  # the guess towards x0 on the inputs it is given at sampling (0: every x_t from x0).
  c.train.from_guess_share = 0.0
  # Parameters stage 2 must not move (comma-separated dotted prefixes of parameter paths, e.g.
  # "src_table.id_embedding,tgt_table.id_embedding": the item tables stay the all-user ones).
  c.train.stage2_frozen = ""
  c.train.anchor_lr_scale = 1.0  # the anchor's parameters (model.anchor = "mf") step this many times faster
  # > 0: the diffusion stage keeps the encoders' next-item loss, with this weight (joint fine-tuning).
  c.train.joint_encoder_weight = 0.0
  c.train.eval_every = 250
  c.train.log_every = 50
  c.train.patience = 4  # evals without validation improvement before stopping
  c.train.select_metric = "sampled/HR@5"
  c.train.checkpoint_every = 250
  return c


def get_real_data_config(data_dir: str, domain_names: str) -> ml_collections.ConfigDict:
  """Settings shared by the real-data configs (food_kitchen, movie_book): only the data differs."""
  c = get_base_config()
  c.data_dir = data_dir
  c.clues.domain_names = domain_names
  c.data.maxlen = 50
  c.data.batch_size = 256
  c.model.d = 64
  c.train.encoder_steps = 2000
  c.train.steps = 6000
  c.train.eval_every = 500
  c.train.checkpoint_every = 500
  return c
