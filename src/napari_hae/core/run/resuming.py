"""Resuming a run: read its records, rebuild its state, then build the model, the instrument guard and the journal
(:meth:`Experiment.resume <napari_hae.core.run.experiment.Experiment.resume>`). Nothing is measured again.

What is not the run's but the machine's is settled here: the model's device (a GPU this PC lacks), and a live
instrument's field of view, acquired again and registered to the recorded image; positions that drifted out of
view become a recorded "avoid" object (an intervention like any other, so a later resume rebuilds it). The same
holds during a run that follows drift (``drift_every``, :func:`record_drift`).
"""

from __future__ import annotations

import numpy as np

from ..errors import HAEInputError, InstrumentRefused, MicroscopeFault, sentence
from ..instrument.capabilities import ReplaysData
from ..instrument.registration import Registered, register
from ..model import MODELS, compute
from ..record.trace import Trace
from .settings import ExperimentSettings

DRIFT_LABEL = "drifted out of view on resume"
RUN_DRIFT_LABEL = "drifted out of view during the run"


def resume(cls, trace, microscope, journal=None, append_journal: bool = False, model_factory=None,
           budget: int | None = None, device: str | None = None):
    trace = trace if isinstance(trace, Trace) else Trace.load(trace)
    settings, moved = settings_on_this_machine(trace, device)
    microscope, registered = same_field(trace, microscope)
    exp = cls(microscope, settings, dataset_info=trace.dataset, model_factory=model_factory, trace=trace)
    if journal is not None:
        exp.journal_to(journal, append=append_journal)
    trace.add_event(trace.n_steps, f"resumed with {trace.n_points} points and {trace.n_steps} steps measured")
    if moved:
        trace.add_event(trace.n_steps, moved)
    if registered is not None:
        _record_registration(exp, microscope, registered)
    if budget is not None and int(budget) != exp.state.budget:
        exp.set_budget(int(budget))
    return exp


def settings_on_this_machine(trace: Trace, device: str | None) -> tuple[ExperimentSettings, str]:
    """The recorded settings with the model on ``device`` (where it computes is this machine's matter, not the
    run's: a GPU gone), checked before anything is touched; and the event that says so (empty: not moved)."""
    settings = ExperimentSettings.from_dict(trace.settings)
    was = settings.model.params.get("device", "auto")
    if device is not None:
        settings.model.params = {**settings.model.params, "device": device}
        MODELS.check_params(settings.model.name, settings.model.params)
    compute.check(settings.model.to_dict())   # a device this machine lacks is refused before anything is touched
    moved = "" if device is None or device == was else (
        f"the model's device is {device!r} from here on (the run started with {was!r})")
    return settings, moved


def same_energy_axis(trace: Trace, microscope) -> None:
    """The instrument's energy axis must be the one the run recorded: spectra on a moved axis (a 0.3 eV shift was
    taken without a word) would not be comparable with the measured ones."""
    recorded, now = trace.dataset.get("energy"), microscope.energy
    if not recorded or now is None:
        return
    now = now.to_dict()
    scale = abs(float(recorded["scale"])) or 1.0
    same = (int(now["size"]) == int(recorded["size"]) and now["units"] == recorded["units"]
            and abs(now["offset"] - recorded["offset"]) <= 0.01 * scale and abs(now["scale"] / scale - 1) <= 1e-6)
    if not same:
        raise HAEInputError(
            f"The instrument's energy axis ({now['size']} channels, offset {now['offset']:g} {now['units']}, "
            f"{now['scale']:g} {now['units']}/channel) is not the one the run recorded ({recorded['size']} channels, "
            f"offset {recorded['offset']:g} {recorded['units']}, {recorded['scale']:g}/channel): its spectra would "
            "not be comparable with the measured ones. Nothing was measured.",
            "restore the spectrometer's calibration and resume, or start a new run on the new axis.")


def same_data(trace: Trace, microscope) -> None:
    """Pre-acquired data must be the data the run measured (its fingerprint, recorded by every run however made)."""
    if isinstance(microscope, ReplaysData) and hasattr(microscope.data, "check_same_source"):
        microscope.data.check_same_source(trace.dataset.get("fingerprint"), "The run being resumed")


