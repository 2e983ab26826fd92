"""Prepare the GPU check for a machine that has only this checkout: data files, wheels, the commit.

    python benchmarks/gpu_prepare.py --root ../shared/datasets          # writes .gpu/ (git-ignored)

Then, on the GPU machine (the checkout with ``.gpu/`` in it, nothing else needed; ``.gpu/`` is git-ignored, so a
tool that copies the working tree must be told to take it, e.g. ``carry: [".gpu"]``):

    bash benchmarks/gpu_device_run.sh check      # steps 1-6 of gpu_check.py (not yet timed on a GPU)
    bash benchmarks/gpu_device_run.sh targets    # steps 7-8, a second call

``.gpu/`` holds:
  data/cifar10-train.npz  the CPU-scale protocol's 10,000-image training subset: exactly the images, in the
                          order, that ``data.subset: 10000`` draws from the full file, so the protocol run on it
                          is the same run (23 MB instead of the full file's 140 MB);
  data/cifar10-test.npz   the official test set, the same arrays;
                          both npz files hold LZMA-compressed members (a standard zip method ``np.load`` reads):
                          23 MB each instead of deflate's 28 MB, which leaves room under a 64 MiB copy limit;
  whl/                    wheels of the Python packages a GPU image may lack (pydantic and optuna, with their
                          own needs; the tune step uses a journal file, so no SQLAlchemy), at the versions this
                          checkout's environment runs, for CPython 3.12 on x86-64 Linux;
  COMMIT                  the commit the copy was made from (a copied working tree has no ``.git``).
A machine whose copy of the checkout is limited in size (64 MiB here) takes all of it: the script prints the
size of what would travel (tracked files + ``.gpu``): 54.1 MiB at this writing.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
PROTOCOL = REPO / "configs" / "protocol" / "cifar10_cpu_scale.yaml"
# what the check imports beyond a CUDA PyTorch image (KINDS.md lists the image's packages)
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions", "optuna", "colorlog")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def write_training_subset(root: Path, dest: Path) -> int:
    """The protocol's training subset as an npz the cifar10 loader reads; returns its number of images."""
    from curridistill.config import load_config
    from curridistill.data.cifar import load_cifar10
    from curridistill.data.pipeline import training_subset

    data = load_config(PROTOCOL, [f"data.root={root}"]).data
    train_full, _ = load_cifar10(root)
    train = training_subset(train_full, data.subset, data.split_seed)
    x = train.x.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C), as the official npz
    write_npz(dest / "cifar10-train.npz", x=x, y=train.y.numpy().astype(np.uint8), classes=np.array(train.classes))
    return len(train)


COMPRESSION = zipfile.ZIP_LZMA  # a standard zip method; the test of the subset's content stores (it is faster)


def write_npz(path: Path, **arrays: np.ndarray) -> None:
    """An npz whose members are LZMA-compressed: ``np.savez_compressed`` only deflates, and CIFAR's pixels
    deflate by 8% where LZMA takes a quarter off; ``np.load`` reads either, through ``zipfile``."""
    with zipfile.ZipFile(path, "w", compression=COMPRESSION) as archive:
        for name, array in arrays.items():
            with archive.open(f"{name}.npy", "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def copy_npz(source: Path, dest: Path) -> None:
    with np.load(source, allow_pickle=False) as arrays:
        write_npz(dest, **{name: arrays[name] for name in arrays.files})


def download_wheels(dest: Path) -> list[str]:
    """Wheels of ``WHEELS`` at this environment's versions, for CPython 3.12 on x86-64 Linux."""
    pins = [f"{name}=={importlib.metadata.version(name)}" for name in WHEELS]
    platforms = [a for p in PLATFORMS for a in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                    "--python-version", "3.12", "--implementation", "cp", *platforms, "-d", str(dest), *pins], check=True)
    return pins


def ignore_in_git(folder: str) -> None:
    exclude = REPO / ".git" / "info" / "exclude"
    if not (REPO / ".git").is_dir():
        return
    exclude.parent.mkdir(parents=True, exist_ok=True)
    lines = exclude.read_text().splitlines() if exclude.is_file() else []
    if f"/{folder}/" not in lines:
        exclude.write_text("\n".join([*lines, f"/{folder}/"]) + "\n")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--root", default=str(REPO.parent / "shared" / "datasets"), help="folder with cifar10/ (the full npz)")
    p.add_argument("--dest", default=".gpu", help="folder inside the checkout (default .gpu, git-ignored)")
    p.add_argument("--no-wheels", action="store_true", help="skip the wheel download (a machine with pydantic and optuna)")
    args = p.parse_args(argv)
    root, dest = Path(args.root).resolve(), REPO / args.dest
    test = next((c for c in (root / "cifar10" / "cifar10-test.npz", root / "cifar10-test.npz") if c.is_file()), None)
    if test is None:
        sys.stderr.write(f"error: --root {root} has no cifar10/cifar10-test.npz; point it at the datasets folder\n")
        return 2
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "data").mkdir(parents=True)
    ignore_in_git(args.dest.strip("/"))
    n = write_training_subset(root, dest / "data")
    copy_npz(test, dest / "data" / "cifar10-test.npz")
    pins = [] if args.no_wheels else download_wheels(dest / "whl")
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout.strip()
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=REPO, capture_output=True,
                             text=True).stdout.strip()
    if changed:  # the copy will carry edits that no commit holds: say so in every result it writes
        commit += "-dirty"
    (dest / "COMMIT").write_text(commit + "\n")
    size = sum(f.stat().st_size for f in dest.rglob("*") if f.is_file())
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True).stdout.split("\0")
    size += sum((REPO / f).stat().st_size for f in tracked if f and (REPO / f).is_file())
    print(f"{dest}: {n} training images, the test set, {len(pins)} wheels, commit {commit[:10]}; "
          f"with the tracked files {size / 2**20:.1f} MiB travel")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
