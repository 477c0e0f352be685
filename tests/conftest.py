"""Test-session setup shared by all tests.

Keep this file free of torch imports (the torch-free tests must stay fast).

Why triton is blocked here
--------------------------
Under Xvfb, napari/vispy render through Mesa's software OpenGL driver, and
Debian's Mesa loads its own LLVM (libLLVM-15, with RTLD_GLOBAL) into the
process as soon as a GL context exists. Triton's extension (triton/_C/libtriton)
bundles a second LLVM; loading it *after* Mesa segfaults the whole interpreter.
torch pulls triton in through ``torch._dynamo`` on ``import torchvision`` and on
the construction of any ``torch.optim`` optimizer, so a torch test that runs
after a GUI test in the same pytest process would kill the run (exit 139).
No torch environment variable (TORCHDYNAMO_DISABLE, TORCH_COMPILE_DISABLE, ...)
prevents that import. The CPU-only tests never need triton, so make
``import triton`` raise ImportError in the test process; torch treats that as
"triton not installed". Child processes started by tests are unaffected.
"""

import sys

if "triton" not in sys.modules:
    sys.modules["triton"] = None  # type: ignore[assignment]
