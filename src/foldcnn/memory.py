"""Keep freed memory in the process, so that large activations are not faulted in on every call.

glibc's malloc serves every block above 32 MiB (its largest mmap threshold) with a fresh ``mmap``
and gives it back with ``munmap`` when freed. A CNN's activations at a large batch are such
blocks: lol-gold-fraction's original at 512 images in bf16 writes a 37 MiB tensor per layer, so
every call faulted in 51 MiB of new pages and ran at a fraction of its rate at
256 images (docs/notebook/2026-11-21-cpu-memory.md). ONNX Runtime has its own
arena and is not affected; torch eager and torch.compile on CPU are.

``keep_freed_memory()`` asks glibc (``mallopt``) to serve large blocks from its heap and not to
trim freed memory back to the OS: after the first call, a model's activations reuse the same
pages. The cost is that the process keeps the memory of its largest call until it exits, which is
what a process that runs inference over and over wants anyway. It is process-wide; the torch CPU
backends call it when they are built, and evaluation (``foldcnn.train.loop.predict_logits``, 1,024
images per call) when it runs on the CPU. ``FOLDCNN_KEEP_MEMORY=0`` in the environment turns
it off; on a C library without ``mallopt`` (macOS, musl) it does nothing.

Threads: glibc gives other threads their own arenas, whose large blocks it still maps and unmaps.
A model run from a worker thread (``foldcnn serve`` runs it in a thread pool) may keep faulting:
in a check here a fresh thread faulted in a 40 MiB block on every call, with this setting or with
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=2147483647 MALLOC_ARENA_MAX=1`` in the environment.
Calls from the main thread (``foldcnn predict``, ``bench``, ``eval``, ``train``) are covered.
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading

__all__ = ["ENV_VAR", "keep_freed_memory", "memory_policy"]

ENV_VAR = "FOLDCNN_KEEP_MEMORY"
_M_TRIM_THRESHOLD = -1  # glibc malloc.h
_M_MMAP_MAX = -4
_TRIM_NEVER = 2**31 - 1  # the largest value mallopt takes: trim only past 2 GiB of free heap top

_lock = threading.Lock()
_state: str | None = None  # what keep_freed_memory did, once it has run


def _mallopt():
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None).mallopt  # the C library this process already uses
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


def keep_freed_memory() -> bool:
    """Turn off glibc's mmap for large blocks and its heap trimming, once per process.

    Returns True when the setting is in effect (now or from an earlier call). Off when the
    environment sets ``FOLDCNN_KEEP_MEMORY=0`` or the C library has no ``mallopt``."""
    global _state
    with _lock:
        if _state is None:
            if os.environ.get(ENV_VAR, "1").strip().lower() in ("0", "false", "no", "off"):
                _state = f"system default ({ENV_VAR}=0)"
            elif (mallopt := _mallopt()) is None:
                _state = "system default (no glibc mallopt here)"
            elif mallopt(_M_MMAP_MAX, 0) == 1 and mallopt(_M_TRIM_THRESHOLD, _TRIM_NEVER) == 1:
                _state = "kept: glibc mmap off, heap trim off (foldcnn.memory)"
            else:
                _state = "system default (mallopt refused)"
        return _state.startswith("kept")


def memory_policy() -> str:
    """What ``keep_freed_memory`` did in this process, in words ("not set" before it ran)."""
    return _state or "not set"
