"""Producers of language clues (pseudo-overlap, DESIGN.md §2 and §5); `bridge` is the offline stand-in."""
