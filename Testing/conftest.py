"""Shared pytest fixtures: real Slicer MRML from slicer-core and the real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path | None:
    """``$VF_DATA`` or ``../shared/data`` beside the repository, when present."""
    env = os.environ.get("VF_DATA")
    for candidate in ([Path(env)] if env else []) + [REPO.parent / "shared" / "data"]:
        if candidate.is_dir():
            return candidate
    return None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data folder; tests using it skip cleanly when it is absent."""
    d = shared_data_dir()
    if d is None:
        pytest.skip("real data (../shared/data or $VF_DATA) not present")
    return d


class MRML:
    """A headless Slicer MRML scene with the module logics the product uses kept alive."""

    def __init__(self) -> None:
        import slicer

        self.slicer = slicer
        self.scene = slicer.vtkMRMLScene()
        self.app_logic = slicer.vtkSlicerApplicationLogic()
        self.app_logic.SetMRMLScene(self.scene)
        self.logics = {}
        for name, cls in [
            ("Colors", slicer.vtkSlicerColorLogic),
            ("Markups", slicer.vtkSlicerMarkupsLogic),
            ("Volumes", slicer.vtkSlicerVolumesLogic),
            ("Segmentations", slicer.vtkSlicerSegmentationsModuleLogic),
            ("Tables", slicer.vtkSlicerTablesLogic),
            ("SubjectHierarchy", slicer.vtkSlicerSubjectHierarchyModuleLogic),
        ]:
            logic = cls()
            if hasattr(logic, "SetMRMLApplicationLogic"):
                logic.SetMRMLApplicationLogic(self.app_logic)
            logic.SetMRMLScene(self.scene)
            self.app_logic.SetModuleLogic(name, logic)
            self.logics[name] = logic

    def read_node(self, class_name: str, path: Path):
        """Add a node of ``class_name`` and read ``path`` into it through its storage node."""
        node = self.scene.AddNewNodeByClass(class_name)
        storage = node.CreateDefaultStorageNode()
        self.scene.AddNode(storage)
        node.SetAndObserveStorageNodeID(storage.GetID())
        storage.SetFileName(str(path))
        if not storage.ReadData(node):
            raise OSError(f"Slicer could not read {path}")
        return node


@pytest.fixture()
def mrml() -> MRML:
    """A fresh scene per test (slicer-core is skipped when not installed)."""
    pytest.importorskip("slicer")
    return MRML()
