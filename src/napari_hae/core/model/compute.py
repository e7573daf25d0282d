"""Where and how the DKL computes: its device, torch threads, default dtype and exact solves.

``device="auto"`` (the default) takes the first CUDA GPU when torch sees one, else the CPU.

Tensors follow the model's device where they are made (weights are drawn on the CPU, so the initial network is the
same everywhere); ``tests/test_device.py`` checks this without a GPU by running the model with torch's default
device set to "meta". A GPU changes the arithmetic's rounding, not the maths: the same test file requires its
posterior to be the CPU's within 1e-2 standardised units where a GPU is present (CI has none), and a run's picks can
differ at near-ties as they do between thread counts. With ``"auto"`` a failure on the GPU (out of memory on a small
card, a driver fault) does not stop the run: the model moves to the CPU for the rest of it, says so in the trace's
events, and repeats the failed fit or prediction there. ``"cuda"`` / ``"cuda:N"`` insist on the GPU (its errors are
raised); ``"cpu"`` never touches it.
"""

from __future__ import annotations

import contextlib
import logging

import gpytorch
import torch

log = logging.getLogger(__name__)

CPU = torch.device("cpu")


def resolve(spec: str) -> torch.device:
    """The torch device for a model's ``device`` parameter ("auto", "cpu", "cuda" or "cuda:N")."""
    from ..errors import HAEInputError

    spec = str(spec).strip().lower()
    if spec == "auto":
        return torch.device("cuda:0") if torch.cuda.is_available() else CPU
    if spec == "cpu":
        return CPU
    kind, _, index = spec.partition(":")
    if kind != "cuda" or (index and not index.isdigit()):
        raise HAEInputError(f"Model device {spec!r} is not 'auto', 'cpu', 'cuda' or 'cuda:N'.",
                            "use --model-param device=auto (a GPU when there is one, else the CPU).")
    if not torch.cuda.is_available():
        raise HAEInputError(f"Model device {spec!r} was asked for, but torch sees no CUDA GPU "
                            f"(torch {torch.__version__}, built for CUDA {torch.version.cuda}).",
                            "use --model-param device=auto or device=cpu, or install the torch build for this "
                            "machine's CUDA driver.")
    device = torch.device(spec if index else "cuda:0")
    if device.index >= torch.cuda.device_count():
        raise HAEInputError(f"Model device {spec!r}: torch sees {torch.cuda.device_count()} CUDA GPU(s), "
                            f"numbered from 0.", "use --model-param device=cuda:0 or device=auto.")
    return device


def _ours(model: dict) -> str | None:
    """The ``device`` of a model spec whose model takes this module's devices (a plug-in's may mean another)."""
    from .base import MODELS

    spec, name = (model.get("params") or {}).get("device"), model.get("name", "dkl")
    if spec is None or name not in MODELS.names():   # an unknown model is refused where it is built
        return None
    return spec if getattr(MODELS.get(name).obj, "device_param", False) else None


def check(model: dict) -> None:
    """Refuse a model spec (``{"name", "params"}``) whose device this machine cannot use (:func:`resolve`)."""
    if (spec := _ours(model)) is not None:
        resolve(spec)


def usable(model: dict) -> str | None:
    """For resuming where the device cannot be asked (the dock): "auto" where ``model``'s recorded device does not
    work on this machine, else None (keep it)."""
    from ..errors import HAEInputError

    try:
        check(model)
    except HAEInputError:
        return "auto"
    return None


def describe(device: torch.device) -> str:
    """"cuda:0 (NVIDIA H100 80GB HBM3)" or "cpu"."""
    if device.type != "cuda":
        return str(device)
    return f"{device} ({torch.cuda.get_device_name(device)})"


class OnDevice:
    """Runs a model's fits and predictions on its device, and moves it to the CPU for good when the GPU fails
    under ``device="auto"`` (see the module docstring). The model provides ``device_spec``, ``device`` and
    ``_to_device(device)`` (move its modules, drop what was computed on the old device); ``_device_events()``
    hands over what happened since it was last asked."""

    device_param = True   # takes a ``device`` of this module's kind (see :func:`check`)
    device_spec = "cpu"
    device = CPU
    _pending: tuple[str, ...] = ()   # events not yet handed over (a fit report takes them)

    def _device_events(self) -> list[str]:
        out, self._pending = list(self._pending), ()
        return out

    def _note(self, message: str):
        log.warning(message)
        self._pending = (*self._pending, message)

    def _run_on_device(self, what: str, fn, *args):
        try:
            return fn(*args)
        except RuntimeError as exc:   # CUDA out of memory, driver faults, a tensor left on the other device
            if self.device.type == "cpu" or self.device_spec != "auto" or numerical(exc):
                raise
            self._note(f"The model's {what} failed on {describe(self.device)} ({type(exc).__name__}: "
                       f"{str(exc)[:120]}); the model runs on the CPU from here on.")
            self._to_device(CPU)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            return fn(*args)


def numerical(exc: Exception) -> bool:
    """Whether an error is the GP's arithmetic (handled by the fit's retries), not the device's."""
    s = str(exc).lower()
    return any(w in s for w in ("cholesky", "positive definite", "singular", "nan", "not psd", "linalg"))


@contextlib.contextmanager
def _torch_setting(get, put, value):
    """Run with a process-wide torch setting at ``value``, restoring it afterwards."""
    prev = get()
    if prev == value:
        yield
        return
    put(value)
    try:
        yield
    finally:
        put(prev)


def dtype_scope(dtype):
    """Run with torch's default dtype set to ``dtype``, restoring it afterwards.

    Some libraries change the process-wide default (AtomAI's models call ``torch.set_default_tensor_type``), which
    would silently switch parts of gpytorch's arithmetic to float64; the DKL model pins its own dtype instead.
    """
    return _torch_setting(torch.get_default_dtype, torch.set_default_dtype, dtype)


def threads_scope(n: int):
    """Run with ``n`` torch intra-op threads, restoring the previous count afterwards. The count changes the order
    of floating-point reductions, so a fixed count makes a run's picks the same whatever the machine's core count
    (not across kinds of CPU: their vector kernels round some sums differently, and a run's path can part at a
    near-tie)."""
    return _torch_setting(torch.get_num_threads, torch.set_num_threads, n)


MAX_CHOLESKY = 8192


def exact():
    """Cholesky solves up to MAX_CHOLESKY training points. gpytorch switches to conjugate gradients with random
    probe vectors above 800 by default: slower at our sizes (the soak benchmark's step time doubled past 800
    points) and not reproducible run to run."""
    return gpytorch.settings.max_cholesky_size(MAX_CHOLESKY)
