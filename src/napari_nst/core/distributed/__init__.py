"""Batches and stacks on a dask.distributed cluster: the client side (``batch``, ``stack``), the tasks a dask
worker runs (``batch_task``, ``stack_task``), the worker plugin, the batch manifest.
"""
