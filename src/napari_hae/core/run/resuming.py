"""Resuming a run from its trace: the measured points, the interventions' state and the random state restored,
nothing measured again (:meth:`Experiment.resume <napari_hae.core.run.experiment.Experiment.resume>`)."""

from __future__ import annotations

import numpy as np

from ..data.patches import flat_index
from ..errors import HAEInputError
from ..record.trace import Trace
from . import interventions as iv
from .settings import ExperimentSettings


def resume(cls, trace, microscope, journal=None, append_journal: bool = False, model_factory=None,
           budget: int | None = None):
    if not isinstance(trace, Trace):
        trace = Trace.load(trace)
    exp = cls(microscope, ExperimentSettings.from_dict(trace.settings), dataset_info=trace.dataset,
              model_factory=model_factory)
    if exp.structural.shape != trace.structural.shape or not np.allclose(exp.structural, trace.structural):
        raise HAEInputError(
            "The microscope's structural image differs from the one recorded in the trace.",
            "resume on the same dataset / the same scan region the run started on.")
    exp.trace = trace
    if trace.n_points:
        exp.measured[flat_index(trace.positions_array(), exp.scan_shape)] = True
    for d in trace.interventions:   # the state the interventions built, without recording them again
        iv.from_record(d, trace).apply(exp)
    # the random state is recorded once all seeds are measured (older traces lack it but have steps)
    exp.started = trace.n_steps > 0 or trace.rng_state is not None
    if trace.rng_state is not None:
        exp.rng.bit_generator.state = trace.rng_state
    if journal is not None:
        trace.attach_journal(journal, append=append_journal)
    trace.add_event(trace.n_steps, f"resumed with {trace.n_points} points and {trace.n_steps} steps measured")
    if budget is not None and int(budget) != exp.settings.budget:
        exp.set_budget(int(budget))
    return exp
