"""Training loops, datasets and evaluation metrics per stage."""
