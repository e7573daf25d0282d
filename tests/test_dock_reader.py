"""Opening files as a microscopist does (issue 14, defect 10): the reader's own message when a file cannot be
read, a HAADF opened on its own, the HAADF found beside an EDS map by its name, and the structural image chosen
in the dock among the open images (refused when it is not on the map's scan grid)."""

import numpy as np
import pytest

napari = pytest.importorskip("napari")


from napari_hae._layers import dataset_of  # noqa: E402
from napari_hae._qt.data_panel import FROM_FILE  # noqa: E402
from napari_hae._widget import HAEWidget  # noqa: E402
from napari_hae.core.data.io import pair_image, save_spectrum_image_hspy  # noqa: E402
from qt_input import choose  # noqa: E402

pytestmark = pytest.mark.gui


def test_a_damaged_file_says_what_is_wrong(make_napari_viewer, tmp_path, monkeypatch):
    import napari.utils.notifications as notifications
    from napari.errors import ReaderPluginError

    from napari_hae.core.errors import HAEInputError

    shown = []
    monkeypatch.setattr(notifications, "show_error", lambda msg: shown.append(msg))
    bad = tmp_path / "map.hspy"
    bad.write_bytes(b"not an hdf5 file at all")
    viewer = make_napari_viewer()
    with pytest.raises((ReaderPluginError, HAEInputError)):   # napari's own error, or ours when it passes it on
        viewer.open(str(bad), plugin="napari-hae")
    assert len(shown) == 1 and shown[0].startswith("napari-hae could not open map.hspy: HyperSpy could not read")
    assert "Fix: check that the file is complete" in shown[0]


@pytest.mark.slow   # a run in a real window: the full suite
def test_a_haadf_opened_alone_is_an_image_the_dock_can_use(make_napari_viewer, small_sample, tmp_path, qtbot,
                                                            monkeypatch):
    monkeypatch.setenv("NAPARI_HAE_RUNS_DIR", str(tmp_path / "runs"))
    folder = tmp_path / "session"
    folder.mkdir()
    save_spectrum_image_hspy(small_sample, folder / "map.hspy")           # a map saved without its HAADF
    other = small_sample.structural[::-1].copy()                          # a HAADF file of the same grid
    import hyperspy.api as hs

    hs.signals.Signal2D(other).save(tmp_path / "Scan_HAADF.hspy")
    viewer = make_napari_viewer(show=True)
    (dataset_layer,) = viewer.open(str(folder / "map.hspy"), plugin="napari-hae")
    data = dataset_of(dataset_layer)
    assert any(n.startswith("No structural image given") for n in data.notes)   # total intensity, recorded
    w = HAEWidget(viewer)
    viewer.window.add_dock_widget(w, name="hAE")
    qtbot.waitExposed(viewer.window._qt_window)
    assert "No HAADF was found beside the file" in w.status.value
    (haadf,) = viewer.open(str(tmp_path / "Scan_HAADF.hspy"), plugin="napari-hae")
    assert dataset_of(haadf) is None
    np.testing.assert_array_equal(haadf.data, other)
    choose(w.structural_combo, "Scan_HAADF")
    assert w.status.value.startswith("Structural image: 'Scan_HAADF' (48 x 48, the dataset's scan grid)")
    np.testing.assert_array_equal(w.dataset.structural, other)
    assert w.dataset.notes == ["structural image: layer 'Scan_HAADF'"]
    np.testing.assert_array_equal(w.dataset.spectra, small_sample.spectra)
    exp = w.build_experiment()
    assert exp.trace.dataset["notes"] == ["structural image: layer 'Scan_HAADF'"]
    np.testing.assert_array_equal(exp.trace.structural, other)
    exp.close()
    viewer.add_image(np.ones((20, 30)), name="another scan")
    choose(w.structural_combo, "another scan")                           # not acquired with this map
    assert w.structural_combo.value == FROM_FILE
    assert w.status.value.startswith("Structural image: The image 'another scan' is 20 x 30 pixels, the "
                                     "dataset's scan grid 48 x 48")


def test_the_haadf_beside_an_eds_map_is_found_by_its_name(shared_data):
    d = shared_data / "sio2_eds"
    assert pair_image(d / "SiO2_EDS_Spectrum_Image.hspy") == d / "SiO2_HAADF_Image.hspy"
    d = shared_data / "cuzn_eels"
    assert pair_image(d / "CuZn_EELS_mapping_tutorial.hspy") == d / "CuZn_HAADF.hspy"


def test_the_npz_reader_takes_spectrum_images_only_and_zspy_is_not_offered(tmp_path):
    """napari asks which reader to use when two claim a file: an .npz without a spectrum image's keys (and a .zspy
    folder, which napari cannot hand to a file reader) is declined."""
    import numpy as np

    from napari_hae._reader import get_reader, read_spectrum_image

    np.savez(tmp_path / "mine.npz", spectra=np.ones((4, 4, 3)), structural=np.ones((4, 4)))
    np.savez(tmp_path / "other.npz", weights=np.ones(3))
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    assert get_reader(str(tmp_path / "mine.npz")) is read_spectrum_image
    assert get_reader(str(tmp_path / "other.npz")) is None
    assert get_reader(str(tmp_path / "broken.npz")) is None
    (tmp_path / "s.zspy").mkdir()
    assert get_reader(str(tmp_path / "s.zspy")) is None
