"""Numeric core: numpy only, vectorized over prompts, ragged n handled by NaN padding."""
