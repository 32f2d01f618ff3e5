import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from foldcnn.data.readers import (
    DataReadError,
    ImageReadError,
    LabelsMismatchError,
    ReadReport,
    VideoReadError,
    VideoTruncatedError,
    iter_images,
    iter_video_frames,
    load_image_folder,
    load_images,
    load_video,
    read_image,
    read_labels_csv,
)


def _rgb(h, w, seed):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _save(path, arr, mode=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path) if mode else Image.fromarray(arr).save(path)
    return arr


@pytest.fixture
def folder(tmp_path):
    """root/{b_dog: 2 images, a_cat: 3 images}, all 10x12 (HxW) PNGs with known pixels."""
    root = tmp_path / "imgs"
    written = {}
    for cls, n in (("b_dog", 2), ("a_cat", 3)):
        for i in range(n):
            written[f"{cls}/{i}.png"] = _save(root / cls / f"{i}.png", _rgb(10, 12, hash((cls, i)) % 1000))
    return root, written


# ------------------------------------------------------------------------------ image folder
def test_round_trip_sizes_classes_values(folder):
    root, written = folder
    ds = load_image_folder(root)
    assert ds.classes == ["a_cat", "b_dog"]
    assert ds.images.dtype == torch.uint8 and ds.images.shape == (5, 3, 10, 12)
    assert ds.labels.tolist() == [0, 0, 0, 1, 1]
    assert ds.meta["files"] == ["a_cat/0.png", "a_cat/1.png", "a_cat/2.png", "b_dog/0.png", "b_dog/1.png"]
    for i, rel in enumerate(ds.meta["files"]):
        assert np.array_equal(ds.images[i].permute(1, 2, 0).numpy(), written[rel])
    x, y = ds[4]
    assert x.dtype == torch.float32 and float(x.max()) <= 1.0 and y == 1
    assert ds.meta["read_report"]["n_skipped"] == 0


def test_resize_bilinear_and_nearest(folder):
    root, written = folder
    ds = load_image_folder(root, input_size=(5, 6))
    assert ds.images.shape == (5, 3, 5, 6)
    near = load_image_folder(root, input_size=(5, 6), resize="nearest")
    src = written["a_cat/0.png"]
    # pixel-centre nearest neighbour: halving takes every second pixel starting at 1
    assert np.array_equal(near.images[0].permute(1, 2, 0).numpy(), src[1::2, 1::2])


