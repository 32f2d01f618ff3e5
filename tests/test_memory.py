"""foldcnn.memory: large activations reuse their pages instead of being faulted in per call.

Each check runs in a fresh interpreter: the setting is process-wide and this test process may
already have it from another test's backend.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt is Linux-only")

# Faults of the second 64 MiB allocation (16,384 pages): glibc's default maps it afresh, so it
# faults in every page; with the setting it reuses the pages the first one left in the heap.
# The probe calls glibc's malloc directly, since that is what the setting governs: numpy asks
# for transparent huge pages on large arrays (a few faults per 2 MiB), and torch 2.13's CPU
# allocator on 2026-12-06 (AMD EPYC, kernel 6.18) faulted its second 64 MiB block in even with
# the setting, so neither is a reliable probe of the glibc policy.
_FAULTS = """
import ctypes, json, resource
from foldcnn.memory import keep_freed_memory, memory_policy

libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
SIZE = 64 * 2**20

def alloc_write_free():
    p = libc.malloc(SIZE)
    ctypes.memset(p, 1, SIZE)
    libc.free(p)

def second_alloc_faults():
    alloc_write_free()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    alloc_write_free()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

default = second_alloc_faults()
kept = keep_freed_memory()
after = second_alloc_faults()
print(json.dumps({"default": default, "kept": kept, "after": after, "policy": memory_policy()}))
"""


def _run(code: str, **env) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


@linux_only
def test_large_blocks_stop_faulting_after_keep_freed_memory():
    r = _run(_FAULTS, FOLDCNN_KEEP_MEMORY="1")
    assert r["kept"] is True and r["policy"].startswith("kept")
    assert r["default"] > 8000, r  # the problem: every page of the new 64 MiB block faulted in
    assert r["after"] < 1000, r  # the fix: the block comes back from the heap, pages already there


@linux_only
def test_environment_turns_it_off():
    r = _run(_FAULTS, FOLDCNN_KEEP_MEMORY="0")
    assert r["kept"] is False and "FOLDCNN_KEEP_MEMORY=0" in r["policy"]
    assert r["after"] > 8000, r  # still glibc's default


def test_cpu_torch_backends_apply_it():
    code = """
import json
from foldcnn.backends import create_backend
from foldcnn.memory import memory_policy
from foldcnn.models import create_model
before = memory_policy()
create_backend(create_model("sot-coin-count", fold=2), "eager", max_batch=4)
print(json.dumps({"before": before, "after": memory_policy()}))
"""
    r = _run(code, FOLDCNN_KEEP_MEMORY="1")
    assert r["before"] == "not set"
    want = "kept" if sys.platform.startswith("linux") else "system default"
    assert r["after"].startswith(want), r


def test_cpu_evaluation_applies_it():
    code = """
import json, torch
from foldcnn.memory import memory_policy
from foldcnn.models import create_model
from foldcnn.train.loop import predict_logits
before = memory_policy()
logits = predict_logits(create_model("sot-coin-count", fold=2), torch.zeros(6, 3, 17, 40, dtype=torch.uint8))
print(json.dumps({"before": before, "after": memory_policy(), "shape": list(logits.shape)}))
"""
    r = _run(code, FOLDCNN_KEEP_MEMORY="1")
    assert r["before"] == "not set" and r["shape"][0] == 6
    want = "kept" if sys.platform.startswith("linux") else "system default"
    assert r["after"].startswith(want), r
