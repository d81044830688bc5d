"""Networks, one per file: :mod:`.mscn` (M-SCN heatmap regression, 2D and 3D)."""
