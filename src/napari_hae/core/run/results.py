"""The immutable results of a step's three parts: *decide* -> :class:`Decision`, *measure* -> :class:`Measurement`,
*record* -> :class:`StepResult`.

A decision is made from the records so far and does not change the run; a measurement is what the instrument
returned at a position and does not change the run either; only recording a measurement (with the decision that
chose it) adds records and so changes the run's state. The parts are separate so that point k can be measured
while point k + 1 is decided (:meth:`Experiment.decide <napari_hae.core.run.experiment.Experiment.decide>` takes
the positions still being measured as ``pending``). The dock and the command line draw from these results; every
array in them is read-only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

import numpy as np

from ..model.base import Posterior
from ..record.trace import RecordColumns


def frozen_array(a) -> np.ndarray:
    """``a`` as an array nobody can write to (a view; the caller's array stays writable)."""
    out = np.asarray(a).view()
    out.setflags(write=False)
    return out


def frozen_mapping(d: Mapping) -> Mapping:
    return MappingProxyType(dict(d))


@dataclass(frozen=True)
class Decision:
    """Where policy step ``step`` measures, and what the model believed when it chose.

    ``record`` holds the step record's decision fields (the acquisition, the posterior's summaries, fit and
    prediction times, ...); ``maps`` the mean, std and acquisition maps (scan shape, scalarizer units);
    ``posterior`` the model's posterior over every candidate, for the calibration of the measurement that follows;
    ``events`` what the monitors found (recorded with the step).
    """

    step: int
    flat: int
    position: tuple[int, int]
    kind: str
    record: Mapping
    maps: Mapping
    posterior: Posterior = field(repr=False)
    events: tuple[str, ...] = ()
    started_at: float = 0.0          # time.perf_counter() when the decision began (the step's time counts from it)


@dataclass(frozen=True)
class Measurement:
    """One spectrum as measured: where, what the scalarizer made of it, and how (dwell asked, beam blanked before,
    seconds it took, seconds the beam was on for it: ``beam_on_s``, failed attempts included). ``why``: why
    ``value`` is NaN (the spectrum is kept all the same)."""

    position: tuple[int, int]
    spectrum: np.ndarray = field(repr=False)
    value: float
    kind: str
    step: int
    dwell: float | None = None
    blanked_s: float = float("nan")
    seconds: float = float("nan")
    why: str | None = None
    beam_on_s: float = float("nan")

    def point(self) -> dict:
        """The measured point as :meth:`Trace.add_point <napari_hae.core.record.trace.Trace.add_point>` takes it."""
        return {"position": self.position, "spectrum": self.spectrum, "value": self.value, "kind": self.kind,
                "step": self.step, "dwell": self.dwell, "beam_on_s": self.beam_on_s}


@dataclass(frozen=True)
class StepResult:
    """What one policy step did, as recorded (what the driver yields to the dock and the command line)."""

    step: int
    position: tuple[int, int]
    kind: str
    value: float
    record: Mapping
    mean: np.ndarray       # (ny, nx) predicted mean, scalarizer units
    std: np.ndarray        # (ny, nx) predicted std, scalarizer units
    acq: np.ndarray        # (ny, nx) acquisition scores (-inf where not available)
    view: RunView | None = field(default=None, repr=False)   # the run as recorded with this step


@dataclass(frozen=True)
class RunView(RecordColumns):
    """What a run has recorded, as of one moment, read-only: what the dock draws (trajectory, values, monitors,
    progress) while the run goes on in its worker thread. It reads like a :class:`~napari_hae.core.record.trace.
    Trace` for the monitors (``steps``, ``point_steps``, ``values``, ``positions_array()``, ``step_array()``,
    ``dataset``, ``structural``, ``spectra``).

    ``current_values``: the measured values under the scalarizer in force (``values`` are those at measurement
    time); ``pareto``: positions and objective values of the non-dominated points of a multi-objective run;
    ``spectra``: every recorded spectrum (read-only views of the recorded arrays, in point order); ``beam_on``: the
    seconds the beam was on for each (NaN: not known).
    """

    positions: tuple
    values: tuple
    kinds: tuple
    point_steps: tuple
    steps: Mapping
    structural: np.ndarray = field(repr=False)
    dataset: Mapping = field(repr=False)
    budget: int = 0
    scalarizer: str = ""             # label of the scalarizer in force
    scalarizer_name: str = ""
    scalarizer_spec: Mapping = field(default_factory=dict, repr=False)   # its name, params and background
    current_values: np.ndarray = field(default_factory=lambda: frozen_array(np.zeros(0)), repr=False)
    pareto: tuple | None = field(default=None, repr=False)
    spectra: tuple = field(default=(), repr=False)
    energies: np.ndarray | None = field(default=None, repr=False)
    stuck_window: int = 10
    done: bool = False
    journal: str | None = None
    beam_on: tuple = field(default=(), repr=False)   # seconds the beam was on per point (the dose ledger)

    @property
    def scan_shape(self) -> tuple[int, int]:
        return tuple(self.structural.shape)

    @property
    def last_spectrum(self) -> np.ndarray | None:
        """The newest point's spectrum (None before the first)."""
        return self.spectra[-1] if self.spectra else None
