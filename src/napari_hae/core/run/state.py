"""The state of a run, built only from its records.

A run is its records: every measured point, policy step, intervention, object of interest and random state is a
record that the journal writes (:mod:`napari_hae.core.record.trace`), and :class:`RunState` changes only by
applying those records, through :meth:`RunState.apply`. The same records rebuild the same state live (each record
applied as it is written), on resume (the journal or trace read back) and in a counterfactual (the same rebuild,
with a different *follow* rule: the recorded trajectory instead of the policy's picks).

What the state holds: the settings in force (the recorded settings with every intervention applied in order),
which positions are measured, the objects to avoid and to visit, the number of points and steps, whether the seeds
are measured, and the random generator's recorded state. What it does not hold is what is *derived* from it (the
objective, the policy, the patches and the model: :class:`~napari_hae.core.run.experiment.Experiment`) and what
is the machine's matter (the instrument, the journal file).

Records may arrive in the order a run wrote them (a journal) or grouped by kind (an HDF5 trace: points, steps,
interventions, objects, ...): applying them gives the same state either way, because points only add to the
measured set, objects only add masks, and interventions are applied in their own recorded order.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

from ..data.patches import flat_index
from ..errors import HAEInputError
from .settings import ExperimentSettings, PolicySpec, ScalarizerSpec

OBJECT_MODES = ("visit", "avoid")


def settings_with(settings: ExperimentSettings, kind: str, new) -> ExperimentSettings:
    """A copy of ``settings`` with the intervention of ``kind`` and recorded value ``new`` applied (``settings``
    itself is never changed). Objects change no setting."""
    out = settings.model_copy(deep=True)
    if kind == "scalarizer":
        out.scalarizer = ScalarizerSpec(**new)
    elif kind == "policy":
        out.policy = PolicySpec(**new)
    elif kind == "patch_size":
        out.patch_size = int(new)
    elif kind == "budget":
        out.budget = int(new)
    elif kind not in ("object", "remove_object"):
        raise HAEInputError(f"The trace records an intervention of unknown kind {kind!r}.",
                            "read it with the napari-hae version that wrote it.")
    return out


class RunState:
    """Where a run stands, changed only by :meth:`apply` of its records.

    ``settings`` are the recorded (resolved) settings the run started with; ``follow`` (a counterfactual) is the
    trajectory to measure instead of the policy's picks, one (y, x) per policy step.
    """

    def __init__(self, settings: ExperimentSettings, scan_shape: Sequence[int],
                 follow: Sequence[Sequence[int]] | None = None):
        self._settings = settings.model_copy(deep=True)
        self.scan_shape = (int(scan_shape[0]), int(scan_shape[1]))
        n = self.scan_shape[0] * self.scan_shape[1]
        self._measured = np.zeros(n, dtype=bool)
        self._avoid = np.zeros(n, dtype=bool)
        self._objects: list[dict] = []            # object records: mode, label, mask (ny, nx), in_force
        self.interventions: list[dict] = []       # intervention records applied, in order
        self.n_points = 0
        self.n_steps = 0
        self.rng_state: dict | None = None        # the random generator after the latest step (or the seeds)
        self.last_position: tuple[int, int] | None = None
        self.follow = None if follow is None else [tuple(int(c) for c in p) for p in follow]

    # -- rebuilding ---------------------------------------------------------------------------------------
    @classmethod
    def from_records(cls, settings: ExperimentSettings, scan_shape, records: Iterable[tuple[str, dict, dict]],
                     follow=None) -> RunState:
        state = cls(settings, scan_shape, follow)
        for kind, fields, arrays in records:
            state.apply(kind, fields, arrays or {})
        return state

    @classmethod
    def from_trace(cls, trace, follow=None, settings: ExperimentSettings | None = None) -> RunState:
        """The state ``trace``'s records build (``settings``: the recorded settings, already read)."""
        settings = ExperimentSettings.from_dict(trace.settings) if settings is None else settings
        return cls.from_records(settings, trace.structural.shape, trace.records(), follow)

    # -- the one way it changes ---------------------------------------------------------------------------
    def apply(self, kind: str, fields: dict, arrays: dict | None = None) -> None:
        """Apply one record (``kind``, ``fields``, ``arrays``: as the journal writes it)."""
        if kind == "point":
            self._add_point(fields["position"])
        elif kind == "step":
            if "point" in fields:
                self._add_point(fields["point"]["position"])
            self.n_steps += 1
            if fields.get("rng") is not None:
                self.rng_state = fields["rng"]
        elif kind == "rng":
            self.rng_state = fields["state"]
        elif kind == "object":
            self._objects.append({"mode": fields["mode"], "label": fields.get("label", ""),
                                  "mask": np.asarray(arrays["mask"], dtype=bool), "in_force": False})
        elif kind == "intervention":
            self._intervene(fields["intervention"])
        # header and event records change nothing here

    def _add_point(self, position) -> None:
        pos = tuple(int(c) for c in position)
        self._measured[flat_index(np.asarray([pos]), self.scan_shape)[0]] = True
        self.n_points += 1
        self.last_position = pos

    def _intervene(self, d: dict) -> None:
        kind, new = d["kind"], d["new"]
        if kind in ("object", "remove_object"):   # an object comes into force, or is retracted
            self._objects[int(new["index"])]["in_force"] = kind == "object"
            self._avoid = np.zeros_like(self._measured)
            for obj in self._objects:
                if obj["in_force"] and obj["mode"] == "avoid":
                    self._avoid |= obj["mask"].ravel()
        else:
            self._settings = settings_with(self._settings, kind, new)
        self.interventions.append(d)

    # -- views (copies or read-only: the state changes only through apply) -------------------------------------
    @property
    def settings(self) -> ExperimentSettings:
        """The settings in force (a copy: changing it changes nothing)."""
        return self._settings.model_copy(deep=True)

    @property
    def budget(self) -> int:
        return int(self._settings.budget)

    @property
    def patch_size(self) -> int:
        return int(self._settings.patch_size)

    @property
    def measured(self) -> np.ndarray:
        return _read_only(self._measured)

    @property
    def avoid(self) -> np.ndarray:
        return _read_only(self._avoid)

    @property
    def visit(self) -> list[np.ndarray]:
        """The "visit" objects in force none of whose positions is measured yet (flat masks, in the order they were
        added: an object is recorded just before the intervention that brings it into force)."""
        flats = (o["mask"].ravel() for o in self._objects if o["in_force"] and o["mode"] == "visit")
        return [_read_only(v) for v in flats if not (v & self._measured).any()]

    @property
    def objects(self) -> list[dict]:
        return [dict(o) for o in self._objects]

    def object_in_force(self, label: str) -> int | None:
        """The index of the newest object in force labelled ``label`` (None: none is)."""
        found = [i for i, o in enumerate(self._objects) if o["in_force"] and o["label"] == label]
        return found[-1] if found else None

    @property
    def started(self) -> bool:
        """Whether the seeds are measured (the random state is recorded once they are; older traces: a step)."""
        return self.rng_state is not None or self.n_steps > 0

    @property
    def fresh_fit(self) -> bool:
        """Whether the next fit is a first one (more iterations): no policy step yet, or a new target or patch size
        recorded since the last step. Read from the interventions' recorded steps, whatever order the records
        came in."""
        return self.n_steps == 0 or any(d["kind"] in ("scalarizer", "patch_size") and int(d["step"]) >= self.n_steps
                                        for d in self.interventions)

    def followed(self, step: int) -> tuple[int, int] | None:
        """The position a counterfactual measures at policy step ``step`` (None: the policy picks)."""
        return None if self.follow is None else self.follow[step]

    def snapshot(self) -> dict:
        """Everything the state holds, as plain values (what two rebuilds are compared by)."""
        return {"settings": self._settings.to_dict(), "measured": self._measured.copy(), "avoid": self._avoid.copy(),
                "visit": [v.copy() for v in self.visit], "n_points": self.n_points, "n_steps": self.n_steps,
                "rng_state": self.rng_state, "last_position": self.last_position,
                "objects": [(o["mode"], o["label"], o["mask"].copy()) for o in self._objects],
                "interventions": list(self.interventions)}


def _read_only(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.setflags(write=False)
    return v
