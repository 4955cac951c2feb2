"""The methods a run can be (config.method): one list, read by the runner, the config check and the
suites (a module of constants only, so that anything may import it)."""

BASELINES = ("popularity", "cooccurrence", "mf", "mf_recency", "llm_only")  # fitted in closed form, deterministic
TRAINED = ("emcdr", "dmcdr", "lgcd")  # trained by lgcd_jax.train, once per seed
METHODS = BASELINES + TRAINED
