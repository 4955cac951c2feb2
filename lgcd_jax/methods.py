"""The methods a run can be (config.method): one list, read by the runner, the config check and the
suites (a module of constants only, so that anything may import it)."""

# Fitted in closed form, deterministic.
BASELINES = ("popularity", "cooccurrence", "mf", "mf_recency", "llm_only")
TRAINED = ("emcdr", "dmcdr", "lgcd")  # trained by lgcd_jax.train, once per seed
METHODS = BASELINES + TRAINED
