"""Interventions: what a person changes between two steps. One class per kind: its check and its record.

An intervention never changes a run directly. :meth:`Experiment.intervene
<napari_hae.core.run.experiment.Experiment.intervene>` checks it, then records ``{"step", "kind", "old", "new"}``
(``new`` resolved: a policy's defaults filled in, a patch size as a whole number); the run's state changes by
applying that record (:meth:`RunState.apply <napari_hae.core.run.state.RunState.apply>`), the same way live, on
resume and in a counterfactual. :func:`settings_after` applies the recorded interventions to the recorded settings
to give the settings in force at the end of a run (for reports). An object's mask is stored with the trace's
objects (its own record, written just before the intervention that names it).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ..data.patches import check_patch_size
from ..errors import HAEInputError
from ..policy import make_policy
from ..targets.scalarizers import Scalarizer
from .settings import ExperimentSettings, PolicySpec, ScalarizerSpec
from .state import OBJECT_MODES, settings_with

if TYPE_CHECKING:  # pragma: no cover
    from ..record.trace import Trace
    from .experiment import Experiment


class Intervention:
    kind: ClassVar[str] = ""

    def check(self, exp: Experiment) -> None:
        """Raise HAEInputError if this cannot be applied to ``exp`` (before anything is recorded)."""

    def current(self, settings: ExperimentSettings):
        """The value this replaces (recorded as ``old``)."""
        return None

    def new(self, exp: Experiment):
        """The ``new`` value recorded (resolved), after :meth:`check`."""
        raise NotImplementedError



@dataclass
class ChangeScalarizer(Intervention):
    """A new physics target: earlier spectra are re-scalarized and the model restarts from fresh weights."""

    spec: dict
    kind: ClassVar[str] = "scalarizer"

    def __post_init__(self):
        if isinstance(self.spec, Scalarizer):
            self.spec = self.spec.to_dict()
        self.spec = ScalarizerSpec(**self.spec).to_dict()

    def check(self, exp):
        Scalarizer.from_dict(self.spec).validate(exp.energies, exp.signal_shape)

    def current(self, settings):
        return settings.scalarizer.to_dict()

    def new(self, exp):
        return self.spec


@dataclass
class ChangePolicy(Intervention):
    """Another acquisition function, or another parameter of it."""

    spec: dict
    kind: ClassVar[str] = "policy"

    def __post_init__(self):
        self.spec = PolicySpec(**self.spec).to_dict()

    def check(self, exp):
        make_policy(self.spec["name"], **self.spec["params"])   # raises for an unknown policy or parameter

    def current(self, settings):
        return make_policy(settings.policy.name, **settings.policy.params).to_dict()

    def new(self, exp):   # recorded with the defaults the policy fills in
        return make_policy(self.spec["name"], **self.spec["params"]).to_dict()


@dataclass
class ChangePatchSize(Intervention):
    """Another patch size: patches are re-extracted and the model retrained from scratch on every point."""

    patch_size: int
    kind: ClassVar[str] = "patch_size"

    def check(self, exp):
        self.patch_size = check_patch_size(self.patch_size, exp.scan_shape)

    def current(self, settings):
        return settings.patch_size

    def new(self, exp):
        return int(self.patch_size)


@dataclass
class AddObject(Intervention):
    """An object of interest: "avoid" excludes its positions for good; "visit" forces the next picks inside it
    until one of its positions is measured."""

    mask: np.ndarray
    mode: str
    label: str = ""
    kind: ClassVar[str] = "object"

    def check(self, exp):
        mask = np.asarray(self.mask, dtype=bool)
        if mask.shape != exp.scan_shape:
            raise HAEInputError(f"Object mask shape {mask.shape} differs from the scan shape {exp.scan_shape}.",
                                "draw the object on the structural image layer.")
        if self.mode not in OBJECT_MODES:
            raise HAEInputError(f"Object mode {self.mode!r} is not 'visit' or 'avoid'.", "use 'visit' or 'avoid'.")
        if not mask.any():
            raise HAEInputError("The object covers no scan position.", "draw it over the scanned area.")
        self.mask = mask

    def new(self, exp):
        """Records the object's mask (its own record), then names it."""
        index = exp.trace.add_object(self.mode, self.label, self.mask)
        return {"mode": self.mode, "label": self.label, "n_pixels": int(np.sum(self.mask)), "index": index}


@dataclass
class RemoveObject(Intervention):
    """An object retracted (deleted or redrawn on the objects layer): its positions are no longer avoided, or no
    longer to be visited. Named by its label (the newest object in force with it); the record names its index."""

    label: str
    kind: ClassVar[str] = "remove_object"

    def check(self, exp):
        if exp.state.object_in_force(self.label) is None:
            raise HAEInputError(f"No object labelled {self.label!r} is in force in this run.",
                                "name an object added to this run (its label), not one already removed.")

    def new(self, exp):
        return {"index": exp.state.object_in_force(self.label), "label": self.label}


@dataclass
class ChangeBudget(Intervention):
    """More (or fewer) policy steps; never fewer than those already taken."""

    budget: int
    kind: ClassVar[str] = "budget"

    def check(self, exp):
        if not isinstance(self.budget, (int, np.integer)) or self.budget < exp.step_index:
            raise HAEInputError(f"Budget {self.budget!r} is below the {exp.step_index} steps already taken.",
                                f"give a whole number >= {exp.step_index}.")
        n_free = int(np.sum(~exp.measured & ~exp.avoid))
        if self.budget - exp.step_index > n_free:
            raise HAEInputError(f"A budget of {self.budget} needs {self.budget - exp.step_index} more positions; "
                                f"{n_free} are left.", f"give a budget of at most {exp.step_index + n_free}.")

    def current(self, settings):
        return settings.budget

    def new(self, exp):
        return int(self.budget)


KINDS = {c.kind: c for c in (ChangeScalarizer, ChangePolicy, ChangePatchSize, AddObject, RemoveObject,
                             ChangeBudget)}


def from_record(d: dict, trace: Trace) -> Intervention:
    """The intervention a trace recorded (``trace`` holds the masks of objects)."""
    kind, new = d["kind"], d["new"]
    if kind == "object":
        obj = trace.objects[int(new["index"])]
        return AddObject(obj["mask"], obj["mode"], obj.get("label", ""))
    if kind == "remove_object":
        return RemoveObject(str(new["label"]))
    if kind == "patch_size":
        return ChangePatchSize(int(new))
    if kind == "budget":
        return ChangeBudget(int(new))
    if kind in KINDS:
        return KINDS[kind](new)
    raise HAEInputError(f"The trace records an intervention of unknown kind {kind!r}.",
                        "read it with the napari-hae version that wrote it.")


def settings_after(trace: Trace, upto_step: int | None = None) -> ExperimentSettings:
    """The settings in force at the end of ``trace`` (or before policy step ``upto_step``)."""
    s = ExperimentSettings.from_dict(trace.settings)
    for d in trace.interventions:
        if upto_step is None or int(d["step"]) <= upto_step:
            s = settings_with(s, d["kind"], d["new"])
    return s
