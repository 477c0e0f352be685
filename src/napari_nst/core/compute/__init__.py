"""Where and how a run computes: device, precision, layout and pooling per device (``device``), and the memory
model (``memory``, no torch).
"""
