"""napari closed while the dock trains the rVAE feature space (issue 14, defect 11): the process must end
cleanly (it crashed with 'terminate called' when the interpreter killed the training thread inside torch)."""

import sys
import time

import napari
from qtpy.QtCore import QTimer

from napari_hae._widget import HAEWidget

viewer = napari.Viewer(show=True)
viewer.open_sample("napari-hae", "nanoparticles")
w = HAEWidget(viewer)
viewer.window.add_dock_widget(w, name="hAE")
w.patch_size.value = 16
epochs = []
w.compute_feature_space(epochs=500)
w._feature_worker.yielded.connect(lambda item: epochs.append(item))
t0 = time.time()


def close_when_training():
    if epochs:
        print(f"closing after epoch {len(epochs)}", flush=True)
        viewer.close()
    else:
        QTimer.singleShot(100, close_when_training)


QTimer.singleShot(100, close_when_training)
napari.run()
print(f"closed {time.time() - t0:.1f} s after the start", flush=True)
sys.exit(0)
