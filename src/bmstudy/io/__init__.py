"""bmstudy.io."""
from __future__ import annotations

from . import volumes
from .volumes import (NIFTI_SUFFIXES, VolumeError, Volume, affine_spacing, affine_direction, source_to_canonical, canonical_to_source, sitk_to_ras_affine, ras_affine_to_sitk, volume_format, read_volume, check_volume, write_volume, input_fingerprint, fingerprint_unchanged)
from . import manifest
from .manifest import (REQUIRED_COLUMNS, PATH_COLUMNS, SPLITS, SEXES, CANCER_TYPES, ManifestError, validate_manifest, load_manifest, write_manifest, manifest_hash)
from . import split
from .split import (systematic_split)

__all__ = ['volumes', 'manifest', 'split', 'NIFTI_SUFFIXES', 'VolumeError', 'Volume', 'affine_spacing', 'affine_direction', 'source_to_canonical', 'canonical_to_source', 'sitk_to_ras_affine', 'ras_affine_to_sitk', 'volume_format', 'read_volume', 'check_volume', 'write_volume', 'input_fingerprint', 'fingerprint_unchanged', 'REQUIRED_COLUMNS', 'PATH_COLUMNS', 'SPLITS', 'SEXES', 'CANCER_TYPES', 'ManifestError', 'validate_manifest', 'load_manifest', 'write_manifest', 'manifest_hash', 'systematic_split']
