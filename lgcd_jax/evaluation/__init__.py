"""Ranking metrics and the evaluation loop shared by LGCD and every baseline."""
