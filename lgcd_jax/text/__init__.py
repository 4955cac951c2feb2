"""Text encoders for item titles and clue summaries, and the on-disk cache of title embeddings."""
