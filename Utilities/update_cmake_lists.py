"""Rewrite the list of library files in CMakeLists.txt (``VertebralFractureLib_PYTHON_SCRIPTS``).

Run from anywhere after adding or removing a file in ``VertebralFractureLib``:
``python Utilities/update_cmake_lists.py``. ``Testing/test_module_files.py`` fails while the list
and the package differ, because the Slicer extension installs exactly the listed files.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def library_files(root: Path = ROOT) -> list[str]:
    """Every ``.py`` file of the package, as CMake paths relative to the repository root."""
    package = root / "VertebralFractureLib"
    return sorted(p.relative_to(root).as_posix() for p in package.rglob("*.py") if "__pycache__" not in p.parts)


def update(root: Path = ROOT) -> bool:
    """Rewrite the list in ``CMakeLists.txt``; returns True when the file changed."""
    path = root / "CMakeLists.txt"
    text = path.read_text(encoding="utf-8")
    block = "set(VertebralFractureLib_PYTHON_SCRIPTS\n" + "".join(f"  {f}\n" for f in library_files(root)) + "  )"
    new, count = re.subn(r"set\(VertebralFractureLib_PYTHON_SCRIPTS\s.*?\)", block, text, count=1, flags=re.S)
    if count != 1:
        raise ValueError(f"set(VertebralFractureLib_PYTHON_SCRIPTS …) not found in {path}")
    if new != text:
        path.write_text(new, encoding="utf-8")
    return new != text


if __name__ == "__main__":
    print("CMakeLists.txt updated" if update() else "CMakeLists.txt already lists every library file")
