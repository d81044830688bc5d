"""VertebralFracture: find, segment and grade vertebral compression fractures in CT.

Importing this package is cheap: torch, monai, SimpleITK, vtk and slicer are imported only inside
the modules that need them.
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
