"""Readers for the local data sets' file formats (CIFAR-10 python batches, MNIST IDX files,
multi-channel TIFFs): each returns arrays, or raises :class:`DataError` naming the file and
the fix; never a traceback from the format's library."""
from __future__ import annotations

import gzip
import pickle
import struct
from pathlib import Path

import numpy as np
import torch

Tensor = torch.Tensor


class DataError(ValueError):
    """A data set cannot be built: missing folder, wrong format, bad setting."""


def require_dir(root, what: str, expected: str) -> Path:
    if root is None or not Path(root).is_dir():
        raise DataError(f"{what}: data folder '{root}' not found. Put {expected} there, or point "
                        "to them with dataset.root=/path/to/folder (or paths.data=/path/to/data)")
    return Path(root)


def read_cifar10(root) -> tuple[Tensor, Tensor]:
    """Train and test images ``(N, 3, 32, 32)`` in [0,1] from a ``cifar-10-batches-py`` folder."""
    root = require_dir(root, "cifar10", "the 'cifar-10-batches-py' files (data_batch_1..5, "
                        "test_batch)")
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"

    def load(names):
        arrays = []
        for name in names:
            path = root / name
            if not path.exists():
                continue
            arrays.append(_cifar_batch(path))
        if not arrays:
            raise DataError(f"cifar10: no batch files {list(names)} in {root}")
        return torch.as_tensor(np.concatenate(arrays), dtype=torch.float64) / 255

    return load([f"data_batch_{i}" for i in range(1, 6)]), load(["test_batch"])


def _cifar_batch(path: Path) -> np.ndarray:
    """One CIFAR-10 batch file as (N, 3, 32, 32) uint8; a clear error for anything else."""
    try:
        with open(path, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        return data.reshape(-1, 3, 32, 32)
    except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, IndexError,
            AttributeError) as err:
        raise DataError(f"cifar10: {path} is not a CIFAR-10 python batch ({type(err).__name__}: "
                        f"{err}); replace it with the file from cifar-10-python.tar.gz") from None


def read_idx(path) -> np.ndarray:
    """An IDX file (MNIST format, optionally gzipped) as a numpy array."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            head = fh.read(4)
            if len(head) < 4:
                raise DataError(f"{path}: empty or truncated IDX file (no header)")
            zero, dtype_code, ndim = struct.unpack(">HBB", head)
            if zero != 0 or dtype_code != 0x08 or ndim == 0:
                raise DataError(f"{path}: not an unsigned-byte IDX file")
            dims = fh.read(4 * ndim)
            if len(dims) < 4 * ndim:
                raise DataError(f"{path}: truncated IDX header")
            shape = struct.unpack(">" + "I" * ndim, dims)
            body = fh.read()
    except (OSError, EOFError) as err:  # gzip.BadGzipFile is an OSError
        raise DataError(f"{path}: cannot be read as {'gzip-compressed ' if opener is gzip.open else ''}"
                        f"IDX ({type(err).__name__}: {err})") from None
    expected = int(np.prod(shape))
    if len(body) != expected:
        raise DataError(f"{path}: the header promises {expected} bytes of data {shape} but the file "
                        f"holds {len(body)}; the file is truncated or corrupt")
    return np.frombuffer(body, dtype=np.uint8).reshape(shape)


def find_idx(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx"), stem.replace("-idx", ".idx") + ".gz"):
        if (root / name).exists():
            return root / name
    raise DataError(f"mnist: '{stem}' (or .gz) not found in {root}")


ARRAY_KEYS = ("train_input", "train_target", "test_input", "test_target")
VAL_KEYS = ("val_input", "val_target")  # optional: a validation split of the file's own


def read_arrays(path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file or of a folder of ``KEY.npy`` files, by key."""
    p = Path(path)
    if p.suffix == ".npy" and p.is_file():
        raise DataError(f"dataset=arrays: {p} is a single .npy file; give an .npz file with "
                        "train_input, train_target, test_input, test_target (np.savez), or a folder "
                        "holding one KEY.npy per key")
    try:
        if p.is_dir():
            return {f.stem: np.load(f, allow_pickle=False) for f in sorted(p.glob("*.npy"))}
        with np.load(p, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError) as err:
        raise DataError(f"dataset=arrays: {p} is not a readable .npz file or folder of .npy files "
                        f"({type(err).__name__}: {err})") from None


