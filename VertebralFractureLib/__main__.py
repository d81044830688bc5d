"""``python -m VertebralFractureLib …`` (used by the Slicer module as ``PythonSlicer -m …``)."""

from __future__ import annotations

from VertebralFractureLib.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
