"""Replay a recorded run step by step, and re-run it counterfactually: same trajectory, other model settings.

:func:`replay_state` gives what the run showed after step k (maps, points, values), which napari's replay slider
draws. :func:`counterfactual` follows the recorded trajectory exactly (the spectra come from the trace through
:class:`TraceMicroscope`; no instrument or dataset is needed) while the model is retrained with other settings,
to compare what the model would have believed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.dataset import EnergyAxis
from ..errors import HAEInputError
from ..record.trace import MAP_NAMES, Trace


@dataclass
class ReplayState:
    """The run as it stood after policy step ``step`` (-1: after the seeds)."""

    step: int
    positions: np.ndarray       # (m, 2) measured so far, pixels
    values: np.ndarray          # (m,) scalarizer at measurement time
    point_steps: np.ndarray     # (m,) -1 for seeds
    maps: dict                  # name -> (ny, nx) map of step ``maps_step``, or None when none is stored
    record: dict                # that step's scalars (empty after the seeds)
    maps_step: int | None = None   # the step the maps are of: ``step``, or the last stored before it


def replay_state(trace: Trace, step: int) -> ReplayState:
    """State after policy step ``step`` (0-based; -1 = seeds only). Maps are the stored ones, unchanged: the
    step's own, or (maps stored every k steps) those of the last step before it that has them."""
    if not -1 <= step < trace.n_steps:
        raise HAEInputError(f"Step {step} is not in this trace (it has {trace.n_steps} steps).",
                            f"use a step from -1 (seeds) to {trace.n_steps - 1}.")
    ps = np.asarray(trace.point_steps)
    m = int(np.sum(ps <= step))
    at = max((s for s in trace.maps_held if s <= step), default=None) if step >= 0 else None
    maps = {k: None if at is None else trace.map_at(k, at) for k in MAP_NAMES}
    record = {k: trace.steps[k][step] for k in trace.steps} if step >= 0 else {}
    return ReplayState(step, trace.positions_array()[:m], np.asarray(trace.values[:m]), ps[:m], maps, record, at)


class TraceMicroscope:
    """A microscope that returns the spectra recorded in a trace; positions never measured are refused."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self._index = {p: i for i, p in enumerate(trace.positions)}
        e = trace.dataset.get("energy")
        self._energy = EnergyAxis(**e) if e else None
        self._signal = tuple(np.shape(trace.spectra[0])) if trace.spectra else ()

    @property
    def scan_shape(self):
        return tuple(self.trace.structural.shape)

    @property
    def energy(self):
        return self._energy

    @property
    def signal_shape(self):
        return self._signal

    def structural_image(self):
        return self.trace.structural

    def acquire(self, y, x):
        i = self._index.get((int(y), int(x)))
        if i is None:
            raise HAEInputError(f"Position ({y}, {x}) was not measured in the recorded run.",
                                "a counterfactual can only visit the recorded trajectory.")
        return np.asarray(self.trace.spectra[i], dtype=np.float64)


def counterfactual(trace: Trace, model_factory=None, **overrides) -> Trace:
    """Re-run ``trace``'s trajectory with the model retrained under ``overrides`` (ExperimentSettings fields,
    e.g. ``patch_size=8``, ``fit_iterations=60``, ``model={"name": "dkl", "params": {"hidden": [128, 64]}}``,
    ``scalarizer={...}``).

    The recorded interventions are re-applied at their steps (the same ``apply`` as live and on resume), except
    those of a kind that is overridden (a given ``patch_size`` replaces every patch-size change, and likewise
    ``scalarizer`` and ``policy``). With no overrides the new trace's maps equal the original's (same random seed,
    same fits in the same order).
    """
    from ..run import interventions as iv
    from ..run.experiment import Experiment, ExperimentSettings

    if trace.n_steps == 0:
        raise HAEInputError("The trace has no policy steps to follow.", "record a run with at least one step.")
    d = dict(trace.settings)
    seeds = [p for p, k in zip(trace.positions, trace.kinds) if k == "seed"]
    d.update(seed_mode="given", seed_positions=[list(p) for p in seeds], n_seeds=len(seeds),
             budget=trace.n_steps, record_maps=True)
    d.update(overrides)
    settings = ExperimentSettings.from_dict(d)
    exp = Experiment(TraceMicroscope(trace), settings, dataset_info=dict(trace.dataset),
                     model_factory=model_factory, follow=list(trace.steps["position"]))
    by_step: dict[int, list] = {}
    for rec in trace.interventions:
        if rec["kind"] not in overrides and rec["kind"] != "budget":
            by_step.setdefault(int(rec["step"]), []).append(rec)
    exp.start()
    while not exp.done:
        for rec in by_step.get(exp.step_index, []):
            exp.intervene(iv.from_record(rec, trace))
        exp.step()
    exp.close()
    exp.trace.dataset = {**exp.trace.dataset, "counterfactual_of": trace.settings, "overrides": overrides}
    return exp.trace
