"""The dock's interventions: a scalarizer, policy, patch size or object changed during a run is queued on the run
driver, which checks and records it before the next step (before Start, the fields are simply read at Start)."""

from __future__ import annotations

from collections.abc import Callable

from napari.utils.notifications import show_error

from .layer_view import OBJECTS


class Interventions:
    """Owns how many of the objects layer's shapes have been seen (so a new shape is queued once)."""

    def __init__(self, viewer, panels: dict, controller, status, on_target: Callable):
        self.viewer, self.controller, self.status = viewer, controller, status
        self.data, self.target, self.policy = panels["data"], panels["target"], panels["policy"]
        self.run_panel = panels["run"]
        self.on_target = on_target   # a scalarizer was applied: the spectrum plot redraws its bands
        self.n_objects_seen = 0

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

    def objects_changed(self, event=None):
        """A shape drawn during a run is queued as an object (an intervention); before Start nothing is kept here:
        Start takes the objects the layer shows then (:meth:`LayerView.objects_drawn`)."""
        layer = self.viewer.layers[OBJECTS]
        n, mode = len(layer.data), self.run_panel.object_mode.value
        if n > self.n_objects_seen and self.controller.running:
            masks = layer.to_masks(mask_shape=self.data.dataset.scan_shape)
            for i in range(self.n_objects_seen, n):
                mask, label = masks[i].astype(bool), f"{mode} #{i}"
                self.queue(f"object {label}", lambda e, m=mask, mo=mode, la=label: e.add_object(m, mo, la))
        self.n_objects_seen = n