def check_arrays(a: dict, keys=ARRAY_KEYS) -> None:
    """Refuse a user's arrays that are missing, non-numeric, non-finite or mis-shaped."""
    for key in keys:
        if key not in a:
            raise DataError(f"dataset=arrays: key '{key}' is missing (found: {sorted(a) or 'nothing'}); "
                            f"the file needs {', '.join(ARRAY_KEYS)}")
    for key, v in a.items():
        if np.iscomplexobj(v):
            raise DataError(f"dataset=arrays: '{key}' is complex ({v.dtype}); deqexp trains on real "
                            "values: store the real and imaginary parts as separate channels or columns")
        if not np.issubdtype(v.dtype, np.number) and v.dtype != bool:
            raise DataError(f"dataset=arrays: '{key}' has dtype {v.dtype}; it must be numeric")
        if not np.isfinite(v.astype(np.float64)).all():
            raise DataError(f"dataset=arrays: '{key}' contains NaN or inf")
    for split in ("train", "test"):
        x, y = a[f"{split}_input"], a[f"{split}_target"]
        if x.ndim not in (2, 4):
            raise DataError(f"dataset=arrays: '{split}_input' has shape {x.shape}; use (N, n) for "
                            "sequences or (N, C, H, W) for images")
        if x.ndim == 4 and x.shape[3] <= 4 < min(x.shape[1], x.shape[2]):
            raise DataError(f"dataset=arrays: '{split}_input' has shape {x.shape}, which looks like "
                            "channels-last images (N, H, W, C); deqexp takes (N, C, H, W): store "
                            "np.transpose(x, (0, 3, 1, 2))")
        if 0 in x.shape[1:] or 0 in y.shape[1:]:
            raise DataError(f"dataset=arrays: '{split}_input' {x.shape} / '{split}_target' {y.shape} "
                            "hold no values per sample; each sample needs at least one")
        if len(x) != len(y):
            raise DataError(f"dataset=arrays: '{split}_input' has {len(x)} samples but "
                            f"'{split}_target' has {len(y)}")
        if x.ndim == 4 and y.shape != x.shape:
            raise DataError(f"dataset=arrays: image targets must have the inputs' shape; "
                            f"'{split}_target' is {y.shape}, '{split}_input' {x.shape}")
        if x.ndim == 2 and y.ndim != 2:
            raise DataError(f"dataset=arrays: '{split}_target' has shape {y.shape}; sequence "
                            "targets are (N, m)")
    given = [k for k in VAL_KEYS if k in a]
    if len(given) == 1:
        raise DataError(f"dataset=arrays: '{given[0]}' is given without "
                        f"'{({*VAL_KEYS} - {given[0]}).pop()}'; a validation split needs both")
    for side in ("input", "target"):
        tr = a[f"train_{side}"]
        for split in ("test", "val"):
            other = a.get(f"{split}_{side}")
            if other is not None and tr.shape[1:] != other.shape[1:]:
                raise DataError(f"dataset=arrays: 'train_{side}' samples are {tr.shape[1:]} but "
                                f"'{split}_{side}' samples are {other.shape[1:]}")
    if given and len(a["val_input"]) != len(a["val_target"]):
        raise DataError(f"dataset=arrays: 'val_input' has {len(a['val_input'])} samples but "
                        f"'val_target' has {len(a['val_target'])}")


def array_locations(a: dict, key: str, n: int, default: Tensor | None, why: str = "") -> Tensor:
    """Locations ``a[key]`` as ``(n, d)``, or ``default`` when absent (refused, saying ``why``
    it is needed, when there is none)."""
    if key not in a:
        if default is None:
            raise DataError(f"dataset=arrays: {why}, so '{key}' (their locations, shape ({n}, d)) is needed")
        return default
    loc = torch.as_tensor(a[key], dtype=torch.float64)
    loc = loc[:, None] if loc.dim() == 1 else loc
    if loc.dim() != 2 or len(loc) != n:
        raise DataError(f"dataset=arrays: '{key}' has shape {tuple(a[key].shape)}; it must be ({n}, d)")
    return loc


def read_tiff(path: Path, channels: int, patch: int) -> Tensor:
    """The first ``channels`` bands of a TIFF as ``(C, H, W)`` in [0, 1] (scaled by its max)."""
    import tifffile

    try:
        arr = np.asarray(tifffile.imread(path), dtype=np.float64)
    except (tifffile.TiffFileError, ValueError, OSError) as err:
        raise DataError(f"hyperspectral: {path} is not a readable TIFF ({type(err).__name__}: "
                        f"{err}); remove or replace it") from None
    if not np.isfinite(arr).all():
        raise DataError(f"hyperspectral: {path} contains NaN or inf pixels; clean it first")
    if arr.ndim != 3:
        raise DataError(f"hyperspectral: {path.name} has shape {arr.shape}, expected 3-D")
    if arr.shape[-1] < arr.shape[0]:  # channels last -> first
        arr = np.moveaxis(arr, -1, 0)
    if arr.shape[0] < channels:
        raise DataError(f"hyperspectral: {path.name} has {arr.shape[0]} channels, "
                        f"dataset.channels={channels}")
    img = torch.as_tensor(arr[:channels])
    if min(img.shape[1:]) < patch:
        raise DataError(f"hyperspectral: {path.name} is {img.shape[1]}x{img.shape[2]} pixels, "
                        f"smaller than dataset.patch={patch}; use a smaller patch")
    return img / img.max().clamp_min(1e-12)
