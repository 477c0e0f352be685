"""The optimisation: the loop as a generator of progress records (``engine``), the L-BFGS it uses, the image
pyramid it moves.
"""