def test_corrupt_and_truncated_files_skipped_and_listed(folder):
    root, _ = folder
    (root / "a_cat" / "garbage.png").write_bytes(b"this is not an image")
    good = (root / "b_dog" / "0.png").read_bytes()
    (root / "b_dog" / "truncated.png").write_bytes(good[: len(good) // 2])
    ds = load_image_folder(root)
    assert len(ds) == 5
    rep = ds.meta["read_report"]
    assert rep["n_skipped"] == 2 and rep["read"] == 5
    reasons = {s["path"]: s["reason"] for s in rep["skipped"]}
    assert set(reasons) == {"a_cat/garbage.png", "b_dog/truncated.png"}
    assert all(reasons.values())
    with pytest.raises(ImageReadError, match="garbage.png") as e:
        load_image_folder(root, on_error="raise")
    assert e.value.reason


def test_grey_rgba_palette_and_16bit_converted(tmp_path):
    root = tmp_path / "modes"
    grey = np.arange(30, dtype=np.uint8).reshape(5, 6) * 8
    _save(root / "a" / "grey.png", grey, "L")
    rgba = np.dstack([_rgb(5, 6, 1), np.full((5, 6), 7, np.uint8)])
    _save(root / "a" / "rgba.png", rgba, "RGBA")
    pal = Image.fromarray(_rgb(5, 6, 2)).quantize(8)
    (root / "b").mkdir()
    pal.save(root / "b" / "pal.png", transparency=0)
    Image.fromarray((grey.astype(np.uint16) * 257)).save(root / "b" / "deep.png")
    ds = load_image_folder(root)
    assert ds.images.shape == (4, 3, 5, 6)
    files = ds.meta["files"]
    img = {f: ds.images[i].permute(1, 2, 0).numpy() for i, f in enumerate(files)}
    assert np.array_equal(img["a/grey.png"], np.repeat(grey[..., None], 3, axis=2))
    assert np.array_equal(img["a/rgba.png"], rgba[..., :3])  # alpha dropped
    assert np.array_equal(img["b/deep.png"], np.repeat(grey[..., None], 3, axis=2))  # 16 -> 8 bits
    assert np.array_equal(img["b/pal.png"], np.asarray(pal.convert("RGBA"))[..., :3])
    assert sum(ds.meta["modes"].values()) == 4


def test_float_tiff_is_scaled_from_unit_range_or_refused(tmp_path):
    ramp = np.linspace(0, 1, 30, dtype=np.float32).reshape(5, 6)
    Image.fromarray(ramp, mode="F").save(tmp_path / "unit.tif")
    got = read_image(tmp_path / "unit.tif")
    want = np.repeat((ramp.astype(np.float64) * 255).round().astype(np.uint8)[None], 3, axis=0)
    assert got.dtype == torch.uint8 and np.array_equal(got.numpy(), want)  # not black: Pillow alone clips to 0/1
    Image.fromarray(ramp * 1000, mode="F").save(tmp_path / "raw.tif")
    with pytest.raises(ImageReadError, match=r"raw.tif: a float image with values in \[0, 1000\].*rescale"):
        read_image(tmp_path / "raw.tif")


def test_empty_class_dir_is_an_error_naming_it(folder):
    root, _ = folder
    (root / "c_empty").mkdir()
    (root / "c_empty" / "notes.txt").write_text("not an image")
    with pytest.raises(DataReadError, match="c_empty"):
        load_image_folder(root)
    ds = load_image_folder(root, allow_empty_classes=True)
    assert ds.classes == ["a_cat", "b_dog", "c_empty"] and ds.class_counts() == [3, 2, 0]
    assert any("c_empty" in w for w in ds.meta["warnings"])
    assert ds.meta["read_report"]["ignored"] == [str(root / "c_empty" / "notes.txt")]


def test_class_whose_every_image_fails_is_an_error(tmp_path):
    root = tmp_path / "r"
    _save(root / "a" / "0.png", _rgb(4, 4, 0))
    (root / "b").mkdir()
    (root / "b" / "x.png").write_bytes(b"junk")
    with pytest.raises(DataReadError, match="every image failed"):
        load_image_folder(root)


def test_no_images_and_flat_folder_errors(tmp_path):
    (tmp_path / "empty" / "a").mkdir(parents=True)
    with pytest.raises(DataReadError, match="no images"):
        load_image_folder(tmp_path / "empty")
    _save(tmp_path / "flat" / "x.png", _rgb(4, 4, 0))
    with pytest.raises(DataReadError, match="load_images"):
        load_image_folder(tmp_path / "flat")
    with pytest.raises(FileNotFoundError):
        load_image_folder(tmp_path / "missing")


def test_mismatched_sizes_need_input_size(folder):
    root, _ = folder
    _save(root / "b_dog" / "big.png", _rgb(20, 12, 5))
    with pytest.raises(DataReadError, match="input_size"):
        load_image_folder(root)
    assert load_image_folder(root, input_size=(10, 12)).images.shape == (6, 3, 10, 12)


def test_decompression_bomb_limit(folder, monkeypatch):
    root, _ = folder
    with pytest.raises(ImageReadError, match="decompression-bomb"):
        load_image_folder(root, max_pixels=100, on_error="raise")
    with pytest.raises(DataReadError, match="decompression-bomb"):  # every image skipped
        load_image_folder(root, max_pixels=100)
    # Pillow's own hard limit (2 x Image.MAX_IMAGE_PIXELS) is reported the same way.
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 50)
    with pytest.raises(ImageReadError, match="decompression bomb"):
        read_image(root / "a_cat" / "0.png", max_pixels=10**6)


def test_bomb_in_one_class_is_skipped_with_reason(folder):
    root, _ = folder
    _save(root / "a_cat" / "huge.png", _rgb(40, 40, 9))
    ds = load_image_folder(root, input_size=(10, 12), max_pixels=1000)
    (skipped,) = ds.meta["read_report"]["skipped"]
    assert skipped["path"] == "a_cat/huge.png" and "1,600 pixels" in skipped["reason"]


# ------------------------------------------------------------------------ unlabelled images
def test_read_iter_load_images_for_prediction(folder, tmp_path):
    root, written = folder
    t = read_image(root / "a_cat" / "1.png")
    assert t.dtype == torch.uint8 and t.shape == (3, 10, 12)
    assert np.array_equal(t.permute(1, 2, 0).numpy(), written["a_cat/1.png"])
    flat = root / "a_cat"
    (flat / "bad.jpg").write_bytes(b"nope")
    report = ReadReport()
    got = list(iter_images(flat, (8, 8), on_error="skip", report=report))
    assert [p.name for p, _ in got] == ["0.png", "1.png", "2.png"]
    assert report.read == 3 and [s.path for s in report.skipped] == [str(flat / "bad.jpg")]
    with pytest.warns(UserWarning, match="bad.jpg"):
        list(iter_images(flat, on_error="skip"))
    with pytest.raises(ImageReadError, match="bad.jpg"):
        list(iter_images(flat))
    files = [root / "b_dog" / "1.png", root / "a_cat" / "0.png"]  # explicit order is kept
    images, paths, rep = load_images(files, (10, 12))
    assert images.shape == (2, 3, 10, 12) and paths == files and rep.n_skipped == 0


# -------------------------------------------------------------------------------------- video
@pytest.fixture(scope="module")
def video(tmp_path_factory):
    pytest.importorskip("av")
    from foldcnn.data.video import generate_video

    return generate_video(tmp_path_factory.mktemp("vid"), 40, seed=1, size=(64, 48), progress=False)


def test_load_video_aligns_frames_and_labels(video):
    ds = load_video(video.video_path)
    assert ds.images.shape == (40, 3, 50, 50) and ds.images.dtype == torch.uint8
    assert ds.labels.tolist() == video.labels.tolist()
    assert ds.classes == ["absent", "present"]
    assert ds.meta["n_video_frames"] == 40 and ds.meta["video_manifest"]["seed"] == 1
    strided = load_video(video.video_path, stride=3)
    assert len(strided) == 14 and strided.labels.tolist() == video.labels[::3].tolist()
    assert torch.equal(strided.images, ds.images[::3])


def test_iter_video_frames_nearest_resize(video):
    native = dict(iter_video_frames(video.video_path, input_size=None))
    small = dict(iter_video_frames(video.video_path, input_size=(24, 32), stride=5))
    assert sorted(small) == list(range(0, 40, 5))
    assert native[0].shape == (3, 48, 64)
    # 48x64 -> 24x32 nearest: every second row and column, from 1
    assert torch.equal(small[10], native[10][:, 1::2, 1::2])


def test_video_frames_are_pyav_rgb24_pixels_exactly(video):
    """The reused colour converter gives the pixels of PyAV's own per-frame rgb24 conversion."""
    import av

    with av.open(str(video.video_path)) as c:
        want = [torch.from_numpy(f.to_ndarray(format="rgb24").transpose(2, 0, 1).copy()) for f in c.decode(video=0)]
    got = dict(iter_video_frames(video.video_path, input_size=None))
    assert sorted(got) == list(range(len(want))) and len(want) == 40
    assert all(torch.equal(got[i], want[i]) for i in range(len(want)))
    keys = dict(iter_video_frames(video.video_path, input_size=None, keyframes=True))
    assert keys and all(torch.equal(img, want[i]) for i, img in keys.items())


def test_stopping_early_leaves_no_decoding_thread(video):
    import threading

    for keyframes in (False, True):
        it = iter_video_frames(video.video_path, input_size=(8, 8), keyframes=keyframes)
        next(it)
        it.close()
        assert not [t for t in threading.enumerate() if t.name == "foldcnn-video-decode"]


def _write_csv(path, rows, header="frame,label"):
    path.write_text(header + "\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return path


@pytest.mark.parametrize("case, match", [
    ("short", "labels 39 frames .* has 40 frames"),
    ("long", "labels 41 frames .* has 40 frames"),
    ("gap", "1 of frames 0..39 has no label: 7"),
    ("duplicate", "frame 3 is labelled twice"),
    ("header", "bad header"),
    ("label", "label 'maybe'"),
    ("empty", "is empty"),
])
def test_label_csv_mismatch_errors(video, tmp_path, case, match):
    rows = [(i, int(v)) for i, v in enumerate(video.labels)]
    csv = tmp_path / "labels.csv"
    if case == "short":
        _write_csv(csv, rows[:-1])
    elif case == "long":
        _write_csv(csv, rows + [(40, 0)])
    elif case == "gap":
        _write_csv(csv, rows[:7] + rows[8:])
    elif case == "duplicate":
        _write_csv(csv, rows + [(3, 1)])
    elif case == "header":
        _write_csv(csv, rows, header="index,value")
    elif case == "label":
        _write_csv(csv, rows[:5] + [(5, "maybe")] + rows[6:])
    else:
        csv.write_text("")
    with pytest.raises(LabelsMismatchError, match=match):
        load_video(video.video_path, labels_csv=csv)


def test_label_csv_accepts_names_and_any_order(tmp_path):
    csv = _write_csv(tmp_path / "l.csv", [(2, "present"), (0, 0), (1, "absent")])
    assert read_labels_csv(csv).tolist() == [0, 0, 1]


def test_unreadable_video_errors_name_the_file(video, tmp_path):
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"\x00" * 64 + b"not a video" * 100)
    with pytest.raises(VideoReadError, match="junk.mp4"):
        list(iter_video_frames(junk))
    data = video.video_path.read_bytes()
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(data[: len(data) // 2])  # the index (moov) is at the end: lost
    with pytest.raises(VideoReadError, match="cut.mp4"):
        load_video(cut, labels_csv=video.labels_path)
    with pytest.raises(FileNotFoundError, match="nothere.mp4"):
        list(iter_video_frames(tmp_path / "nothere.mp4"))
    with pytest.raises(FileNotFoundError, match="labels_csv"):
        load_video(junk)  # no labels.csv next to it


def test_truncated_video_is_an_error_naming_file_and_frame(tmp_path):
    pytest.importorskip("av")
    from tiny_data import truncated_video

    cut, whole = truncated_video(tmp_path / "cut.mp4", frames=40, keep=17)
    assert len(list(iter_video_frames(whole))) == 40  # the whole file passes the count check
    got = []
    with pytest.raises(VideoTruncatedError, match=r"cut.mp4 is truncated: decoding stopped at frame 17 .* "
                       r"declares 40 frames") as e:
        got.extend(i for i, _ in iter_video_frames(cut, stride=2))
    assert e.value.frames_read == 17 and got == list(range(0, 17, 2))  # frames before the cut still come


def test_missing_pyav_says_what_to_install(video, monkeypatch):
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match=r"pip install 'foldcnn\[video\]'"):
        list(iter_video_frames(video.video_path))


def test_import_does_not_load_pyav():
    code = ("import sys, foldcnn.data.readers, foldcnn.data.video, foldcnn.data.grouping, "
            "foldcnn.data.splits; assert 'av' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_explicit_class_order(folder):
    root, _ = folder
    ds = load_image_folder(root, classes=["b_dog", "a_cat"])
    assert ds.classes == ["b_dog", "a_cat"] and ds.class_counts() == [2, 3]
    assert ds.meta["files"][0].startswith("b_dog/")
    with pytest.raises(DataReadError, match="not in classes"):
        load_image_folder(root, classes=["a_cat"])
    with pytest.raises(DataReadError, match="z_none"):
        load_image_folder(root, classes=["a_cat", "b_dog", "z_none"])
    ds = load_image_folder(root, classes=["a_cat", "b_dog", "z_none"], allow_empty_classes=True)
    assert ds.class_counts() == [3, 2, 0]


def test_exif_orientation_applied(tmp_path):
    a = np.zeros((4, 6, 3), np.uint8)
    a[0, 0] = 255
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    im.save(tmp_path / "sideways.png", exif=exif)
    t = read_image(tmp_path / "sideways.png")
    assert t.shape == (3, 6, 4)
    assert torch.equal(t.permute(1, 2, 0), torch.from_numpy(np.rot90(a, -1).copy()))


# ------------------------------------------------------------------- PNGs by libspng (pyspng)
def _png_chunks(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 8
    while pos < len(data):
        n = int.from_bytes(data[pos:pos + 4], "big")
        out.append((data[pos + 4:pos + 8], data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def _png_with(data: bytes, extra: list[tuple[bytes, bytes]]) -> bytes:
    """``data`` with ``extra`` chunks (valid CRCs) inserted after IHDR."""
    import zlib

    chunks = _png_chunks(data)
    chunks[1:1] = extra
    return data[:8] + b"".join(len(body).to_bytes(4, "big") + kind + body
                               + zlib.crc32(kind + body).to_bytes(4, "big") for kind, body in chunks)


def test_fast_png_path_gives_pillows_pixels_and_leaves_the_rest_to_pillow(tmp_path):
    pytest.importorskip("pyspng")
    from foldcnn.data import readers

    def pillow(path):
        with Image.open(path) as im:
            return np.asarray(im.convert("RGB"))

    for i, (h, w, level) in enumerate([(22, 52, 6), (1, 1, 0), (50, 50, 9), (37, 3, 1)]):
        p = tmp_path / f"rgb{i}.png"
        Image.fromarray(_rgb(h, w, i)).save(p, compress_level=level)
        fast = readers.decode_png_fast(p.read_bytes(), None)
        assert fast is not None and np.array_equal(fast, pillow(p))  # decoded by libspng, same pixels
        assert np.array_equal(read_image(p).permute(1, 2, 0).numpy(), fast)
    rgb = (tmp_path / "rgb0.png").read_bytes()
    # other colour types and bit depths, EXIF, transparency: Pillow decides (see the tests above)
    for mode, arr in (("L", _rgb(4, 5, 0)[..., 0]), ("RGBA", np.dstack([_rgb(4, 5, 1), _rgb(4, 5, 2)[..., 0]]))):
        Image.fromarray(arr, mode).save(tmp_path / "other.png")
        assert readers.decode_png_fast((tmp_path / "other.png").read_bytes(), None) is None
    assert readers.decode_png_fast(_png_with(rgb, [(b"eXIf", b"MM\x00*")]), None) is None
    assert readers.decode_png_fast(_png_with(rgb, [(b"tRNS", b"\x00\x01\x00\x02\x00\x03")]), None) is None
    assert readers.decode_png_fast(_png_with(rgb, [(b"pHYs", b"\x00" * 9)]), None) is not None  # harmless chunk
    assert readers.decode_png_fast(rgb, 22 * 52 - 1) is None  # over the pixel limit: Pillow's error


@pytest.mark.parametrize("damage", ["crc", "truncated", "idat"])
def test_damaged_pngs_fail_as_with_pillow_alone(tmp_path, damage, monkeypatch):
    pytest.importorskip("pyspng")
    from foldcnn.data import readers

    p = tmp_path / "x.png"
    Image.fromarray(_rgb(22, 52, 0)).save(p)
    data = bytearray(p.read_bytes())
    if damage == "crc":  # pixels intact, a chunk's checksum wrong: libspng as pyspng sets it up would not notice
        data[29] ^= 0xFF
    elif damage == "truncated":
        data = data[: len(data) * 2 // 3]
    else:
        data[60] ^= 0xFF
    p.write_bytes(bytes(data))
    assert readers.decode_png_fast(bytes(data), None) is None
    with pytest.raises(ImageReadError, match="x.png") as fast:
        read_image(p)
    monkeypatch.setattr(readers, "_spng", False)  # Pillow alone
    with pytest.raises(ImageReadError) as pillow:
        read_image(p)
    assert fast.value.reason == pillow.value.reason


def test_folder_listing_is_sorted_by_path_skips_hidden_and_does_not_enter_folder_links(tmp_path):
    import os

    from foldcnn.data.readers import iter_folder

    def reference(root, recursive):  # the pathlib listing the scandir one replaced
        it = root.rglob("*") if recursive else root.iterdir()
        return sorted(p for p in it if p.is_file() and not any(
            part.startswith(".") for part in p.relative_to(root).parts))

    for rel in ["a/b.png", "a-c.png", "a.png", "A/z.png", ".h/x.png", "a/.y.png", "b/c/d/e.png",
                "b/c.png/f.png", "z", "b b/q.png"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    os.symlink(tmp_path / "a", tmp_path / "link_dir")
    os.symlink(tmp_path / "a.png", tmp_path / "link.png")
    os.symlink(tmp_path / "missing", tmp_path / "broken.png")
    for recursive in (True, False):
        got = list(iter_folder(tmp_path, recursive))
        assert got == reference(tmp_path, recursive)
    assert [p.relative_to(tmp_path).as_posix() for p in iter_folder(tmp_path, True)][:4] == ["A/z.png", "a/b.png", "a-c.png",
                                                                                     "a.png"]


def test_iter_folder_lists_each_folder_when_it_reaches_it(tmp_path, monkeypatch):
    import os

    from foldcnn.data import readers
    from foldcnn.infer.sources import expand_path, iter_expand_path

    for c in "abc":
        for i in range(3):
            (tmp_path / c).mkdir(exist_ok=True)
            (tmp_path / c / f"{i}.png").write_bytes(b"x")
    (tmp_path / "c" / "notes.txt").write_text("x")
    listed = []
    real = os.scandir
    monkeypatch.setattr(readers.os, "scandir", lambda d: listed.append(os.path.basename(d)) or real(d))
    it = iter_expand_path(tmp_path)
    assert next(it) == ("file", tmp_path / "a" / "0.png")
    assert listed == [tmp_path.name, "a"]  # b/ and c/ not listed yet
    rest = list(it)
    assert listed == [tmp_path.name, "a", "b", "c"]
    assert [("file", tmp_path / "a" / "0.png"), *rest] == expand_path(tmp_path)
    assert rest[-1] == ("ignored", [str(tmp_path / "c" / "notes.txt")])  # the other files, last
