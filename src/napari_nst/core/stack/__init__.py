"""Stacks and time-lapses: frames read one at a time (``frames``, numpy), optical flow (``flow``), the stack
engine (``engine``).
"""
