"""Tissue classes of the SynthSpine label map (internal; CT intensities are drawn per class)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

import numpy as np

from VertebralFractureLib.synth.shapes import Box, Grid


class Tissue(IntEnum):
    """Tissue codes of the working label map."""

    AIR = 0
    FAT = 1
    MUSCLE = 2
    SKIN = 3
    LUNG = 4
    BLOOD = 5
    MYOCARDIUM = 6
    LIVER = 7
    SPLEEN = 8
    KIDNEY = 9
    BOWEL = 10
    CSF = 11
    CORD = 12
    NUCLEUS = 13
    ANNULUS = 14
    TRABECULAR = 15
    CORTICAL = 16
    ENDPLATE = 17
    POSTERIOR_MARROW = 18
    MARROW = 19
    IMPACTED = 20
    GAS = 21
    CARTILAGE = 22
    TABLE = 23
    ORGAN = 24
    VEIN = 25
    LIGAMENT = 26
    VENOUS_BLOOD = 27
    BRAIN = 28
    KIDNEY_MEDULLA = 29
    OSTEOPHYTE = 30


N_TISSUES = max(int(t) for t in Tissue) + 1

#: Tissues that are bone (used for vertebra-label ownership and HU statistics).
BONE = (Tissue.TRABECULAR, Tissue.CORTICAL, Tissue.ENDPLATE, Tissue.POSTERIOR_MARROW, Tissue.MARROW,
        Tissue.IMPACTED, Tissue.OSTEOPHYTE)


@dataclass
class Canvas:
    """The working label maps: tissue class and VerSe vertebra label per voxel."""

    grid: Grid
    tissue: np.ndarray
    instance: np.ndarray
    cavity: np.ndarray | None = None  # depth (mm) inside the body wall, set by the body outline

    @classmethod
    def empty(cls, grid: Grid, background: Tissue = Tissue.AIR) -> Canvas:
        return cls(grid, np.full(grid.shape, int(background), np.uint8), np.zeros(grid.shape, np.uint8))

    def paint(self, box: Box, mask: np.ndarray, tissue: int, instance: int | None = 0) -> None:
        """Set ``tissue`` (and the vertebra label, 0 = none; ``None`` leaves it) where ``mask`` holds."""
        sl = box.slices
        t = self.tissue[sl]
        t[mask] = int(tissue)
        if instance is not None:
            self.instance[sl][mask] = int(instance)

    def paint_where(self, box: Box, mask: np.ndarray, tissue: int, only: tuple[int, ...]) -> None:
        """Set ``tissue`` where ``mask`` holds and the current tissue is one of ``only``."""
        sl = box.slices
        t = self.tissue[sl]
        allowed = np.zeros(256, bool)
        allowed[list(only)] = True
        t[mask & allowed[t]] = int(tissue)
