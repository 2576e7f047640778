"""Read one image file into an 8-bit array in an explicit channel mode ("L" or "RGB").

Raster formats (PNG, JPEG, BMP, TIFF) go through Pillow; single-frame DICOM through pydicom.
Every failure is an ``ImageReadError`` whose ``reason`` is a short stable code used by the
quarantine table (``unreadable``, ``truncated``, ``too-large``, ...) and whose message says what
was wrong in words. Nothing here writes to the user's files.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

RASTER_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"})
DICOM_EXTENSIONS = frozenset({".dcm", ".dicom"})
IMAGE_EXTENSIONS = RASTER_EXTENSIONS | DICOM_EXTENSIONS


class ImageReadError(Exception):
    """An image cannot be used; ``reason`` is the quarantine code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # uint8, HxW for "L", HxWx3 for "RGB"
    source_mode: str  # what the file held: "L", "RGB", "RGBA", "I;16", "DICOM:MONOCHROME2", ...
    width: int
    height: int


def is_image_path(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | Path, mode: str, max_pixels: int = 80_000_000) -> DecodedImage:
    """Decode ``path`` fully (so truncation is caught now, not mid-training) and convert to ``mode``."""
    if mode not in ("L", "RGB"):
        raise ValueError(f"mode must be 'L' or 'RGB', got {mode!r}")
    path = Path(path)
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImageReadError("unreadable", f"cannot stat file: {exc.strerror or exc}") from None
    if size == 0:
        raise ImageReadError("empty", "zero-byte file")
    if path.suffix.lower() in DICOM_EXTENSIONS:
        array, source_mode = _read_dicom(path, max_pixels)
    else:
        array, source_mode = _read_raster(path, max_pixels)
    pixels = to_mode(array, mode)
    return DecodedImage(pixels=pixels, source_mode=source_mode, width=pixels.shape[1], height=pixels.shape[0])


def _read_raster(path: Path, max_pixels: int) -> tuple[np.ndarray, str]:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise ImageReadError("too-large", f"{width}x{height} pixels exceeds the decompression-bomb "
                                                      f"guard data.max_pixels={max_pixels}")
                check_decode_memory(width, height, len(image.getbands()), image.mode, max_pixels)
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                image.load()
                return _pil_to_array(image), image.mode
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageReadError("too-large", str(exc)) from None
    except UnidentifiedImageError:
        raise ImageReadError("not-an-image", "not a readable image (unknown or corrupt header)") from None
    except (OSError, SyntaxError, ValueError) as exc:
        text = str(exc)
        reason = "truncated" if "truncat" in text.lower() else "corrupt"
        raise ImageReadError(reason, f"cannot decode image data: {text}") from None


WIDE_MODES = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})  # decoded through a float64 working copy
BYTES_PER_GUARD_PIXEL = 3  # data.max_pixels 8-bit RGB pixels: the memory the guard has always allowed


def check_decode_memory(width: int, height: int, bands: int, mode: str, max_pixels: int) -> None:
    """Quarantine an image whose decode needs more memory than ``max_pixels`` 8-bit RGB pixels would,
    counting bytes per pixel: a 16-bit 8000x8000 PNG of 128 KB passes a pixel count yet needs GBs as
    float64 (its header alone says so: nothing is decoded here)."""
    per_sample = 8 if mode in WIDE_MODES or mode.startswith("DICOM") else 1
    need = width * height * bands * per_sample
    allowed = max_pixels * BYTES_PER_GUARD_PIXEL
    if need > allowed:
        raise ImageReadError("too-large", f"{width}x{height} {mode} needs ~{need / 1e6:,.0f} MB to decode "
                                          f"({bands * per_sample} bytes per pixel), over the "
                                          f"{allowed / 1e6:,.0f} MB that data.max_pixels={max_pixels} allows")


def _pil_to_array(image: Image.Image) -> np.ndarray:
    """Float or uint8 array, HxW or HxWxC, with alpha composited onto black."""
    if image.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        return np.asarray(image, dtype=np.float64)
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = np.asarray(image.convert("RGBA"), dtype=np.float64)
        return (rgba[..., :3] * (rgba[..., 3:4] / 255.0)).round().astype(np.uint8)
    if image.mode in ("L", "RGB"):
        return np.asarray(image)
    return np.asarray(image.convert("RGB"))


def _read_dicom(path: Path, max_pixels: int) -> tuple[np.ndarray, str]:
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        dataset = pydicom.dcmread(path)
        rows, cols = int(dataset.Rows), int(dataset.Columns)
        if rows * cols > max_pixels:
            raise ImageReadError("too-large", f"{cols}x{rows} pixels exceeds data.max_pixels={max_pixels}")
        samples = int(getattr(dataset, "SamplesPerPixel", 1) or 1)
        check_decode_memory(cols, rows, samples, "DICOM", max_pixels)
        frames = int(getattr(dataset, "NumberOfFrames", 1) or 1)
        if frames > 1:
            raise ImageReadError("unsupported", f"multi-frame DICOM ({frames} frames); export single slices")
        array = dataset.pixel_array.astype(np.float64)
        slope = float(getattr(dataset, "RescaleSlope", 1) or 1)
        intercept = float(getattr(dataset, "RescaleIntercept", 0) or 0)
        array = array * slope + intercept
        photometric = str(getattr(dataset, "PhotometricInterpretation", "MONOCHROME2"))
        if photometric == "MONOCHROME1":
            array = array.max() - array
        return array, f"DICOM:{photometric}"
    except ImageReadError:
        raise
    except InvalidDicomError:
        raise ImageReadError("not-an-image", "not a valid DICOM file") from None
    except Exception as exc:  # pydicom raises many types for missing pixel data or codecs
        raise ImageReadError("corrupt", f"cannot decode DICOM pixel data: {exc}") from None


def to_mode(array: np.ndarray, mode: str) -> np.ndarray:
    """Convert an HxW / HxWxC array (uint8 or wider) into uint8 ``L`` (HxW) or ``RGB`` (HxWx3)."""
    if array.dtype != np.uint8:
        array = _rescale_to_uint8(array)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[..., 0]
    if mode == "L":
        if array.ndim == 3:
            return np.asarray(Image.fromarray(array[..., :3]).convert("L"))
        return np.ascontiguousarray(array)
    if array.ndim == 2:
        return np.ascontiguousarray(np.repeat(array[..., None], 3, axis=2))
    return np.ascontiguousarray(array[..., :3])


def _rescale_to_uint8(array: np.ndarray) -> np.ndarray:
    """Min-max window high bit-depth data (16-bit PNG, DICOM) into 0..255."""
    array = array.astype(np.float64)
    low, high = float(np.min(array)), float(np.max(array))
    if high <= low:
        return np.zeros(array.shape, dtype=np.uint8)
    return np.round((array - low) * (255.0 / (high - low))).astype(np.uint8)


def save_png(pixels: np.ndarray, target: str | Path) -> Path:
    """Write an L or RGB uint8 array as PNG atomically."""
    from pipeline.store import atomic_save_with

    image = Image.fromarray(pixels, mode=None)
    return atomic_save_with(target, lambda tmp: image.save(tmp, format="PNG"))
