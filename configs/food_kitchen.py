"""Amazon Food (A) -> Kitchen (B), prepared from the LLMCDSR release:

  python -m lgcd_jax.data.prepare --source=llmcdsr --input=../shared/data/food-kitchen \
      --output=prepared/food-kitchen
"""

from configs import default


def get_config():
  return default.get_real_data_config("prepared/food-kitchen",
                                      "Grocery & Gourmet Food|Home & Kitchen").lock()
