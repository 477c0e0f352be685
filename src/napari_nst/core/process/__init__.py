"""The engine in a warm child process: the parent's side (``client``: EngineProcess, StackEngineProcess) and the
child's (``child``).
"""
