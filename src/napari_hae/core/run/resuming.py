"""Resuming a run from its trace: the measured points, the interventions' state and the random state restored,
nothing measured again (:meth:`Experiment.resume <napari_hae.core.run.experiment.Experiment.resume>`)."""

from __future__ import annotations

import numpy as np

from ..data.patches import flat_index
from ..errors import HAEInputError
from ..instrument.registration import Registered, register
from ..model import MODELS, compute
from ..record.trace import Trace
from . import interventions as iv
from .settings import ExperimentSettings


def resume(cls, trace, microscope, journal=None, append_journal: bool = False, model_factory=None,
           budget: int | None = None, device: str | None = None):
    if not isinstance(trace, Trace):
        trace = Trace.load(trace)
    settings = ExperimentSettings.from_dict(trace.settings)
    was = settings.model.params.get("device", "auto")
    if device is not None:   # where the model computes is this machine's matter, not the run's (a GPU gone)
        settings.model.params = {**settings.model.params, "device": device}
        MODELS.check_params(settings.model.name, settings.model.params)
    compute.check(settings.model.to_dict())   # a device this machine lacks is refused before anything is touched
    new = np.asarray(microscope.structural_image(), dtype=np.float64)
    registered = None
    if new.shape != trace.structural.shape or not np.allclose(new, trace.structural):
        if getattr(microscope, "replays", False):   # pre-acquired data: only the very same image is the same run
            raise HAEInputError(
                "The microscope's structural image differs from the one recorded in the trace.",
                "resume on the same dataset / the same scan region the run started on.")
        registered = register(trace.structural, new)   # a live instrument: acquired again, maybe drifted
        microscope = Registered(microscope, trace.structural, registered[0])
    exp = cls(microscope, settings, dataset_info=trace.dataset, model_factory=model_factory)
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
    if device is not None and device != was:
        trace.add_event(trace.n_steps, f"the model's device is {device!r} from here on (the run started with "
                                       f"{was!r})")
    if registered is not None:
        (dy, dx), sub, corr = registered
        gone = ~microscope.reachable().ravel() & ~exp.measured
        exp.avoid |= gone
        size, units = trace.dataset.get("pixel_size", 1.0), trace.dataset.get("pixel_units", "px")
        trace.add_event(trace.n_steps, f"the re-acquired structural image was registered to the recorded one: shift "
                                       f"(dy, dx) = ({dy}, {dx}) px ({sub[0]:.2f}, {sub[1]:.2f} px sub-pixel; "
                                       f"{dy * size:.3g}, {dx * size:.3g} {units}), correlation {corr:.2f}; "
                                       f"positions are sent there; {int(gone.sum())} that drifted out of the field "
                                       "are avoided")
    if budget is not None and int(budget) != exp.settings.budget:
        exp.set_budget(int(budget))
    return exp
