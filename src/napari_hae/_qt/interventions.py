"""The dock's interventions: a scalarizer, policy, patch size or object changed during a run is queued on the run
driver, which checks and records it before the next step (before Start, the fields are simply read at Start)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from napari.utils.notifications import show_error

from .layer_view import OBJECTS


@dataclass
class _Shape:
    """One shape of the objects layer as the run knows it: the label of its object in the run (None: not in the
    run: drawn before Start, or covering no scan position) and its vertices when last seen."""

    label: str | None
    vertices: np.ndarray


class Interventions:
    """Owns what the run knows of the objects layer's shapes (so a shape drawn, deleted or moved during a run is
    queued once, as the object added, retracted, or retracted and added again)."""

    def __init__(self, viewer, panels: dict, controller, status, on_target: Callable, view):
        self.viewer, self.controller, self.status, self.view = viewer, controller, status, view
        self.data, self.target, self.policy = panels["data"], panels["target"], panels["policy"]
        self.on_target = on_target   # a scalarizer was applied: the spectrum plot redraws its bands
        self.shapes: list[_Shape] = []
        self._next = 0               # the number in the next object's label ("avoid #7"): never reused in a run

    def queue(self, label: str, change) -> bool:
        if not self.controller.request(label, change):
            return False   # no run going: the dock's values are used at Start
        self.status.value = f"Queued: {label} (applied before the next step)"
        return True

    def request_scalarizer(self, *_):
        problem = self.target.problem_for(self.data.dataset)
        if problem is not None:
            show_error(problem)
            self.status.value = f"Scalarizer: {problem}"
            return
        sc = self.target.scalarizer()
        self.queue(f"scalarizer {sc.label()}", lambda exp: exp.set_scalarizer(sc))
        self.on_target()

    def request_policy(self, *_):
        pol = self.policy.policy()
        self.queue(f"policy {pol['name']} {pol['params']}", lambda exp: exp.set_policy(pol["name"], **pol["params"]))

    def patch_size(self, *_):
        n = int(self.data.patch_size.value)
        self.queue(f"patch size {n}", lambda exp: exp.set_patch_size(n))

    def track_shapes(self) -> None:
        """Know the layer's shapes as they are, none of them in a run (a dataset opened, before Start)."""
        layer = self.viewer.layers[OBJECTS] if OBJECTS in self.viewer.layers else None
        self.shapes = [] if layer is None else [_Shape(None, np.array(v)) for v in layer.data]

    def run_started(self) -> None:
        """The run took the objects the layer shows (labelled by their place, :meth:`LayerView.objects_drawn`)."""
        layer = self.viewer.layers[OBJECTS] if OBJECTS in self.viewer.layers else None
        if layer is None or self.data.dataset is None:
            self.shapes = []
            return
        drawn = self.view.objects_drawn(self.data.dataset.scan_shape)
        self.shapes = [_Shape(label if mask.any() else None, np.array(v))
                       for (mask, _, label), v in zip(drawn, layer.data)]
        self._next = len(self.shapes)

    def objects_changed(self, event=None):
        """A shape drawn, deleted or moved during a run is queued as the object added, retracted, or retracted and
        added again (interventions); before Start nothing is queued: Start takes the objects the layer shows then
        (:meth:`LayerView.objects_drawn`)."""
        from napari.layers.base import ActionType

        action = getattr(event, "action", None)
        if action in (ActionType.ADDING, ActionType.REMOVING, ActionType.CHANGING):
            return   # the change itself follows
        now = [np.array(v) for v in self.viewer.layers[OBJECTS].data]
        old, running = self.shapes, self.controller.running
        gone = sorted(set(getattr(event, "data_indices", None) or ()), reverse=True)
        if action == ActionType.REMOVED and gone and len(now) == len(old) - len(gone) and max(gone) < len(old):
            for i in gone:                                               # deleted
                self._retract(old.pop(i), running)
            return
        if len(now) == len(old):                                         # moved or edited
            redo = [i for i in range(len(old)) if not _same(old[i].vertices, now[i])]
        elif len(now) > len(old) and all(_same(o.vertices, v) for o, v in zip(old, now)):
            redo = list(range(len(old), len(now)))                       # drawn
            old.extend(_Shape(None, now[i]) for i in redo)
        else:                                                            # replaced at once
            redo = list(range(len(now)))
            for shape in old:
                self._retract(shape, running)
            old[:] = [_Shape(None, v) for v in now]
        for i in redo:
            self._retract(old[i], running)
            old[i].vertices = now[i]
        if running and redo:
            self._add(redo)

    def _retract(self, shape: _Shape, running: bool) -> None:
        if running and shape.label is not None:
            label = shape.label
            self.queue(f"object {label} removed", lambda e: e.remove_object(label))
        shape.label = None

    def _add(self, indices: list[int]) -> None:
        drawn = self.view.objects_drawn(self.data.dataset.scan_shape)   # each shape's mask and mode (its colour)
        for i in indices:
            mask, mode, _ = drawn[i]
            if not mask.any():
                continue   # it covers no scan position: nothing the run could use
            label = self.shapes[i].label = f"{mode} #{self._next}"
            self._next += 1
            self.queue(f"object {label}", lambda e, m=mask, mo=mode, la=label: e.add_object(m, mo, la))


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and np.array_equal(a, b)
