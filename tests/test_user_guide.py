"""The user guide is followed literally (issue 14): every menu path it names (*A > B > C*) exists in napari's
menus, and every control it names in bold exists in the dock under that label."""

import re
from pathlib import Path

import pytest

napari = pytest.importorskip("napari")

from napari_hae._widget import HAEWidget  # noqa: E402

pytestmark = pytest.mark.gui
GUIDE = Path(__file__).resolve().parents[1] / "docs" / "user_guide.md"
README = Path(__file__).resolve().parents[1] / "README.md"
# bold words of the guide that are prose, not controls
PROSE = {"try it first on the sample", "your own data", "is the model honest?", "and", "pauses", "seeds",
         "objects of interest",
         "cancel feature space"}   # the Feature space button's text while it trains (test_dock_lifecycle)


def _menu_paths(text: str) -> list[list[str]]:
    return [[p.strip() for p in m.split(" > ")] for m in re.findall(r"\*([A-Z][^*\n]*? > [^*\n]*)\*", text)]


def _find(actions, path):
    for name in path[:-1]:
        act = next((a for a in actions if a.text().replace("&", "") == name), None)
        assert act is not None and act.menu() is not None, (path, name, [a.text() for a in actions])
        act.menu().aboutToShow.emit()   # app-model menus fill when shown
        actions = act.menu().actions()
    names = [a.text().replace("&", "") for a in actions]
    assert path[-1] in names, (path, names)


def test_every_menu_path_of_the_guide_and_readme_exists(make_napari_viewer):
    viewer = make_napari_viewer()
    paths = _menu_paths(GUIDE.read_text()) + _menu_paths(README.read_text())
    assert len(paths) >= 3
    for path in paths:
        _find(viewer.window._qt_window.menuBar().actions(), path)


def _dock_labels(w, viewer) -> set[str]:
    from magicgui.widgets import Container
    from qtpy.QtWidgets import QAbstractButton, QLabel, QTabWidget

    labels = set()
    for cls in (QAbstractButton, QLabel):
        labels |= {x.text().replace("&", "") for x in w.findChildren(cls)}
    for tabs in w.findChildren(QTabWidget):
        labels |= {tabs.tabText(i) for i in range(tabs.count())}

    def walk(c):
        for child in c:
            labels.add(str(child.label))
            if isinstance(child, Container):
                walk(child)

    for panel in (w.data, w.target, w.policy, w.run_panel, w.monitors):
        labels.add(panel.label)
        walk(panel)
    labels |= {layer.name for layer in viewer.layers}
    return {x.strip().lower() for x in labels if x}


def test_every_control_the_guide_names_in_bold_exists(make_napari_viewer, small_sample):
    from napari_hae._layers import dataset_layer_data

    viewer = make_napari_viewer()
    for data, kw, _ in dataset_layer_data(small_sample):
        viewer.add_image(data, **kw)
    w = HAEWidget(viewer)
    w.multi_objective.value = True                      # its fields shown
    w.view.prepare_output_layers(w.view.geometry(w.layer_combo.value), small_sample.scan_shape)
    viewer.add_points(name="hAE Pareto set")            # made by a multi-objective run
    labels = _dock_labels(w, viewer)
    named = {m.strip().rstrip(":").lower() for m in re.findall(r"\*\*([^*\n]+)\*\*", GUIDE.read_text())}
    missing = sorted(n for n in named - PROSE if not any(n == x or n == x.split(" (")[0] for x in labels))
    assert missing == [], (missing, sorted(labels))
