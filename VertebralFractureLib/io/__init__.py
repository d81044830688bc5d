"""Reading and writing images, VerSe data, Slicer files and the analysis contract.

Submodules are imported on use so that ``import VertebralFractureLib.io`` stays cheap.
"""

from __future__ import annotations
