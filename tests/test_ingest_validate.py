"""Ingest + validation on good and deliberately broken datasets; the user's folder never changes."""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from folder_snapshot import snapshot
from pipeline.config import DataConfig, SplitConfig, load_domain_config
from pipeline.errors import DataError
from pipeline.imageio import read_image
from pipeline.ingest import discover
from pipeline.stages import ingest_stage
from pipeline.validate import validate

DATA = DataConfig(mode="L", min_side=32)
SPLIT = SplitConfig()


def run_validation(folder: Path, data: DataConfig = DATA):
    before = snapshot(folder)
    result = validate(discover(folder).candidates, data, SPLIT, progress=False)
    assert snapshot(folder) == before, "validation must not modify the user's folder"
    return result


def reasons(result) -> dict[str, str]:
    return dict(zip(result.quarantine["relpath"], result.quarantine["reason"]))


def png_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims a huge image (a decompression bomb) without the pixel data."""
    def chunk(kind: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_clean_phantom_set_is_fully_usable(phantom_dir: Path) -> None:
    result = run_validation(phantom_dir)
    assert len(result.quarantine) == 0
    assert result.manifest["label"].value_counts().to_dict() == {c: 30 for c in
                                                                  ("elongated", "normal", "ring", "round")}
    row = result.manifest.iloc[0]
    assert len(row["sha256"]) == 64 and row["width"] == 48 and row["height"] == 48 and row["source_mode"] == "L"


def test_every_bad_file_is_quarantined_with_its_reason(phantom_dir: Path) -> None:
    good = (phantom_dir / "normal" / "normal_0000.png").read_bytes()
    (phantom_dir / "round" / "corrupt.jpg").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4)
    (phantom_dir / "round" / "truncated.png").write_bytes(good[: len(good) * 2 // 3])
    (phantom_dir / "ring" / "empty.png").write_bytes(b"")
    (phantom_dir / "ring" / "notes.png").write_text("this is a text file, not an image")
    (phantom_dir / "ring" / "bomb.png").write_bytes(huge_png_header(100_000, 100_000))
    (phantom_dir / "ring" / "tiny.png").write_bytes(png_bytes(np.zeros((10, 10), np.uint8)))
    (phantom_dir / "round" / "same-as-normal.png").write_bytes(good)  # one image, two labels
    shutil.copy(phantom_dir / "ring" / "ring_0001.png", phantom_dir / "ring" / "ring copy.png")  # same label
    result = run_validation(phantom_dir)
    got = reasons(result)
    assert got["round/corrupt.jpg"] in {"not-an-image", "corrupt"}
    assert got["round/truncated.png"] in {"truncated", "corrupt"}
    assert got["ring/empty.png"] == "empty"
    assert got["ring/notes.png"] == "not-an-image"
    assert got["ring/bomb.png"] == "too-large"
    assert got["ring/tiny.png"] == "too-small"
    assert got["round/same-as-normal.png"] == "duplicate-conflicting-labels"
    assert got["normal/normal_0000.png"] == "duplicate-conflicting-labels"
    assert got["ring/ring_0001.png"] == "duplicate"  # the later name by relpath order is dropped, one is kept
    assert "ring/ring copy.png" in set(result.manifest["relpath"])
    assert all(result.quarantine["detail"].str.len() > 0)
    conflicting = {relpath for relpath, reason in got.items() if reason == "duplicate-conflicting-labels"}
    assert conflicting.isdisjoint(result.manifest["relpath"])  # neither copy trains anything
    assert result.manifest["sha256"].is_unique


def test_four_channel_sixteen_bit_and_unicode_names_are_accepted_and_converted(phantom_dir: Path) -> None:
    rgba = np.zeros((48, 48, 4), np.uint8)
    rgba[..., 0], rgba[..., 3] = 200, 255
    rgba[:10, :10, 3] = 0  # transparent corner composites onto black
    (phantom_dir / "round" / "rgba.png").write_bytes(png_bytes(rgba))
    deep = (np.arange(48 * 48, dtype=np.uint16).reshape(48, 48) * 20)
    Image.fromarray(deep).save(phantom_dir / "round" / "deep16.png")
    shutil.copy(phantom_dir / "ring" / "ring_0002.png", phantom_dir / "ring" / "scan ü 01 é.png")
    (phantom_dir / "ring" / "ring_0002.png").unlink()
    result = run_validation(phantom_dir)
    rows = result.manifest.set_index("relpath")
    assert rows.loc["round/rgba.png", "source_mode"] == "RGBA"
    assert rows.loc["round/deep16.png", "source_mode"].startswith("I;16")
    assert "ring/scan ü 01 é.png" in rows.index
    rgba_pixels = read_image(phantom_dir / "round" / "rgba.png", "L").pixels
    assert rgba_pixels.shape == (48, 48) and rgba_pixels[0, 0] == 0 and rgba_pixels[20, 20] > 0
    deep_pixels = read_image(phantom_dir / "round" / "deep16.png", "RGB").pixels
    assert deep_pixels.shape == (48, 48, 3) and deep_pixels.dtype == np.uint8
    assert deep_pixels.min() == 0 and deep_pixels.max() == 255


def test_dicom_single_frame_is_read(tmp_path: Path) -> None:
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(tmp_path / "x.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 40, 50, 1
    ds.PhotometricInterpretation, ds.BitsAllocated, ds.BitsStored, ds.HighBit = "MONOCHROME2", 16, 12, 11
    ds.PixelRepresentation = 0
    ds.PixelData = (np.arange(2000, dtype=np.uint16).reshape(40, 50) % 4096).tobytes()
    ds.save_as(tmp_path / "x.dcm", enforce_file_format=True)
    image = read_image(tmp_path / "x.dcm", "L")
    assert image.source_mode == "DICOM:MONOCHROME2" and image.pixels.shape == (40, 50)
    assert image.pixels.max() == 255


def test_files_beside_class_folders_are_ignored_with_a_note(phantom_dir: Path) -> None:
    (phantom_dir / "README.md").write_text("about this data")
    (phantom_dir / "MANIFEST.tsv").write_text("class\tfile\n")
    (phantom_dir / "ring" / "Thumbs.db").write_bytes(b"\0\1")
    discovery = discover(phantom_dir)
    assert any("README.md" in n for n in discovery.notes) and any("MANIFEST.tsv" in n for n in discovery.notes)
    assert any("Thumbs.db" in n for n in discovery.notes)
    assert len(discovery.candidates) == 120


@pytest.mark.parametrize("case, pattern", [
    ("missing", "does not exist"),
    ("empty", "is empty"),
    ("single-class", r"found 1 class\(es\).*at least 2"),
    ("class-with-one-image", r"too few usable images: ring has 1; every class needs at least 25"),
    ("all-broken-class", r"too few usable images: ring has 0"),
])
def test_protocol_blocking_problems_fail_fast_with_a_clear_message(phantom_dir: Path, tmp_path: Path,
                                                                    case: str, pattern: str) -> None:
    folder = phantom_dir
    if case == "missing":
        folder = tmp_path / "nowhere"
    elif case == "empty":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif case == "single-class":
        folder = tmp_path / "single"
        shutil.copytree(phantom_dir / "ring", folder / "ring")
    elif case == "class-with-one-image":
        for path in sorted((phantom_dir / "ring").iterdir())[1:]:
            path.unlink()
    elif case == "all-broken-class":
        for path in (phantom_dir / "ring").iterdir():
            path.write_bytes(b"")
    before = snapshot(folder) if folder.exists() else None
    with pytest.raises(DataError, match=pattern):
        validate(discover(folder).candidates, DATA, SPLIT, progress=False)
    if before is not None:
        assert snapshot(folder) == before


def test_configured_classes_must_match_the_folders(phantom_dir: Path) -> None:
    with pytest.raises(DataError, match=r"no images for configured class\(es\) cyst; unexpected class\(es\) ring"):
        discover(phantom_dir, ["normal", "round", "cyst", "elongated"])


def test_manifest_layout_with_patient_ids(phantom_dir: Path, tmp_path: Path) -> None:
    files = sorted(phantom_dir.rglob("*.png"))
    table = pd.DataFrame({"path": [str(p.relative_to(phantom_dir)) for p in files],
                          "label": [p.parent.name for p in files],
                          "patient_id": [f"p{i // 3}" for i in range(len(files))]})
    table.loc[len(table)] = ["round/missing.png", "round", "p999"]
    manifest = phantom_dir / "manifest.csv"
    table.to_csv(manifest, index=False)
    result = validate(discover(manifest).candidates, DATA, SPLIT, progress=False)
    assert len(result.manifest) == 120 and result.manifest["patient_id"].notna().all()
    assert reasons(result) == {"round/missing.png": "unreadable"}


def test_manifest_without_label_column_is_a_clear_error(tmp_path: Path) -> None:
    manifest = tmp_path / "m.csv"
    manifest.write_text("file,class\na.png,x\n")
    with pytest.raises(DataError, match="lacks column\\(s\\) path, label"):
        discover(manifest)


def test_ingest_stage_caches_and_notices_changes(phantom_dir: Path, tmp_path: Path) -> None:
    config = load_domain_config("demo", overrides={"runs_root": str(tmp_path / "runs"), "data": {"min_side": 32}})
    first = ingest_stage(config, phantom_dir, progress=False)
    again = ingest_stage(config, phantom_dir, progress=False)
    assert not first.cached and again.cached and again.key == first.key
    (phantom_dir / "ring" / "ring_0003.png").unlink()
    changed = ingest_stage(config, phantom_dir, progress=False)
    assert changed.key != first.key and changed.summary["per_class"]["ring"] == 29
    assert (changed.directory / "manifest.csv").is_file() and (changed.directory / "quarantine.csv").is_file()
