"""bmstudy.io: reading and writing volumes, finding them in folders, the data manifest, the split, 0/1 masks.

Modules: :mod:`.volumes` (NIfTI / NRRD / MetaImage / DICOM series readers and writers,
:class:`VolumeError`), :mod:`.geometry` (affines, exact reorientation to canonical RAS+, RAS <-> LPS),
:mod:`.discovery` (:func:`find_volumes`: every readable volume in a folder), :mod:`.hashing` (content
hashes cached by path + size + mtime), :mod:`.headers` (``validate --deep``), :mod:`.locks` (one writer per folder), :mod:`.manifest` (the
study's data manifest), :mod:`.split` (systematic train/test split) and :mod:`.binary`
(:func:`as_binary`, the one 0/1 validator).
"""
from __future__ import annotations

from . import binary, discovery, geometry, hashing, headers, locks, manifest, split, volumes
from .binary import as_binary
from .discovery import IMAGE_SUFFIXES, find_volumes, is_dicom_series, volume_case_id, volume_suffix
from .hashing import HashCache, content_sha256, tree_sha256
from .locks import LOCK_NAME, LockError, acquire_lock, folder_lock, release_lock
from .geometry import (affine_direction, affine_spacing, canonical_to_source, ras_affine_to_sitk, sitk_to_ras_affine,
                       source_to_canonical)
from .manifest import (CANCER_TYPES, PATH_COLUMNS, REQUIRED_COLUMNS, SEXES, SPLITS, ManifestError, load_manifest,
                       manifest_hash, validate_manifest, write_manifest)
from .split import systematic_split
from .volumes import (DETACHED_HEADER_SUFFIXES, NIFTI_SUFFIXES, Volume, VolumeError, check_volume, fingerprint_unchanged,
                      input_fingerprint, read_volume, volume_format, write_volume)

__all__ = [
    # modules
    "volumes", "geometry", "discovery", "manifest", "split", "binary", "hashing", "headers", "locks",
    # content hashes and folder locks
    "HashCache", "content_sha256", "tree_sha256", "LOCK_NAME", "LockError", "acquire_lock", "release_lock",
    "folder_lock",
    # volumes
    "NIFTI_SUFFIXES", "DETACHED_HEADER_SUFFIXES", "VolumeError", "Volume", "volume_format", "read_volume",
    "check_volume", "write_volume", "input_fingerprint", "fingerprint_unchanged",
    # geometry
    "affine_spacing", "affine_direction", "source_to_canonical", "canonical_to_source", "sitk_to_ras_affine",
    "ras_affine_to_sitk",
    # discovery
    "IMAGE_SUFFIXES", "volume_suffix", "volume_case_id", "is_dicom_series", "find_volumes",
    # 0/1 masks
    "as_binary",
    # manifest and split
    "REQUIRED_COLUMNS", "PATH_COLUMNS", "SPLITS", "SEXES", "CANCER_TYPES", "ManifestError", "validate_manifest",
    "load_manifest", "write_manifest", "manifest_hash", "systematic_split",
]
