"""Lesion and brain intensities (z) of preprocessed synthetic cases against the real CE-T1 scans.

    python benchmarks/intensity_contrast.py [--pre runs/default/02_preprocessing] [--real-dir DIR] [--cases 10]

Per case: the lesion's 25th/50th/90th percentile and, for the brain outside the lesion (dilated by
3 voxels), the 99th and 99.9th percentile and the standard deviation. Synthetic cases are read from a
preprocessing folder (``image.npy``, ``mask.npy``, ``brain.npy``: z-scored in the brain); the real scans
(``../shared/data/real``: already z-scored) use label 4 (enhancing tumour) and the whole tumour (labels
> 0) for the exclusion. Figures of the book's deviations page ("Real scans").
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import ndimage

ROOT = Path(__file__).resolve().parents[1]


def _row(name: str, img: np.ndarray, lesion: np.ndarray, tumour: np.ndarray, brain: np.ndarray) -> dict:
    bg = img[brain & ~ndimage.binary_dilation(tumour, iterations=3)]
    les = img[lesion]
    q = np.percentile(les, [25, 50, 90])
    return {"case": name, "lesion_p25": round(float(q[0]), 2), "lesion_p50": round(float(q[1]), 2),
            "lesion_p90": round(float(q[2]), 2), "brain_p99": round(float(np.percentile(bg, 99)), 2),
            "brain_p999": round(float(np.percentile(bg, 99.9)), 2), "brain_sd": round(float(bg.std()), 2)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pre", default=str(ROOT / "runs" / "default" / "02_preprocessing"))
    ap.add_argument("--real-dir", default=str(ROOT.parent / "shared" / "data" / "real" / "brats2015_deepmedic"))
    ap.add_argument("--cases", type=int, default=10, help="synthetic internal cases with lesions")
    args = ap.parse_args()
    rows = []
    for d in sorted(Path(args.pre).glob("INT*"))[: args.cases]:
        mask = np.load(d / "mask.npy") > 0
        if mask.any():
            rows.append({"source": "synthetic", **_row(d.name, np.load(d / "image.npy"), mask, mask,
                                                        np.load(d / "brain.npy") > 0)})
    real = Path(args.real_dir)
    if real.is_dir():
        import nibabel as nib

        for d in sorted(p for p in real.iterdir() if p.is_dir()):
            img = np.asarray(nib.load(d / "T1c_subtrMeanDivStd.nii.gz").dataobj, dtype=np.float32)
            lab = np.asarray(nib.load(d / "OTMultiClass.nii.gz").dataobj)
            brain = np.asarray(nib.load(d / "brainmask.nii.gz").dataobj) > 0
            rows.append({"source": "real", **_row(d.name, img, lab == 4, lab > 0, brain)})
    else:
        print(f"no real scans at {real}; synthetic cases only", file=sys.stderr)
    for r in rows:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    sys.exit(main())
