"""Amazon Movie (A) -> Book (B), prepared from the LLMCDSR release (same layout as food-kitchen):

  python -m lgcd_jax.data.prepare --source=llmcdsr --input=DIR/movie-book --output=prepared/movie-book
"""

from configs import default


def get_config():
  return default.get_real_data_config("prepared/movie-book", "Movies & TV|Books").lock()
