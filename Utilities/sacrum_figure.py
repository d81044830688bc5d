"""Figure: where stage 1 sees the sacrum of a CT, for docs/localization.md.

Usage:
    python Utilities/sacrum_figure.py CT OUT.png [--title TEXT]

Runs stage 1 as the analysis does (the installed models; stage 2's outlines count a vertebra found
twice once) and draws, in the spine-following frame of the anchors (:mod:`VertebralFractureLib.anchors`):
left, a coronal slab through the vertebral bodies with the named chain and the rows taken for the
sacral alae; right, the middle sacral row seen from above, with the band where the alae's depth is
measured. Prints the sacrum anchor's detail (or that there is none). The CT is only read.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def sacrum_view(ct: Path) -> tuple:
    """Stage 1's chain of ``ct`` and what the anchors saw: ``(found, anchors, frame, sacral_rows)``."""
    from VertebralFractureLib import anchors as A
    from VertebralFractureLib.io.readers import read_image
    from VertebralFractureLib.localize import localize
    from VertebralFractureLib.segment import chain_outlines

    vol = read_image(ct).volume
    chains, reports = [], []

    def anchors_of(positions: np.ndarray):
        chains.append(np.asarray(positions, float).copy())
        reports.append(A.find_anchors(vol, positions))
        return reports[-1]

    found = localize(vol, anchors=anchors_of, outlines=lambda p: chain_outlines(vol, p))
    if not chains:
        return found, [], None, None
    frame, bone = A.anchor_frame(vol, chains[-1])
    rows = A._sacral_rows(frame, bone)[0]
    return found, [a for a in reports[-1].anchors if a.kind == "sacrum" and a.names], frame, rows


def draw(found, sacrum, frame, rows, out: Path, title: str) -> None:
    """The two panels (module docstring) into ``out``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from VertebralFractureLib.anatomy import vertebra
    from VertebralFractureLib.anchors import ALA_BAND_MM, SACRUM_V_MM

    fig, ax = plt.subplots(1, 2, figsize=(11, 5.2), gridspec_kw={"width_ratios": [1, 1.4]})
    bodies = (frame.v >= -25.0) & (frame.v <= 10.0)
    slab = np.where(frame.inside[:, bodies, :].all(axis=1), frame.hu[:, bodies, :].mean(axis=1), np.nan)
    ax[0].imshow(slab, cmap="gray", vmin=-200, vmax=900, aspect="equal",
                 extent=[frame.u[0], frame.u[-1], frame.z[-1], frame.z[0]])
    for k in np.flatnonzero(rows):
        ax[0].axhline(frame.z[k], color="orange", lw=0.6, alpha=0.7)
    zs = [float(c.position_lps[2]) for c in found]
    for c in found:
        p = np.asarray(c.position_lps, float)
        u = p[0] - float(np.interp(p[2], frame.z[::-1], frame.cx[::-1]))
        ax[0].plot(u, p[2], "o", color="cyan", ms=4)
        ax[0].text(u + 6, p[2], vertebra(c.label).name, color="cyan", fontsize=8, va="center")
    ax[0].set_xlim(-90, 110)
    if zs:
        low = min(zs + [float(z) for z in frame.z[rows]]) - 15
        ax[0].set_ylim(low, max(zs) + 20)
    ax[0].set_xlabel("u (mm, + patient's left)")
    ax[0].set_ylabel("LPS z (mm)")
    ax[0].set_title("coronal slab through the bodies; orange: rows taken for the sacral alae", fontsize=9)
    ks = np.flatnonzero(rows)
    if ks.size:
        k = int(ks[len(ks) // 2])
        ax[1].imshow(np.where(frame.inside[k], frame.hu[k], np.nan), cmap="gray", vmin=-200, vmax=900, aspect="equal",
                     extent=[frame.u[0], frame.u[-1], frame.v[-1], frame.v[0]])
        for x in (-ALA_BAND_MM[1], -ALA_BAND_MM[0], ALA_BAND_MM[0], ALA_BAND_MM[1]):
            ax[1].axvline(x, color="orange", lw=0.8, ls="--")
        ax[1].axhspan(SACRUM_V_MM[0], SACRUM_V_MM[1], color="orange", alpha=0.08)
        ax[1].set_title(f"sacral row at z = {frame.z[k]:.0f} mm seen from above (white: outside the image;\n"
                        "dashed: the band where the alae's depth is measured)", fontsize=9)
    else:
        ax[1].set_title("no sacral row", fontsize=9)
    ax[1].set_xlim(-100, 110)
    ax[1].set_xlabel("u (mm, + patient's left)")
    ax[1].set_ylabel("v (mm, + posterior)")
    said = (f"sacrum anchor on {vertebra(found[sacrum[0].index].label).name}, confidence {sacrum[0].confidence}"
            if sacrum else "no sacrum anchor")
    fig.suptitle(f"{title}: {said}" if title else said, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("ct", type=Path, help="a CT (any format the analysis reads)")
    ap.add_argument("output", type=Path, help="the figure (.png); an existing file is not overwritten")
    ap.add_argument("--title", default="", help="text before the anchor's summary (say where the CT comes from)")
    args = ap.parse_args(argv)
    if args.output.exists():
        ap.error(f"{args.output} exists; choose another name")
    found, sacrum, frame, rows = sacrum_view(args.ct)
    if frame is None:
        print("no vertebra found: no figure", file=sys.stderr)
        return 1
    draw(found, sacrum, frame, rows, args.output, args.title)
    print(sacrum[0].detail if sacrum else "no sacrum anchor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
