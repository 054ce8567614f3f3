"""skcfx._image_sources: lazy image collections, their checks, and how they travel to workers."""

import pickle

import numpy as np
import pytest
import torch
from PIL import Image

from skcfx._image_sources import as_image_source, iter_source_batches, list_image_files
from skcfx.diffusion.data import BatchError, EndlessSampler


def test_a_memory_map_travels_as_its_file(tmp_path):
    X = np.random.default_rng(0).integers(0, 256, (100, 6, 6, 3), dtype=np.uint8)
    np.save(tmp_path / "x.npy", X)
    source = as_image_source(np.load(tmp_path / "x.npy", mmap_mode="r"))
    payload = pickle.dumps(source)
    assert len(payload) < 1000  # not the 10.8 kB of pixels
    again = pickle.loads(payload)
    assert isinstance(again.X, np.memmap)
    assert torch.equal(again.__getitems__([3, 7]), source.__getitems__([3, 7]))
    in_memory = as_image_source(X)
    assert len(pickle.dumps(in_memory)) > X.nbytes  # an ordinary array is pickled with its data


def test_float_arrays_are_checked_up_front_without_a_copy():
    X = np.random.default_rng(0).random((10, 4, 4, 1)).astype(np.float32)
    X[7, 0, 0, 0] = 1.5
    with pytest.raises(ValueError, match=r"queries float values must lie in \[0, 1\]"):
        as_image_source(X, name="queries")
    X[7, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        as_image_source(X)


@pytest.mark.parametrize("bad, error, match", [
    (np.zeros((0, 4, 4)), ValueError, "empty"),
    (np.zeros((3, 4, 4, 2)), ValueError, "channels"),
    (np.zeros((3, 4, 4), dtype=np.int64), TypeError, "uint8"),
    (torch.zeros(2, 4, 4), TypeError, "torch.Tensor"),
    ([1, 2], TypeError, "PIL.Image"),
    (["/no/such/file.png"], ValueError, "no such image file"),
    (42, TypeError, "folder"),
])
def test_bad_inputs_raise_naming_the_argument(bad, error, match):
    with pytest.raises(error, match=match):
        as_image_source(bad, name="X")


def test_paths_folders_and_listing(tmp_path):
    for name in ("b/2.png", "b/10.png", "a-b/1.png", "a/9.png", ".hidden/0.png", "a/.skip.png"):
        path = tmp_path / name
        path.parent.mkdir(exist_ok=True)
        Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(path)
    (tmp_path / "a" / "notes.txt").write_text("x")
    listed = [p.relative_to(tmp_path).as_posix() for p in list_image_files(tmp_path)]
    assert listed == ["a/9.png", "a-b/1.png", "b/10.png", "b/2.png"]  # class by class, as load_image_folder
    with pytest.raises(TypeError, match="single path"):
        as_image_source(tmp_path / "a" / "9.png")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ValueError, match="holds no image files"):
        as_image_source(empty)


def test_a_bad_item_becomes_a_batch_error_naming_it(tmp_path):
    good = tmp_path / "good.png"
    Image.fromarray(np.zeros((4, 4), dtype=np.uint8)).save(good)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"nope")
    source = as_image_source([good, good, bad])
    error = source.__getitems__([0, 2])
    assert isinstance(error, BatchError) and "X[2]" in error.message and "bad.png" in error.message
    with pytest.raises(ValueError, match="bad.png"):
        list(iter_source_batches(source, 2, num_workers=1))


class _Items(torch.utils.data.Dataset):
    def __init__(self, items):
        self.items = items

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class _Broken(torch.utils.data.Dataset):
    def __len__(self):
        return 3

    def __getitem__(self, i):
        raise KeyError(i)


def test_datasets_of_tensors_arrays_and_pil():
    rgb = np.random.default_rng(0).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    items = [torch.from_numpy(rgb).permute(2, 0, 1), (Image.fromarray(rgb), 1), rgb.astype(np.float32) / 255.0]
    batch = as_image_source(_Items(items)).numpy(range(3))
    np.testing.assert_array_equal(batch, np.stack([rgb / np.float32(255.0)] * 3))
    with pytest.raises(ValueError, match=r"X\[0\].*channels first"):
        as_image_source(_Items([torch.zeros(4, 4, 3)]))
    with pytest.raises(ValueError, match=r"X\[0\].*Dataset raised KeyError"):
        as_image_source(_Broken())


def test_endless_sampler_shards_epochs_and_resumes():
    shards = [list(zip(range(12), EndlessSampler(5, seed=3, rank=r, world_size=2))) for r in (0, 1)]
    first = [i for _, i in shards[0][:3]] + [i for _, i in shards[1][:3]]  # one epoch, padded to 6
    assert set(first) == set(range(5))
    resumed = EndlessSampler(5, seed=3, rank=1, world_size=2, start=4)
    assert [i for _, i in zip(range(8), resumed)] == [i for _, i in shards[1][4:12]]
