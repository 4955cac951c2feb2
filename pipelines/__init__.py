"""LLM clue generation (pseudo-overlap, DESIGN.md §2 and §5).

`python -m pipelines.pseudo_overlap` turns each user's source-domain history into a language clue (a
preference summary plus target-domain item descriptions mapped to real target items) and writes the
`ClueSet` shards that training reads (`lgcd_jax.data.clue_records`). Modules, in the order the data flows:

  options.py    the run's options, one per command-line flag (name, default, help)
  users.py      who needs a clue in a direction, and their source histories
  prompts.py    the versioned prompt (PROMPT_VERSION) and the repair follow-up
  cache.py      every LLM response on disk, keyed by sha256(model, PROMPT_VERSION, prompt)
  backends/     where answers come from: Messages API, Message Batches API, or a replay file (retry.py:
                the retry policy; one module per backend)
  parsing.py    tolerant JSON extraction and validation of an answer
  mapping.py    descriptions -> nearest target items (cosine of text embeddings), summary embeddings
  pricing.py    token prices per model, for the summary and --dry_run
  llm_run.py    an LLM run: prompts -> answers -> parse / repair -> mapping -> shards and failures
  bridge_run.py a bridge run (no LLM): `lgcd_jax.clues.bridge` clues for the selected users
  shards.py     the clue shards under --out, merged with an earlier run's rows
  summary.py    the run summary, one builder for every backend
  pseudo_overlap.py   the CLI (flags from options.py) and `run(config, Options)`
  fake_anthropic.py     a local stand-in for the Anthropic API (tests and the benchmark below)
  bench_fake_server.py  throughput against that fake server
"""
