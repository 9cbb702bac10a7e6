"""Synthetic brain-metastasis cohort: render planned cases, write a cohort folder and its manifest.

No real BM cohort can be downloaded here, so the study's default data are generated. Each case is the
real MNI152 2009 brain (nilearn's template, :mod:`~bmstudy.synthetic.template`) deformed per patient
inside a procedural skull and scalp (:mod:`~bmstudy.synthetic.anatomy`), at real adult scale, rendered
in physical millimetres on the site's voxel grid, with

* 1..``max_lesions`` metastases of clinical size (2..``max_diameter_mm`` mm), mostly at the grey-white
  junction, in the paper's three enhancement patterns plus cystic/haemorrhagic variants, some touching
  each other, each with peritumoral oedema (:mod:`~bmstudy.synthetic.lesions`);
* enhancing mimics that are *not* in the mask: dural sinuses, falx/tentorium, pituitary, cavernous
  sinuses (from the template), cortical veins (some along lesions) and choroid plexus
  (:mod:`~bmstudy.synthetic.vessels`);
* per-case tissue contrast, partial-volume and slice-thickness blur, a bias field, optional motion
  ghosting, Rician noise and the site's intensity scale (:mod:`~bmstudy.synthetic.acquisition`).

The true brain mask of every case is written (``brain/``, manifest column ``brain_truth``); the
manifest's ``brain_mask`` names it only for the internal site (and the external one when
``external_brain_masks``), so the study strips the external cases as real data.
Two sites: ``internal`` (1 mm isotropic) and ``external`` (anisotropic, e.g. 0.9x0.9x1.5 mm, covering the
same physical field of view, with different contrast, enhancement, bias, noise and intensity scale).
Demographics, lesion plans and manual annotation times come from :mod:`~bmstudy.synthetic.plans`; all
parameters from :class:`bmstudy.plan.SynthParams` (presets :data:`bmstudy.plan.SYNTH_PRESETS`).

Everything is deterministic per ``seed`` and independent of process order. A re-run skips a case whose
files exist with the same hash of its plan, the parameters and the generator's source code. The case *plan* is cheap
and computed by :func:`cohort_table` without rendering; :func:`generate_cohort` renders exactly those
plans (one :func:`bmstudy.cases.run_cases` loop), so the manifest cannot diverge.

This module also owns the ``bmstudy synth`` command. The repository's top-level ``data_manifest.csv``
(profile ``default``, seed 0, files under ``data/synthetic/``) is written by :func:`reference_manifest`::

    python -c "from bmstudy.synthetic import reference_manifest; reference_manifest('data_manifest.csv')"
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from functools import lru_cache, partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..cases import run_cases
from ..io.manifest import write_manifest
from ..io.split import systematic_split
from ..plan import SYNTH_PRESETS, SynthParams, synth_params
from ..utils import PathLike, atomic_path, atomic_to_csv, atomic_write_json, get_logger, params_hash, source_hash
from .acquisition import acquire, tissue_image
from .anatomy import head_anatomy
from .fields import voxel_affine
from .lesions import annotator_mask, render_lesions
from .plans import CasePlan, case_rng, plan_cohort
from .preview import default_real_dir, write_preview
from .vessels import render_vessels

__all__ = [
    "STATUS_COLUMNS", "case_files", "cohort_table", "generator_source_hash", "reference_manifest", "render_case", "generate_cohort",
    "add_cli_arguments", "cli_main",
]

#: Columns of ``synth_status.csv``, in order.
STATUS_COLUMNS: tuple[str, ...] = ("patient_id", "status", "seconds", "error")
log = get_logger("bmstudy.synthetic.cohort")


# ----------------------------------------------------------------------------- manifest (no rendering)
def case_files(pid: str) -> dict[str, str]:
    """Paths of a case's files, relative to the cohort folder.

    Parameters
    ----------
    pid : str
        Patient id (e.g. ``INT001``).

    Returns
    -------
    dict
        ``image``, ``mask`` and ``brain_mask`` paths.
    """
    return {"image": f"images/{pid}_t1c.nii.gz", "mask": f"masks/{pid}_mask.nii.gz",
            "brain_mask": f"brain/{pid}_brain.nii.gz"}


def _manifest_row(plan: CasePlan, prof: SynthParams, path_prefix: str) -> dict[str, Any]:
    files = {k: (f"{path_prefix.rstrip('/')}/{v}" if path_prefix else v) for k, v in case_files(plan.patient_id).items()}
    d = np.array([les.diameter_mm for les in plan.lesions])
    sp = prof.sites[plan.site].spacing
    return {
        "patient_id": plan.patient_id, "site": plan.site,
        "split": "external" if plan.site == "external" else "",
        "age": plan.age, "sex": plan.sex, "cancer_type": plan.cancer_type,
        "image": files["image"], "mask": files["mask"], "manual_seconds": plan.manual_seconds,
        "brain_mask": files["brain_mask"] if plan.site == "internal" or prof.external_brain_masks else "",
        "brain_truth": files["brain_mask"], "scanner": prof.sites[plan.site].scanner,
        "voxel_size": "x".join(f"{s:g}" for s in sp), "n_lesions": plan.n_lesions,
        "max_lesion_diameter_mm": float(d.max()),
        "nominal_lesion_volume_mm3": round(float(np.sum(np.pi / 6 * d ** 3)), 1),
        "patterns": ";".join(les.pattern for les in plan.lesions),
    }


def cohort_table(profile: str | SynthParams = "default", seed: int = 0, *, path_prefix: str = "",
                 **overrides: Any) -> pd.DataFrame:
    """The manifest rows the generator writes, computed WITHOUT rendering any image.

    Parameters
    ----------
    profile : str or SynthParams, default='default'
        A preset of :data:`bmstudy.plan.SYNTH_PRESETS` or the parameters themselves.
    seed : int, default=0
        Cohort seed (also the split's seed).
    path_prefix : str, default=''
        Prefix of the file paths, which are otherwise relative to the cohort folder (e.g.
        ``data/synthetic`` for a manifest at the repository root).
    **overrides
        :class:`~bmstudy.plan.SynthParams` fields (e.g. ``n_internal=4``).

    Returns
    -------
    pandas.DataFrame
        One row per case, internal first, split by :func:`bmstudy.io.split.systematic_split` with the
        profile's ``test_fraction``.
    """
    prof = synth_params(profile, **overrides)
    df = pd.DataFrame([_manifest_row(plan, prof, path_prefix) for plan in plan_cohort(prof, seed)])
    return systematic_split(df, test_fraction=prof.test_fraction, seed=seed)


def reference_manifest(path: PathLike, profile: str = "default", seed: int = 0,
                       path_prefix: str = "data/synthetic") -> Path:
    """Write the repository's top-level ``data_manifest.csv`` (no rendering).

    Parameters
    ----------
    path : str or Path
        Where to write the manifest.
    profile : str, default='default'
        Synthetic preset.
    seed : int, default=0
        Cohort seed.
    path_prefix : str, default='data/synthetic'
        Folder of the cohort's files relative to the manifest.

    Returns
    -------
    Path
        The manifest written.
    """
    return write_manifest(cohort_table(profile, seed, path_prefix=path_prefix), path)


# ----------------------------------------------------------------------------- render a case
def render_case(plan: CasePlan, profile: str | SynthParams = "default", **overrides: Any) -> dict[str, Any]:
    """Render one planned case.

    Parameters
    ----------
    plan : CasePlan
        The case (from :func:`~bmstudy.synthetic.plans.plan_case` or :func:`~bmstudy.synthetic.plans.plan_cohort`).
    profile : str or SynthParams, default='default'
        The cohort parameters the plan was drawn with.
    **overrides
        :class:`~bmstudy.plan.SynthParams` fields.

    Returns
    -------
    dict
        ``image`` (int16), ``mask`` (uint8 {0,1}: the "manual" mask, whole metastases incl. necrotic
        core, not oedema; boundary-jittered when ``annotator_jitter_mm`` > 0), ``true_mask`` (the
        rendered lesions), ``lesion_labels`` (uint8, lesion k+1), ``brain`` (uint8 true brain mask),
        ``labels`` (tissue labels, uint8), ``affine`` (RAS, mm), ``spacing``, ``lesions`` (list of dicts),
        ``n_vessels``, ``vessels`` (bool map of all mimics' cores), ``vessel_touched`` (lesion labels a
        vein touches) and ``meta`` (drawn anatomy/contrast/acquisition parameters).

    Raises
    ------
    RuntimeError
        If a planned lesion cannot be placed in the brain.
    """
    prof = synth_params(profile, **overrides)
    site = prof.sites[plan.site]
    shape = prof.shape(plan.site)
    spacing = np.asarray(site.spacing, dtype=np.float64)
    rng = plan.render_rng()
    anat = head_anatomy(rng, prof, shape, spacing)
    venous = float(np.exp(case_rng(plan.seed, plan.site, plan.index, 2).normal(0.0, site.venous_jitter)))
    img, intens = tissue_image(rng, anat, site, spacing, venous)
    mask, lesions, lesion_labels = render_lesions(rng, plan, anat, img, site, spacing)
    n_vessels, vessels, touched = render_vessels(rng, anat, img, lesion_labels, site, spacing, prof.head_scale,
                                                 prof.vessel_touch_rate)
    image, acq = acquire(rng, img, site, spacing, prof.head_scale)
    manual = annotator_mask(rng, mask, anat["brain"], spacing, prof.annotator_jitter_mm)
    brain = anat["brain"].astype(np.uint8)
    meta = {"deform": anat["deform"], "thickness_mm": anat["thickness"], "intensities": intens, "acquisition": acq}
    return dict(image=image, mask=manual, true_mask=mask, lesion_labels=lesion_labels, brain=brain,
                labels=anat["lab"], affine=voxel_affine(shape, spacing), spacing=tuple(float(v) for v in spacing),
                lesions=lesions, n_vessels=n_vessels, vessels=vessels, vessel_touched=touched, meta=meta)


# ----------------------------------------------------------------------------- write a cohort
def _save_nifti(arr: np.ndarray, affine: np.ndarray, path: Path) -> None:
    import nibabel as nib

    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    with atomic_path(path) as tmp:
        nib.save(img, tmp)


#: Modules of :mod:`bmstudy.synthetic` that only report on a cohort (montage, stripping Dice): not in the case hash.
_REPORT_MODULES = ("preview.py", "stripping.py")


@lru_cache(maxsize=1)
def generator_source_hash() -> str:
    """Hash of the generator's source code (the modules of :mod:`bmstudy.synthetic` except the report ones).

    A change to the rendering code changes the hash, so a re-run re-renders the cases (a version
    string would have to be bumped by hand). Parameter values enter the case hash separately
    (:meth:`bmstudy.plan.SynthParams.render_params`).

    Returns
    -------
    str
        Hex digest.
    """
    here = Path(__file__).resolve().parent
    modules = [__package__ if f.stem == "__init__" else f"{__package__}.{f.stem}"
               for f in sorted(here.glob("*.py")) if f.name not in _REPORT_MODULES]
    return source_hash(*modules)[:16]


def _case_hash(plan: CasePlan, prof: SynthParams) -> str:
    return params_hash({"plan": dataclasses.asdict(plan), "render": prof.render_params(),
                        "source": generator_source_hash()})


def _already_written(plan: CasePlan, *, prof: SynthParams, out_dir: Path) -> dict[str, Any] | None:
    """The ``skipped`` row when the case's files exist with the same parameter hash, else None."""
    files = [out_dir / v for v in case_files(plan.patient_id).values()]
    meta_path = out_dir / "meta" / f"{plan.patient_id}.json"
    if not (meta_path.is_file() and all(p.is_file() for p in files)):
        return None
    try:
        if json.loads(meta_path.read_text(encoding="utf-8")).get("hash") == _case_hash(plan, prof):
            return {"status": "skipped", "seconds": 0.0, "error": ""}
    except (OSError, ValueError):
        pass
    return None


def _write_case(plan: CasePlan, *, prof: SynthParams, out_dir: str) -> dict[str, Any]:
    """Render one case and write its images, masks and ``meta/<pid>.json`` (the per-case function)."""
    out = Path(out_dir)
    files = {k: out / v for k, v in case_files(plan.patient_id).items()}
    t0 = time.perf_counter()
    case = render_case(plan, prof)
    _save_nifti(case["image"], case["affine"], files["image"])
    _save_nifti(case["mask"], case["affine"], files["mask"])
    _save_nifti(case["brain"], case["affine"], files["brain_mask"])
    atomic_write_json(out / "meta" / f"{plan.patient_id}.json",
                      {"hash": _case_hash(plan, prof), "patient_id": plan.patient_id,
                       "plan": dataclasses.asdict(plan), "lesions": case["lesions"], "n_vessels": case["n_vessels"],
                       "vessel_touched": case["vessel_touched"], "generator_source": generator_source_hash(),
                       **case["meta"]})
    return {"status": "ok", "seconds": round(time.perf_counter() - t0, 2), "error": ""}


def _status_table(rows: list[dict[str, Any]]) -> pd.DataFrame:
    """``synth_status.csv`` rows: a failed case's ``error`` is :func:`bmstudy.cases.failure_row`'s reason."""
    out = []
    for r in rows:
        error = r.get("error") or (r.get("reason", "") if r.get("status") == "failed" else "")
        out.append({"patient_id": r["patient_id"], "status": r["status"], "seconds": r.get("seconds"),
                    "error": error})
    return pd.DataFrame(out, columns=list(STATUS_COLUMNS))


def generate_cohort(out_dir: PathLike, profile: str | SynthParams = "default", seed: int = 0, *,
                    n_jobs: int | None = None, force: bool = False, progress: bool = True,
                    **overrides: Any) -> Path:
    """Generate the synthetic cohort under ``out_dir``.

    Writes ``images/<pid>_t1c.nii.gz`` (int16), ``masks/<pid>_mask.nii.gz`` and
    ``brain/<pid>_brain.nii.gz`` (uint8), ``meta/<pid>.json`` (plan, rendered lesions, parameter hash),
    ``synth_status.csv`` (:data:`STATUS_COLUMNS`) and ``data_manifest.csv``. Cases already written with
    identical parameters are skipped unless ``force``. A failing case does not stop the others.

    Parameters
    ----------
    out_dir : str or Path
        Cohort folder (created if needed).
    profile : str or SynthParams, default='default'
        A preset of :data:`bmstudy.plan.SYNTH_PRESETS` or the parameters themselves.
    seed : int, default=0
        Cohort seed.
    n_jobs : int, optional
        Worker processes (default: the number of cores, at most 4).
    force : bool, default=False
        Re-render cases even when already written.
    progress : bool, default=True
        Show a progress bar.
    **overrides
        :class:`~bmstudy.plan.SynthParams` fields (e.g. ``n_internal=4``; None values are ignored).

    Returns
    -------
    Path
        ``out_dir/data_manifest.csv``.

    Raises
    ------
    RuntimeError
        Naming the failed cases and their errors (after all other cases were written).
    """
    prof = synth_params(profile, **overrides)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plans = plan_cohort(prof, seed)
    table = cohort_table(prof, seed)
    n_jobs = int(n_jobs) if n_jobs else min(os.cpu_count() or 1, 4)
    n_jobs = max(1, min(n_jobs, len(plans)))
    log.info("synthetic cohort %r seed=%d: %d internal + %d external cases -> %s (%d jobs)",
             prof.name, seed, prof.n_internal, prof.n_external, out, n_jobs)
    t0 = time.perf_counter()
    result = run_cases(_write_case, plans, case_id=lambda p: p.patient_id,
                       kwargs={"prof": prof, "out_dir": str(out)},
                       is_finished=None if force else partial(_already_written, prof=prof, out_dir=out),
                       n_jobs=n_jobs, desc="synth", progress=progress)
    status = _status_table(result.rows)
    atomic_to_csv(status, out / "synth_status.csv")
    log.info("synthetic cohort done in %.1f s: %s", time.perf_counter() - t0, result.counts())
    failed = status[status["status"] == "failed"]
    if len(failed):
        msg = "; ".join(f"{r.patient_id}: {r.error}" for r in failed.itertuples())
        raise RuntimeError(f"synthetic generation failed for {len(failed)} case(s) in {out}: {msg}")
    return write_manifest(table, out / "data_manifest.csv")


# ----------------------------------------------------------------------------- CLI: bmstudy synth
def add_cli_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``bmstudy synth`` options to ``parser``.

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The sub-command's parser.
    """
    parser.add_argument("--out", required=True, help="output folder (e.g. data/synthetic)")
    parser.add_argument("--profile", default="default", choices=sorted(SYNTH_PRESETS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-internal", type=int, default=None, help="override the number of internal cases")
    parser.add_argument("--n-external", type=int, default=None, help="override the number of external cases")
    parser.add_argument("-j", "--jobs", type=int, default=None, help="parallel processes (default: cores, max 4)")
    parser.add_argument("--preview", nargs="?", const="", default=None, metavar="PNG",
                        help="write a PNG montage (default OUT/preview.png)")
    parser.add_argument("--real-scans", default=None, metavar="DIR",
                        help="real CE-T1 scans for the preview's last column (default: ../shared/data/real "
                             "beside the repository, or $BMSTUDY_SHARED_DATA/real)")
    parser.add_argument("--force", action="store_true", help="re-render cases even if already written")


def cli_main(args: argparse.Namespace) -> int:
    """Run ``bmstudy synth``: generate the cohort, print the manifest (and preview) path.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed :func:`add_cli_arguments` options.

    Returns
    -------
    int
        Exit status 0 (a failed case raises RuntimeError).
    """
    manifest = generate_cohort(args.out, args.profile, args.seed, n_jobs=args.jobs, force=args.force,
                               n_internal=args.n_internal, n_external=args.n_external)
    print(manifest)
    if args.preview is not None:
        real = Path(args.real_scans) if args.real_scans else default_real_dir()
        print(write_preview(manifest, args.preview or None, real_dir=real))
    return 0
