"""Write a file of clean patches and their noise in the layout that replays the authors' E2 loop.

    python scripts/e2_patches.py patches.npz [--train 400] [--test 100] [--seed 0]

The file holds ``train_target`` and ``test_target`` (clean images, N x C x H x W in [0, 1]) and
``train_noise`` / ``test_noise`` (N(0, 0.2^2), float32), which

    deqexp train experiment=paper/e2 dataset=arrays dataset.path=patches.npz

adds by batch position (the preset's ``dataset.noise_pairing=batch``) with the authors' random
stream (``trainer.rng=authors``). Here the patches are the embedded scikit-image ones; to check
against the authors' own numbers, save their patches and their ``noise_train`` / ``noise_test``
under the same four keys instead.
"""
from __future__ import annotations

import argparse

import numpy as np


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("path", help="the .npz file to write")
    ap.add_argument("--train", type=int, default=400, help="training patches (default 400)")
    ap.add_argument("--test", type=int, default=100, help="test patches (default 100)")
    ap.add_argument("--seed", type=int, default=0, help="which patches and which noise (default 0)")
    ap.add_argument("--noise-std", type=float, default=0.2, help="the noise's standard deviation")
    args = ap.parse_args(argv)
    from deqexp.data import load_dataset

    clean = load_dataset("images", args.seed, n_train=args.train, n_test=args.test)
    gen = np.random.default_rng(args.seed)
    out = {"train_target": clean.train_target.numpy(), "test_target": clean.test_target.numpy()}
    for split in ("train", "test"):
        shape = out[f"{split}_target"].shape
        out[f"{split}_noise"] = args.noise_std * gen.standard_normal(shape)
    np.savez(args.path, **{k: v.astype(np.float32) for k, v in out.items()})
    print(f"wrote {args.path}: " + ", ".join(f"{k} {v.shape}" for k, v in out.items()))


if __name__ == "__main__":
    main()
