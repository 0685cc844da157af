"""Reusable working memory for the CPU draws, one set per thread.

A fresh tensor of a few megabytes is fresh pages on most allocators: the first write to each page
faults, and a nucleus draw that makes a dozen such [rows, V] temporaries a step spends as long on
that as on its arithmetic (measured: a flat Dream step's draw over 1024 places took 35 ms with fresh
temporaries, 19 ms when the C allocator was told to keep freed memory). The draws write their large
temporaries here instead. A scratch tensor's contents are undefined, it is valid until the next
`scratch` call of the same name on the same thread, and it must never be returned to a caller.
"""

from __future__ import annotations

import threading

import torch

_LOCAL = threading.local()


def scratch(name: str, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised CPU tensor of `shape` and `dtype`, the same memory at every call with this
    name and dtype on this thread (grown when a call needs more)."""
    store = _LOCAL.__dict__.setdefault("store", {})
    size = 1
    for n in shape:
        size *= n
    held = store.get((name, dtype))
    if held is None or held.numel() < size:
        with torch.inference_mode(False):  # a normal tensor: writable in and out of inference mode
            held = store[(name, dtype)] = torch.empty(size, dtype=dtype)
    return held[:size].view(shape)
