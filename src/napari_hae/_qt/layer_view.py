"""What a run shows in napari's layers: predicted maps, trajectory coloured by step, measured values, seeds and
objects drawn by the user, and the Pareto set. Pure drawing: it reads a RunView or a replay state."""

from __future__ import annotations

import numpy as np

SEEDS = "hAE seeds"
TRAJECTORY = "hAE trajectory"
VALUES = "hAE measured values"
OBJECTS = "hAE objects"
PARETO = "hAE Pareto set"
MAPS = {"mean": ("hAE predicted mean", "viridis"), "std": ("hAE uncertainty", "magma"),
        "acq": ("hAE acquisition", "cividis")}
OBJECT_COLORS = {"visit": "lime", "avoid": "red"}
# the trajectory's step colours: plasma's middle, whose every colour stands apart from every colour of the mean
# map's viridis (CIE76 distance >= 32; plasma's yellow end is viridis' own yellow, its dark end near its purple)
TRAJECTORY_COLORS = ("plasma", 0.2, 0.8)
SCAN_LAYERS = (SEEDS, OBJECTS, VALUES, TRAJECTORY, PARETO, *(name for name, _ in MAPS.values()))   # on the scan grid


class LayerView:
    def __init__(self, viewer):
        self.viewer = viewer
        self._auto_limits: dict[str, tuple] = {}   # the contrast limits last set here, per map layer
        self._pending: dict[str, tuple] = {}       # the latest map of a hidden map layer: (key, map)
        self._watching: set[int] = set()           # map layers whose visibility is watched for that

    def _layer(self, name):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @staticmethod
    def geometry(ref) -> dict:
        """The scale and units hAE layers share with the dataset layer ``ref`` (napari warns on mixed units, and a
        click on a layer of another scale lands on the wrong pixel)."""
        return {"scale": tuple(ref.scale[-2:]), "units": tuple(str(u) for u in ref.units[-2:])}

    def follow(self, ref) -> list[str]:
        """Put every existing hAE layer on ``ref``'s scale and units; the names of those that moved."""
        geo, moved = self.geometry(ref), []
        for layer in self.viewer.layers:
            if layer.name in SCAN_LAYERS and (tuple(layer.scale) != geo["scale"]
                                                  or tuple(map(str, layer.units)) != geo["units"]):
                layer.scale, layer.units = geo["scale"], geo["units"]
                moved.append(layer.name)
        return moved

    def ensure_input_layers(self, ref, scan_shape, object_mode: str, on_objects) -> None:
        """Seed points and objects layers, on the dataset layer ``ref``'s scale and units."""
        geo = self.geometry(ref)
        if SEEDS not in self.viewer.layers:
            self.viewer.add_points(np.zeros((0, 2)), name=SEEDS, size=max(scan_shape) / 50, face_color="cyan",
                                   border_color="white", symbol="square", **geo)
        if OBJECTS not in self.viewer.layers:
            shapes = self.viewer.add_shapes(name=OBJECTS, face_color=[0, 0, 0, 0], edge_width=1,
                                            edge_color=OBJECT_COLORS[object_mode], **geo)
            shapes.events.data.connect(on_objects)

    def objects_drawn(self, scan_shape) -> list[tuple]:
        """The objects the layer shows now, as (mask, mode, label): the layer is the truth (a shape deleted or moved
        before Start is what the run does not or does use). Each shape's mode is its edge colour's."""
        from napari.utils.colormaps.standardize_color import transform_color

        layer = self._layer(OBJECTS)
        if layer is None or len(layer.data) == 0:
            return []
        masks = layer.to_masks(mask_shape=tuple(scan_shape)).astype(bool)
        colors = {mode: transform_color(c)[0] for mode, c in OBJECT_COLORS.items()}
        out = []
        for i, (mask, edge) in enumerate(zip(masks, np.asarray(layer.edge_color))):
            mode = min(colors, key=lambda m: float(np.abs(colors[m][:3] - edge[:3]).sum()))
            out.append((mask, mode, f"{mode} #{i}"))
        return out

    def set_object_mode(self, mode: str) -> None:
        """The colour of objects drawn from now on. napari's current colour also recolours the selected shapes,
        whose mode does not change: they are deselected first, so each object keeps its mode's colour."""
        if (layer := self._layer(OBJECTS)) is not None:
            layer.selected_data = set()
            layer.current_edge_color = OBJECT_COLORS[mode]

    def seed_positions(self):
        layer = self._layer(SEEDS)
        if layer is None or len(layer.data) == 0:
            return None
        pts = np.round(np.asarray(layer.data)).astype(int)
        return [tuple(p) for p in dict.fromkeys(map(tuple, pts))]

    def has_output_layers(self) -> bool:
        return all(name in self.viewer.layers for name in (VALUES, TRAJECTORY, *(n for n, _ in MAPS.values())))

    def prepare_output_layers(self, geo: dict, scan_shape) -> None:
        """Map, value and trajectory layers for a run (or a replay) of ``scan_shape`` with scale and units
        ``geo`` (:meth:`geometry`); existing ones are reshaped and moved onto it."""
        for step in self.output_layer_steps(geo, scan_shape):
            step()

    def output_layer_steps(self, geo: dict, scan_shape) -> list:
        """:meth:`prepare_output_layers` as separate calls, one layer each, for separate event-loop turns."""
        ny, nx = scan_shape
        steps = []

        def add(name, make):
            if name not in self.viewer.layers:
                steps.append(make)

        for key, (name, cmap) in MAPS.items():
            add(name, lambda name=name, cmap=cmap, key=key: self.viewer.add_image(
                np.zeros((ny, nx), np.float32), name=name, colormap=cmap, opacity=0.7, blending="translucent",
                visible=(key == "mean"), **geo))
        add(VALUES, lambda: self.viewer.add_points(np.zeros((0, 2)), name=VALUES, size=max(ny, nx) / 40,
                                                   symbol="square", border_width=0, visible=False,
                                                   features={"value": np.zeros(0)}, **geo))
        add(TRAJECTORY, lambda: self.viewer.add_points(
            np.zeros((0, 2)), name=TRAJECTORY, size=max(ny, nx) / 60, border_color="white",
            features={"step": np.zeros(0, int), "value": np.zeros(0), "kind": []}, **geo))

        def reset():
            for name, _ in MAPS.values():
                if name in self.viewer.layers and self.viewer.layers[name].data.shape != (ny, nx):
                    self.viewer.layers[name].data = np.zeros((ny, nx), np.float32)
            for layer in self.viewer.layers:
                if layer.name in SCAN_LAYERS:
                    layer.scale, layer.units = geo["scale"], geo["units"]
            self._auto_limits = {}   # a new run (or replay) starts with contrast fitted to its maps

        return [*steps, reset]

    def show_maps(self, maps: dict) -> None:
        """Mean / std / acquisition maps into their layers (-inf acquisition: not available). A hidden layer
        gets its map when it is shown: each map set is a texture upload and a repaint, and two of the three are
        hidden by default."""
        for key, (name, _) in MAPS.items():
            m, layer = maps.get(key), self._layer(name)
            if m is None or layer is None:
                continue
            if not layer.visible:
                if id(layer) not in self._watching:
                    self._watching.add(id(layer))
                    layer.events.visible.connect(lambda e, name=name: self._show_pending(name))
                self._pending[name] = (key, m)
                continue
            self._pending.pop(name, None)
            self._set_map(key, name, layer, m)

    def _show_pending(self, name: str) -> None:
        layer = self._layer(name)
        if layer is not None and layer.visible and name in self._pending:
            key, m = self._pending.pop(name)
            self._set_map(key, name, layer, m)

    def _set_map(self, key: str, name: str, layer, m) -> None:
        m = np.asarray(m, dtype=np.float32)
        finite = np.isfinite(m)
        if key == "acq":
            m = np.where(finite, m, m[finite].min() if finite.any() else 0.0)
        set_before = self._auto_limits.get(name)
        user_set = set_before is not None and tuple(layer.contrast_limits) != set_before
        layer.data = m
        if user_set:   # the user set the contrast (layer controls): it stays as they set it
            return
        lo, hi = float(m.min()), float(m.max())
        layer.contrast_limits = (lo, hi if hi > lo else lo + 1e-12)
        self._auto_limits[name] = tuple(layer.contrast_limits)

    def show_points(self, positions, point_steps, values, kinds, budget: int) -> None:
        """The trajectory: seeds cyan, then coloured by step (:data:`TRAJECTORY_COLORS`)."""
        import matplotlib

        layer = self._layer(TRAJECTORY)
        if layer is None:
            return
        steps = np.asarray(point_steps)
        layer.data = np.asarray(positions, dtype=float).reshape(-1, 2)
        layer.features = {"step": steps, "value": np.asarray(values), "kind": list(kinds)}
        if len(steps):
            cmap, lo, hi = TRAJECTORY_COLORS
            frac = lo + (hi - lo) * np.clip((steps + 1) / max(1, budget), 0, 1)
            colors = np.where((steps < 0)[:, None], np.array([[0, 1, 1, 1.0]]), matplotlib.colormaps[cmap](frac))
            layer.face_color = colors

    def show_run(self, view, ref) -> None:
        """Trajectory, measured values under the current scalarizer, and the Pareto set, from a
        :class:`~napari_hae.core.run.results.RunView` (read-only: the run may go on meanwhile)."""
        import matplotlib

        n = view.n_points
        pos = view.positions_array()
        self.show_points(pos, view.point_steps, view.values, view.kinds, view.budget)
        if view.pareto is not None and n:
            pos_p, vals_p = view.pareto
            if PARETO not in self.viewer.layers:
                self.viewer.add_points(np.zeros((0, 2)), name=PARETO, **self.geometry(ref), symbol="star",
                                       size=max(view.scan_shape) / 30, face_color="gold", border_color="black",
                                       features={"objective_1": np.zeros(0), "objective_2": np.zeros(0)})
            pl = self.viewer.layers[PARETO]
            pl.data = pos_p.astype(float)
            pl.features = {f"objective_{i + 1}": vals_p[:, i] for i in range(vals_p.shape[1])}
        if (vl := self._layer(VALUES)) is not None and n:
            # the scalarizer map of measured points, under the *current* scalarizer (re-computed after a change)
            vals = np.asarray(view.current_values)
            vl.data = pos.astype(float)
            vl.features = {"value": vals}
            finite = vals[np.isfinite(vals)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
            vl.face_color = matplotlib.colormaps["viridis"]((vals - lo) / (hi - lo if hi > lo else 1.0))

    def show_manifold(self, manifold, units=("pixel", "pixel")) -> None:
        """The rVAE's decoded latent grid (not on the scan grid; ``units`` those of the other layers, else napari
        warns "Inconsistent units across layers" and stops using units for rendering)."""
        name = "hAE rVAE manifold"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = manifold
        else:
            self.viewer.add_image(manifold, name=name, colormap="gray", visible=False, units=units)
