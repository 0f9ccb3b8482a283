"""What a Python session keeps of the Stable Diffusion models its runs loaded.

    python benchmarks/loaded_models.py                # 4 text runs, each on its own tiny model
    python benchmarks/loaded_models.py --runs 6 --load-only
    python benchmarks/loaded_models.py --load-only --compile inductor

A notebook or script that calls ``dreamtext.cli.main`` (README, "From Python") for runs on
several models, in one process: after each run, the process's resident memory (RSS), how many
models ``dreamtext.models`` holds, and whether each earlier run's model is still alive (a
``weakref`` to its U-Net, after ``gc.collect()``). The models are the tests' tiny random SD-2.x
pipeline (``tests/tiny_models.py``), written once a run to its own folder (distinct folders are
distinct models to the cache); the runs are the tests' tiny text→3D run (16 px, 2 steps, no
export). ``--load-only``: ``models.load_stable_diffusion`` alone, no run. ``--compile BACKEND``:
the runs' ``--compile`` (U-Net and VAE encoder ``torch.compile``d, here on the CPU with that
backend: ``eager`` and ``aot_eager_decomp_partition`` need no C compiler, ``inductor`` does); with
``--load-only`` each model's compiled U-Net runs once and its compiled encoder once with its
backward. The VAEs alive are counted too: whether Dynamo's caches (its code cache, guards, AOT
autograd's graphs) keep a released model's parts. The tiny models hold
about 2 MB of weights each, so their RSS steps are small; what the figures show is whether an
earlier model stays alive; SD 2.1 holds about 5 GB in fp32 (2.6 GB on a GPU in fp16).
"""

from __future__ import annotations

import argparse
import gc
import logging
import os
import sys
import tempfile
import weakref
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GOMP_SPINCOUNT", "1000")

import psutil  # noqa: E402
import yaml  # noqa: E402


def rss_mib() -> float:
    return psutil.Process().memory_info().rss / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=4, help="runs, each on its own model")
    parser.add_argument("--load-only", action="store_true", help="load the models, run nothing")
    parser.add_argument("--compile", metavar="BACKEND", help="compile on the CPU with BACKEND")
    args = parser.parse_args()

    import torch
    from tiny_models import TINY_TRAIN, write_tiny_sd

    from dreamtext import cli, models

    logging.getLogger("dreamtext").setLevel(logging.WARNING)
    torch.set_num_threads(1)
    if args.compile:
        models.COMPILE_DEVICES = (*models.COMPILE_DEVICES, "cpu")
        models.COMPILE_BACKEND = args.compile
        torch.compiler.cudagraph_mark_step_begin = lambda: None  # --compile's CUDA graphs
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        config = folder / "tiny.yaml"
        config.write_text(yaml.safe_dump({**TINY_TRAIN, "preview_every": 0}))
        paths = [write_tiny_sd(folder / f"sd{i}") for i in range(args.runs)]
        loaded = models.load_stable_diffusion(str(paths[0]))
        weights = sum(
            p.numel() * p.element_size()
            for part in (loaded.unet, loaded.vae, loaded.text_encoder)
            for p in part.parameters()
        )
        del loaded
        models.clear_cache()
        print(f"one tiny model: {weights / 2**20:.2f} MiB of weights (U-Net, VAE, text encoder)")
        print(f"before the first run: RSS {rss_mib():.1f} MiB")
        alive: list[tuple[weakref.ref, weakref.ref]] = []
        for i, path in enumerate(paths):
            if args.load_only:
                loaded = models.load_stable_diffusion(str(path))
                if args.compile:
                    run_compiled(loaded)
            else:
                argv = ["text", "a red cube", "--model", str(path), "--config", str(config),
                        "--iters", "2", "--workspace", str(folder / f"run{i}"),
                        *(["--compile"] if args.compile else [])]  # fmt: skip
                with open(os.devnull, "w") as quiet, _to(quiet, 1), _to(quiet, 2):
                    code = cli.main(argv)
                if code != 0:
                    sys.exit(f"run {i} exited {code}")
                loaded = models.load_stable_diffusion(str(path))
            alive.append((weakref.ref(loaded.unet), weakref.ref(loaded.vae)))
            del loaded
            gc.collect()
            held = len(models._LOADED)
            unets, vaes = (
                "".join("1" if ref[k]() is not None else "0" for ref in alive) for k in (0, 1)
            )
            print(
                f"after run {i + 1}: RSS {rss_mib():.1f} MiB, models held {held}, "
                f"U-Nets alive (run 1..{i + 1}) {unets}, VAEs {vaes}"
            )


def run_compiled(loaded) -> None:
    """``loaded``'s compiled U-Net once, and its compiled VAE encoder once with its backward,
    at the shapes of the tests' tiny run (16 px renders, the tiny model's 32-wide text)."""
    import torch

    generator = torch.Generator().manual_seed(0)
    latents = torch.randn(1, 4, 8, 8, generator=generator)
    text = torch.randn(1, 77, loaded.text_encoder.config.hidden_size, generator=generator)
    loaded.sds_unet(True)(latents, torch.tensor([10]), encoder_hidden_states=text)
    images = torch.rand(1, 3, 16, 16, generator=generator, requires_grad=True)
    loaded.sds_encoder(True)(images).sum().backward()


class _to:
    """Send file descriptor ``fd`` (the runs' lines and bars) to ``target`` for the block."""

    def __init__(self, target, fd: int) -> None:
        self.target, self.fd = target, fd

    def __enter__(self) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        self.saved = os.dup(self.fd)
        os.dup2(self.target.fileno(), self.fd)

    def __exit__(self, *exc) -> None:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(self.saved, self.fd)
        os.close(self.saved)


if __name__ == "__main__":
    main()
