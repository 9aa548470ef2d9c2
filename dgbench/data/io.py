"""NIfTI reading with validation. Every error names the file and says how to fix it."""
from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np


class DataError(ValueError):
    """Bad input data. The message names the file and the fix."""


def load_nifti(path: Path, channel: int | None = None, canonical: bool = True):
    """Return (array float32 or original dtype, affine, spacing) of a 3D (or one channel of a 4D) NIfTI.

    canonical=True reorients to RAS (nibabel's closest canonical), keeping the affine consistent."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found. Check the dataset root and that the download is complete.")
    try:
        img = nib.load(str(path))
        if canonical:
            img = nib.as_closest_canonical(img)
        data = np.asanyarray(img.dataobj)
    except Exception as e:  # nibabel raises many types for truncated / non-NIfTI files
        raise DataError(f"{path}: cannot be read as NIfTI ({type(e).__name__}: {e}). "
                        f"The file is corrupt or truncated; re-download or re-extract it.") from e
    if channel is not None:
        if data.ndim != 4:
            raise DataError(f"{path}: expected a 4-D multi-channel image to take channel {channel} from, "
                            f"got shape {data.shape}.")
        if not 0 <= channel < data.shape[3]:
            raise DataError(f"{path}: channel {channel} does not exist (shape {data.shape}).")
        data = data[..., channel]
    if data.ndim != 3:
        raise DataError(f"{path}: expected a 3-D volume, got shape {data.shape}"
                        + (" (a 4-D file needs a channel to be selected)" if data.ndim == 4 else "") + ".")
    if not np.all(np.isfinite(np.asarray(img.affine))):
        raise DataError(f"{path}: the header affine is not finite; fix the header (qform/sform).")
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    return data, np.asarray(img.affine, dtype=np.float64), spacing


def read_json(path: Path, missing: str):
    """Parse a JSON file; DataError naming the file when it is missing (with `missing` as the
    fix) or not valid JSON."""
    import json
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: {missing}") from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e}).") from e


def check_pair(img_path: Path, img_shape, img_affine, lbl_path: Path, lbl_shape, lbl_affine, atol: float = 1e-3):
    if tuple(img_shape) != tuple(lbl_shape):
        raise DataError(f"{lbl_path}: label shape {tuple(lbl_shape)} differs from image {img_path} shape "
                        f"{tuple(img_shape)}. Image and label must be on the same voxel grid; "
                        f"resample the label onto the image grid (nearest neighbour).")
    if not np.allclose(img_affine, lbl_affine, atol=atol):
        raise DataError(f"{lbl_path}: label affine differs from image {img_path} affine (max difference "
                        f"{np.abs(img_affine - lbl_affine).max():.4g}). Image and label must share one "
                        f"geometry; fix the header or resample the label onto the image.")


def check_finite(path: Path, data: np.ndarray) -> None:
    """Images must hold finite numbers: a NaN or Inf voxel would poison normalisation and training."""
    finite = np.isfinite(data)
    if not finite.all():
        bad = np.argwhere(~finite)
        raise DataError(f"{path}: {len(bad)} voxel(s) are NaN or infinite (first at voxel {tuple(int(i) for i in bad[0])}). "
                        f"Fix the file (e.g. replace them with the background intensity) and prepare again.")


def check_labels(lbl_path: Path, labels: np.ndarray, n_classes: int) -> np.ndarray:
    """Labels must be integers in 0..n_classes-1 (after any remap). Returns them as uint8."""
    if labels.dtype.kind == "f":
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise DataError(f"{lbl_path}: label map has non-integer values; a label file must hold class "
                            f"indices (was an image saved as a label?).")
    values = np.unique(labels)
    bad = values[(values < 0) | (values >= n_classes)]
    if bad.size:
        raise DataError(f"{lbl_path}: label values {bad.tolist()[:10]} are outside the label map "
                        f"0..{n_classes - 1}. Check the dataset's label map or its remap table.")
    return labels.astype(np.uint8)


def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = ".nii.gz" if path.name.endswith(".gz") else ".nii"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp{suffix}")
    try:
        nib.save(nib.Nifti1Image(data, affine), str(tmp))
        tmp.replace(path)
    except BaseException:
        tmp.unlink(missing_ok=True)          # a full disk leaves no half-written file behind
        raise
