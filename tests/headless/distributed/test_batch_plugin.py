"""The worker plugin undoes dask's small malloc trim threshold (a 1.9x slowdown of torch on a worker)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("distributed")

# In a fresh process (glibc reads MALLOC_TRIM_THRESHOLD_ at start): a 1 MiB block is mmapped while
# the variable rules (glibc's sliding threshold is off), and comes from the heap once undone.
PROBE = textwrap.dedent(
    """
    import ctypes, ctypes.util, sys
    from napari_nst.core.distributed.worker_plugin import restore_malloc_thresholds

    libc = ctypes.CDLL(ctypes.util.find_library("c"))
    class Info(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost".split()]
    libc.mallinfo2.restype = Info
    libc.malloc.restype = ctypes.c_void_p

    def mmapped_after_malloc():
        before = libc.mallinfo2().hblks
        p = libc.malloc(1 << 20)
        after = libc.mallinfo2().hblks
        libc.free(ctypes.c_void_p(p))
        return after - before

    first = mmapped_after_malloc()
    undone = restore_malloc_thresholds() if sys.argv[1] == "restore" else "-"
    print(first, undone, mmapped_after_malloc())
    """
)


def _probe(env: dict[str, str], restore: bool = True) -> list[str]:
    arg = "restore" if restore else "leave"
    out = subprocess.run([sys.executable, "-c", PROBE, arg], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_dask_trim_threshold_is_undone_so_tensors_stay_in_the_heap():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    dask = {**env, "MALLOC_TRIM_THRESHOLD_": "65536"}
    assert _probe(dask, restore=False) == ["1", "-", "1"]  # every large tensor mmapped afresh: the slowdown
    assert _probe(dask) == ["1", "True", "0"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt")
def test_without_dask_setting_glibc_is_left_alone():
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_TRIM_THRESHOLD_"}
    # glibc's own threshold starts at 128 KiB and slides up to a freed mmapped block's size
    assert _probe(env) == ["1", "False", "0"]
