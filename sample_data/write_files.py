"""Write the bundled sample datasets to HyperSpy .hspy files: python sample_data/write_files.py OUT_DIR"""

import sys
from pathlib import Path

from napari_hae.core.data.io import save_spectrum_image_hspy
from napari_hae.core.data.samples import SAMPLES, load_sample

out = Path(sys.argv[1] if len(sys.argv) > 1 else "sample_data/out")
out.mkdir(parents=True, exist_ok=True)
for name in SAMPLES:
    data = load_sample(name)
    save_spectrum_image_hspy(data, out / f"{name}_eels.hspy", out / f"{name}_haadf.hspy")
    print(f"wrote {out / (name + '_eels.hspy')} and {out / (name + '_haadf.hspy')}")
