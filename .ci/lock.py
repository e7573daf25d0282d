"""Regenerate .ci/constraints.txt: the versions a fresh `pip install -e ".[testing]"` resolves to today.

    python .ci/lock.py

CI installs through this file (.ci/run), so it tests what a user installing on the day of the lock gets, and a
dependency change is a deliberate commit of this file. pip resolves without installing anything (--dry-run,
--ignore-installed: the packages already on this machine do not count).
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.json"
        subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
                        "--disable-pip-version-check", "--report", str(report), "-e", ".[testing]"],
                       cwd=ROOT, check=True)
        items = json.loads(report.read_text())["install"]
    pins = sorted((i["metadata"]["name"], i["metadata"]["version"]) for i in items
                  if i["metadata"]["name"].lower().replace("_", "-") != "napari-hae")
    lines = [f"# What `pip install -e \".[testing]\"` resolved to on {date.today().isoformat()} (Python "
             f"{sys.version_info.major}.{sys.version_info.minor}); regenerate with `python .ci/lock.py`.",
             *(f"{name}=={version}" for name, version in pins)]
    (ROOT / ".ci" / "constraints.txt").write_text("\n".join(lines) + "\n")
    print(f"{len(pins)} pins written to .ci/constraints.txt")
    return 0


if __name__ == "__main__":
    sys.exit(main())
