"""What a run shows in napari's layers: predicted maps, trajectory coloured by step, measured values, seeds and
objects drawn by the user, and the Pareto set. Pure drawing: it reads a RunView or a replay state."""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Callable

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
WARM_MS = 400   # how long the layers made in advance are drawn transparent (LayerView.warm): a frame or more
SCAN_LAYERS = (SEEDS, OBJECTS, VALUES, TRAJECTORY, PARETO, *(name for name, _ in MAPS.values()))   # on the scan grid


class LayerView:
    def __init__(self, viewer):
        self.viewer = viewer
        self._auto_limits: dict[str, tuple] = {}   # the contrast limits last set here, per map layer
        self._pending: dict[str, Callable] = {}    # the latest drawing for a hidden layer, done when it is shown
        self._watching: set[int] = set()           # layers whose visibility is watched for that
        self._unrevealed: set[str] = set()          # made hidden in advance, shown when a run first draws
        self._warming: dict[str, float] = {}         # drawn transparent once (see warm): their opacities
        self._warmed = weakref.WeakSet()              # the layers drawn so once: their shaders are built
        self.settling = False   # from a dataset's layers made in advance (output_layer_steps) to their warm-up's end

    def _layer(self, name):
        return self.viewer.layers[name] if name in self.viewer.layers else None

    @staticmethod
    def geometry(ref) -> dict:
        """The scale and units hAE layers share with the dataset layer ``ref`` (napari warns on mixed units, and a
        click on a layer of another scale lands on the wrong pixel)."""
        return {"scale": tuple(ref.scale[-2:]), "units": tuple(str(u) for u in ref.units[-2:])}

    def follow(self, ref) -> list[str]:
        """Put every existing hAE layer on ``ref``'s scale and units; the names of those that moved."""
        return self._place(self.geometry(ref))

    def _place(self, geo: dict) -> list[str]:
        """Put every hAE layer not already there on scale and units ``geo``; the names of those that moved (setting
        a layer's scale to the one it has still makes napari redo the layer list and the viewer's dimensions: ~0.2
        s at a run's start for all of them)."""
        moved = []
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

    def output_layer_steps(self, geo: dict, scan_shape, in_advance: bool = False) -> list:
        """:meth:`prepare_output_layers` as separate calls, one layer each, for separate event-loop turns.

        ``in_advance`` (a dataset chosen, no run yet): the layers are made hidden, leaving the user's layer
        selection as it was, and those a run shows are shown when a run or replay first draws into them
        (:meth:`reveal`). napari takes 0.1-0.3 s to make each (its layer controls): a pause when the data opens,
        not five during the run's first seconds."""
        ny, nx = scan_shape
        steps = []
        self.settling = self.settling or in_advance

        def add(name, shown: bool, make):   # checked again when it runs: a step drawn meanwhile may have added it
            def step():
                if name in self.viewer.layers:
                    return
                keep = self.viewer.layers.selection.active
                self._auto_limits.pop(name, None)   # a layer made (again) gets contrast fitted to its map
                make(shown and not in_advance)
                if in_advance:
                    self._unrevealed |= {name} if shown else set()
                    if keep is not None and keep in self.viewer.layers:
                        self.viewer.layers.selection.active = keep
            if name not in self.viewer.layers:
                steps.append(step)

        for key, (name, cmap) in MAPS.items():
            add(name, key == "mean", lambda visible, name=name, cmap=cmap: self.viewer.add_image(
                np.zeros((ny, nx), np.float32), name=name, colormap=cmap, opacity=0.7, blending="translucent",
                visible=visible, **geo))
        add(VALUES, False, lambda visible: self.viewer.add_points(
            np.zeros((0, 2)), name=VALUES, size=max(ny, nx) / 40, symbol="square", border_width=0, visible=visible,
            features={"value": np.zeros(0)}, **geo))
        add(TRAJECTORY, True, lambda visible: self.viewer.add_points(
            np.zeros((0, 2)), name=TRAJECTORY, size=max(ny, nx) / 60, border_color="white", visible=visible,
            features={"step": np.zeros(0, int), "value": np.zeros(0), "kind": []}, **geo))

        def reset():
            for name, _ in MAPS.values():
                if name in self.viewer.layers and self.viewer.layers[name].data.shape != (ny, nx):
                    self.viewer.layers[name].data = np.zeros((ny, nx), np.float32)
            self._place(geo)
            self.reveal()

        return steps if in_advance else [*steps, reset]

    def warm(self) -> None:
        """Draw the layers made in advance that a run shows once, transparent, then hide them again after
        ``WARM_MS``: vispy builds a layer's shader programs on its first frame (0.1-0.3 s in software OpenGL), and
        that frame was the run's first, its longest pause. Now it falls in the pauses of opening the data. Once
        per layer: another dataset chosen moves the same layers, whose shaders are built (drawing them again cost
        two more compositions of the window)."""
        from qtpy.QtCore import QTimer

        for name in self._unrevealed:
            layer = self._layer(name)
            if layer is not None and not layer.visible and name not in self._warming and layer not in self._warmed:
                self._warming[name] = layer.opacity
                self._warmed.add(layer)
                layer.opacity = 0.0
                layer.visible = True
        if self._warming:
            QTimer.singleShot(WARM_MS, self._cool)
        else:
            self.settling = False

    def _cool(self, hide: bool = True) -> None:
        from .turns import viewer_open

        warming, self._warming, self.settling = self._warming, {}, False
        if not viewer_open(self.viewer):
            return
        for name, opacity in warming.items():
            if (layer := self._layer(name)) is not None:
                layer.opacity = opacity
                layer.visible = layer.visible and not (hide and name in self._unrevealed)

    def new_run(self) -> None:
        """A new run (or replay) starts: its maps get contrast fitted to them, until the user sets one. Called when
        it starts, not in its queued layer steps, which may run after the user set a contrast on its first maps."""
        self._auto_limits = {}

    def reveal(self) -> None:
        """Show the layers made in advance that a run shows (the mean map, the trajectory), once."""
        self._cool(hide=False)
        for name in self._unrevealed:
            if name in self.viewer.layers:
                self.viewer.layers[name].visible = True
        self._unrevealed = set()

    def show_maps(self, maps: dict) -> None:
        """Mean / std / acquisition maps into their layers (-inf acquisition: not available). A hidden layer
        gets its map when it is shown: each map set is a texture upload and a repaint, and two of the three are
        hidden by default."""
        for key, (name, _) in MAPS.items():
            m, layer = maps.get(key), self._layer(name)
            if m is not None and layer is not None:
                self._draw(layer, lambda key=key, name=name, layer=layer, m=m: self._set_map(key, name, layer, m))

    def _draw(self, layer, draw: Callable[[], None]) -> None:
        """``draw()`` now if ``layer`` is visible, else when it is next shown (only the latest drawing is kept):
        napari refreshes a hidden layer's data, features and thumbnail as a shown one's, ~20 ms a layer a step."""
        if layer.visible:
            self._pending.pop(layer.name, None)
            draw()
            return
        if id(layer) not in self._watching:
            self._watching.add(id(layer))
            layer.events.visible.connect(lambda e, name=layer.name: self._show_pending(name))
        self._pending[layer.name] = draw

    def _show_pending(self, name: str) -> None:
        layer = self._layer(name)
        if layer is not None and layer.visible and name in self._pending:
            self._pending.pop(name)()

    def _same_extent(self, layer, positions=None):
        """A context in which setting ``layer``'s data does not make napari recompute the viewer's dimensions
        from every layer (~9 ms a data event, two per points layer set: a third of a step's drawing), when the
        new data lie inside the ranges the viewer has: a map of the scan's shape, or ``positions`` (scan pixels)
        inside them. Otherwise (or if napari no longer has that callback) the usual recomputation."""
        recompute = getattr(self.viewer, "_on_layers_change", None)
        if recompute is None or not self._inside_ranges(layer, positions):
            return contextlib.nullcontext()
        return layer.events.data.blocker(recompute)

    def _inside_ranges(self, layer, positions) -> bool:
        ranges = self.viewer.dims.range
        if len(ranges) != 2 or layer.ndim != 2:
            return False
        if positions is None:   # an image of the same shape: its extent does not change
            return hasattr(layer.data, "shape")
        pos = np.asarray(positions, dtype=float).reshape(-1, 2)
        if not len(pos):
            return True
        world = pos * np.asarray(layer.scale) + np.asarray(layer.translate)
        lo, hi = world.min(axis=0), world.max(axis=0)
        return all(r.start <= a and b <= r.stop for r, a, b in zip(ranges, lo, hi))

    def _set_map(self, key: str, name: str, layer, m) -> None:
        m = np.asarray(m, dtype=np.float32)
        finite = np.isfinite(m)
        if key == "acq":
            m = np.where(finite, m, m[finite].min() if finite.any() else 0.0)
        set_before = self._auto_limits.get(name)
        user_set = set_before is not None and tuple(layer.contrast_limits) != set_before
        with self._same_extent(layer) if layer.data.shape == m.shape else contextlib.nullcontext():
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
        positions = np.asarray(positions, dtype=float).reshape(-1, 2)
        with self._same_extent(layer, positions):
            layer.data = positions
        layer.features = {"step": steps, "value": np.asarray(values), "kind": list(kinds)}
        if len(steps):
            cmap, lo, hi = TRAJECTORY_COLORS
            frac = lo + (hi - lo) * np.clip((steps + 1) / max(1, budget), 0, 1)
            colors = np.where((steps < 0)[:, None], np.array([[0, 1, 1, 1.0]]), matplotlib.colormaps[cmap](frac))
            layer.face_color = colors

    def show_run(self, view, ref) -> None:
        """Trajectory, measured values under the current scalarizer, and the Pareto set, from a
        :class:`~napari_hae.core.run.results.RunView` (read-only: the run may go on meanwhile)."""
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
            self._draw(vl, lambda: self._show_values(vl, pos, view.current_values))

    def _show_values(self, layer, positions, values) -> None:
        """The scalarizer map of measured points, under the *current* scalarizer (re-computed after a change)."""
        import matplotlib

        vals = np.asarray(values)
        with self._same_extent(layer, positions):
            layer.data = np.asarray(positions, dtype=float)
        layer.features = {"value": vals}
        finite = vals[np.isfinite(vals)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        layer.face_color = matplotlib.colormaps["viridis"]((vals - lo) / (hi - lo if hi > lo else 1.0))

    def show_manifold(self, manifold, units=("pixel", "pixel")) -> None:
        """The rVAE's decoded latent grid (not on the scan grid; ``units`` those of the other layers, else napari
        warns "Inconsistent units across layers" and stops using units for rendering)."""
        name = "hAE rVAE manifold"
        if name in self.viewer.layers:
            self.viewer.layers[name].data = manifold
        else:
            self.viewer.add_image(manifold, name=name, colormap="gray", visible=False, units=units)
