"""Images and files: arrays <-> float32 RGB in [0, 1] (numpy), image, stack and video files, and the image <->
tensor conversion (torch, in ``tensors`` only).
"""
