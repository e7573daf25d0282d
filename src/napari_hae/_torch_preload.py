"""Load torch's compiler stack (torch._dynamo -> triton) safely inside a process that already has OpenGL.

torch.optim imports torch._dynamo, which imports triton if installed (CUDA builds of torch ship it). triton
bundles its own LLVM; when Mesa's llvmpipe/radeonsi driver (which links the system LLVM) is already loaded for
napari's canvas, the two LLVMs' symbols interpose and importing triton segfaults. Loading it with RTLD_DEEPBIND
makes triton resolve its own symbols first. Called once from the GUI thread before any training runs.
"""

from __future__ import annotations

import os
import sys


def preload_torch_compiler() -> None:
    if "torch._dynamo" in sys.modules:
        return
    deepbind = getattr(os, "RTLD_DEEPBIND", 0)   # Linux only; elsewhere a plain import
    flags = sys.getdlopenflags() if hasattr(sys, "getdlopenflags") else None
    if flags is not None and deepbind:
        sys.setdlopenflags(flags | deepbind)
    try:
        import torch._dynamo  # noqa: F401
    except Exception:  # never block the plugin over an optional compiler
        pass
    finally:
        if flags is not None and deepbind:
            sys.setdlopenflags(flags)