def same_field(trace: Trace, microscope):
    """``microscope`` on the recorded field of view: pre-acquired data must give the very same image; a live
    instrument's image, acquired again, is registered to the recorded one (returns the wrapped microscope and the
    registration, or None where the images are equal)."""
    new = np.asarray(microscope.structural_image(), dtype=np.float64)
    same_image = new.shape == trace.structural.shape and np.allclose(new, trace.structural)
    if not same_image and getattr(microscope, "replays", False):
        raise HAEInputError("The microscope's structural image differs from the one recorded in the trace.",
                            "resume on the same dataset / the same scan region the run started on.")
    same_energy_axis(trace, microscope)
    same_data(trace, microscope)
    if same_image:
        return microscope, None
    registered = register(trace.structural, new)   # a live instrument: acquired again, maybe drifted
    return Registered(microscope, trace.structural, registered[0], registered[1]), registered


def record_drift(exp) -> None:
    """After a record: the drift check, when ``drift_every`` acquisitions have passed (on the instrument's thread,
    before the next position is decided), then what the checks found: an event each, and the positions now out of
    the field avoided (one recorded 'avoid' object, replaced at every check: what drifts back into view is
    measurable again). A check that does not register pauses the run (MicroscopeFault)."""
    microscope = exp.microscope
    if getattr(microscope, "drift_due", False):
        try:
            exp.guard.call(microscope.check_drift)
        except InstrumentRefused as exc:
            raise MicroscopeFault(f"The drift check failed: {sentence(exc)} The run is paused; every spectrum "
                                  "measured so far is in the trace.",
                                  "bring the run's field back under the beam (stage, scan rotation, magnification) "
                                  "and resume; the image is checked again before anything is measured.") from exc
    notes = getattr(microscope, "drift_notes", None)
    while notes:
        before, shift, sub, corr, beam = notes.popleft()
        gone = _out_of_field(exp, microscope)
        if exp.state.object_in_force(RUN_DRIFT_LABEL) is not None:
            exp.remove_object(RUN_DRIFT_LABEL)
        if gone.any():
            exp.add_object(gone, "avoid", RUN_DRIFT_LABEL)
        exp.trace.add_event(exp.step_index, f"drift check after point {exp.state.n_points}: the structural image, "
                                            f"acquired again (beam on {beam:.3g} s), registers to the run's with "
                                            f"{_shift_said(exp, shift, sub, corr, f'was {before}; ')}; later "
                                            f"positions are sent there; {int(gone.sum())} out of the field are avoided",
                            beam_on_s=beam if np.isfinite(beam) else None, drift_px=list(shift))


def _out_of_field(exp, microscope) -> np.ndarray:
    """(ny, nx) bool: the positions not measured yet that the registered instrument cannot reach now."""
    return ~microscope.reachable() & ~exp.measured.reshape(exp.scan_shape)


def _shift_said(exp, shift, sub, corr, was: str = "") -> str:
    """A registration in words: whole and sub-pixel shift, in the run's length units, and the correlation."""
    (dy, dx), size = shift, exp.trace.dataset.get("pixel_size", 1.0)
    units = exp.trace.dataset.get("pixel_units", "px")
    return (f"shift (dy, dx) = ({dy}, {dx}) px ({was}{sub[0]:.2f}, {sub[1]:.2f} px sub-pixel; {dy * size:.3g}, "
            f"{dx * size:.3g} {units}), correlation {corr:.2f}")


def _record_registration(exp, microscope, registered) -> None:
    shift, sub, corr = registered
    gone = _out_of_field(exp, microscope)
    if gone.any():
        exp.add_object(gone, "avoid", DRIFT_LABEL)
    sent = " by the sub-pixel shift (the instrument takes fractional positions)" if microscope.subpixel else \
        " (whole pixels: the instrument takes no fractional positions)"
    exp.trace.add_event(exp.step_index, f"the re-acquired structural image was registered to the recorded one: "
                                        f"{_shift_said(exp, shift, sub, corr)}; positions are sent there{sent}; "
                                        f"{int(gone.sum())} that drifted out of the field are avoided (a recorded "
                                        "'avoid' object)")
