"""Raw data -> prepared dataset -> batches. See `prepared.py` for the on-disk format."""
