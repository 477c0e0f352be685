"""The objective: the paper's losses as pure functions and composable terms, the artistic controls that change it
(styles, regions, colour, strength), its evaluation in tiles and as a CUDA graph.
"""
