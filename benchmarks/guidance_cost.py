"""What one SDS guidance call asks of a GPU, by part: floating-point work and backend ops.

    python benchmarks/guidance_cost.py [--sizes 64 256] [--configs benchmarks/sd21_configs]
                                       [--channels-last] [--out FILE]

Stable Diffusion 2.1-base's VAE and U-Net are built from their configs on PyTorch's ``meta``
device: shapes without weights or memory, so a CPU counts in seconds what the real models would
run. For each render size, one guidance call of ``dreamtext``'s SDS step (batch 1, fp16):

* **VAE encode**: ``StableDiffusionModels.encode_images`` itself (the render resized to the
  VAE's 512 px, mapped to [−1, 1], encoded to the posterior mean), forward, then its backward
  to the render (the VAE's weights are frozen: input gradients only);
* **U-Net**: one forward of classifier-free guidance's batch of 2 (unconditional and conditional
  together, as ``StableDiffusionGuidance.predict_noise`` calls it) at the latent size, without a
  graph.

GFLOP are ``torch.utils.flop_counter``'s (a multiply-add is 2; convolutions, matrix products and
attention, which is where the work is). Ops are the backend ops dispatched (a
``TorchDispatchMode``), views, detaches and bare allocations left out: on CUDA each is about one
kernel launch, so a part with many ops and little work is launch-bound on a big GPU. The render
size changes only the resize: the VAE always encodes at 512 px, as Stable-DreamFusion does.

"kept MiB" is what a part's forward keeps for its backward: the storages autograd saves
(``torch.autograd.graph.saved_tensors_hooks``), each once, the models' own weights left out.
Compiled as CUDA graphs (``guidance.compile_mode: reduce-overhead``), that is memory the graphs'
pool holds apart from the allocator's other blocks. The U-Net runs without a graph: it keeps none.

Attention is counted as CUDA runs it: ``F.scaled_dot_product_attention`` is one fused kernel
there, so its forward counts as one op, not the 10 of the math fallback the meta device runs
(its FLOPs are the same). The backward of the encoder's one attention (its mid-block) is still
the fallback's ops, about 10 where CUDA launches one or two. ``--channels-last`` puts VAE, U-Net
and their inputs in NHWC, as a ``--fp16``/``--bf16`` run on CUDA does: the copies that layout
adds or saves are the meta kernels' (their output strides), which CUDA's kernels may not share.
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from normal_quality import command_line  # noqa: E402
from sds_step import publish  # noqa: E402

from dreamtext.models import StableDiffusionModels  # noqa: E402

# Ops that launch no kernel of their own: views, detaches and bare allocations.
NOT_KERNELS = frozenset(
    {
        "view",
        "_unsafe_view",
        "t",
        "detach",
        "alias",
        "as_strided",
        "expand",
        "permute",
        "transpose",
        "unsqueeze",
        "squeeze",
        "slice",
        "select",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "empty",
        "empty_strided",
        "empty_like",
    }
)
PARTS = ("VAE encode, forward", "VAE encode, backward", "U-Net, CFG batch of 2")
SDPA = torch.nn.functional.scaled_dot_product_attention


class OpCount(TorchDispatchMode):
    """Counts the backend ops dispatched inside it that are not in :data:`NOT_KERNELS`.

    ``F.scaled_dot_product_attention`` counts as one op: on CUDA it is one fused kernel (flash or
    memory-efficient attention), while the meta device has no such kernel and runs the math
    fallback, 10 ops a call (2 matrix products, a softmax, 2 scalings and 5 casts/copies)."""

    def __init__(self) -> None:
        super().__init__()
        self.ops: collections.Counter[str] = collections.Counter()
        self._inside_attention = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = func.overloadpacket.__name__
        if name not in NOT_KERNELS and not self._inside_attention:
            self.ops[name] += 1
        return func(*args, **(kwargs or {}))

    def attention(self, *args, **kwargs):
        """``F.scaled_dot_product_attention``, counted as one op."""
        self.ops["scaled_dot_product_attention"] += 1
        self._inside_attention += 1
        try:
            return SDPA(*args, **kwargs)
        finally:
            self._inside_attention -= 1

    @property
    def total(self) -> int:
        return sum(self.ops.values())


class Measured:
    """GFLOP and ops of the code run inside it."""

    def __enter__(self) -> Measured:
        self.flops, self.count = FlopCounterMode(display=False), OpCount()
        self.attention = mock.patch.object(
            torch.nn.functional, "scaled_dot_product_attention", self.count.attention
        )
        self.attention.__enter__()
        self.flops.__enter__()
        self.count.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.count.__exit__(*exc)
        self.flops.__exit__(*exc)
        self.attention.__exit__(*exc)

    def row(self, size: int, part: str) -> dict:
        return {
            "size": size,
            "part": part,
            "gflop": self.flops.get_total_flops() / 1e9,
            "ops": self.count.total,
            "top": ", ".join(f"{name} {n}" for name, n in self.count.ops.most_common(4)),
        }


class Kept:
    """The bytes of the distinct storages autograd saves for backward inside the ``with`` block,
    the storages of ``weights`` (the models' parameters) left out. Each storage is credited to
    the ``label`` set when it was first saved (:meth:`mib_by_label`)."""

    def __init__(self, weights: set[int]) -> None:
        self.weights = weights
        self.storages: dict[int, int] = {}
        self.label = ""
        self.labels: dict[int, str] = {}
        self.hooks = torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)

    def pack(self, tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage._cdata not in self.weights and storage._cdata not in self.storages:
            self.storages[storage._cdata] = storage.nbytes()
            self.labels[storage._cdata] = self.label
        return tensor

    def __enter__(self) -> Kept:
        self.hooks.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.hooks.__exit__(*exc)

    @property
    def mib(self) -> float:
        return sum(self.storages.values()) / 2**20

    def mib_by_label(self, labels: list[str]) -> dict[str, float]:
        """MiB kept under each of ``labels``, in their order."""
        kept = dict.fromkeys(labels, 0.0)
        for key, nbytes in self.storages.items():
            kept[self.labels[key]] += nbytes / 2**20
        return kept


def kept_by_block(models: SimpleNamespace, size: int) -> dict[str, float]:
    """What the VAE encode on a ``size`` px render keeps for its backward, in MiB, by the
    encoder's module that saved it: ``conv_in``, ``down_blocks.0`` …, ``mid_block``, and
    ``other`` for the rest (the resize, the encoder's output layers, the posterior's mean). Each
    storage counts once, for the first module that saves it; the weights are left out."""
    encoder = models.vae.encoder
    weights = {p.untyped_storage()._cdata for p in models.vae.parameters()}
    blocks = {"conv_in": encoder.conv_in}
    blocks.update({f"down_blocks.{i}": block for i, block in enumerate(encoder.down_blocks)})
    blocks["mid_block"] = encoder.mid_block
    kept = Kept(weights)
    kept.label = "other"
    handles = []
    for name, module in blocks.items():
        handles.append(
            module.register_forward_pre_hook(lambda *_, n=name: setattr(kept, "label", n))
        )
        handles.append(module.register_forward_hook(lambda *_: setattr(kept, "label", "other")))
    try:
        with torch.device("meta"), kept:
            render = torch.rand(1, 3, size, size, requires_grad=True)
            StableDiffusionModels.encode_images(models, render)
    finally:
        for handle in handles:
            handle.remove()
    return kept.mib_by_label([*blocks, "other"])


def build_models(configs: Path, channels_last: bool = False) -> SimpleNamespace:
    """The VAE and U-Net of ``configs`` on the meta device in fp16, frozen (in NHWC with
    ``channels_last``), in the shape :meth:`StableDiffusionModels.encode_images` reads (``vae``,
    ``resolution``, ``dtype``, ``channels_last``, ``scaling_factor``), plus ``unet`` and the
    text embedding width."""
    from diffusers import AutoencoderKL, UNet2DConditionModel

    vae_config = json.loads((configs / "vae_config.json").read_text(encoding="utf-8"))
    unet_config = json.loads((configs / "unet_config.json").read_text(encoding="utf-8"))
    with torch.device("meta"):
        vae = AutoencoderKL.from_config(vae_config).half().requires_grad_(False).eval()
        unet = UNet2DConditionModel.from_config(unet_config).half().requires_grad_(False).eval()
    if channels_last:
        vae.to(memory_format=torch.channels_last)
        unet.to(memory_format=torch.channels_last)
    return SimpleNamespace(
        vae=vae,
        unet=unet,
        resolution=int(vae_config["sample_size"]),
        dtype=torch.float16,
        channels_last=channels_last,
        scaling_factor=float(vae_config.get("scaling_factor", 0.18215)),
        text_width=int(unet_config["cross_attention_dim"]),
    )


def measure(models: SimpleNamespace, size: int, tokens: int = 77) -> list[dict]:
    """The rows of one guidance call on a ``size`` px render (see the module docstring)."""
    rows = []
    weights = {
        p.untyped_storage()._cdata for m in (models.vae, models.unet) for p in m.parameters()
    }
    with torch.device("meta"):
        render = torch.rand(1, 3, size, size, requires_grad=True)
        with Measured() as forward, Kept(weights) as kept:
            latents = StableDiffusionModels.encode_images(models, render)
        rows.append({**forward.row(size, PARTS[0]), "kept": kept.mib})
        with Measured() as backward:
            latents.float().sum().backward()
        rows.append(backward.row(size, PARTS[1]))
        batch = torch.cat([latents.detach()] * 2).to(models.dtype)
        if models.channels_last:  # as StableDiffusionModels.unet_input gives it
            batch = batch.contiguous(memory_format=torch.channels_last)
        times = torch.full((2,), 500)
        embeddings = torch.randn(2, tokens, models.text_width, dtype=models.dtype)
        with torch.no_grad(), Measured() as unet, Kept(weights) as kept:
            models.unet(batch, times, encoder_hidden_states=embeddings)
        rows.append({**unet.row(size, PARTS[2]), "kept": kept.mib})
    return rows


def table(rows: list[dict]) -> str:
    lines = [
        "| render px | part | GFLOP | ops (≈ kernels) | kept MiB | most frequent ops |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['size']} | {r['part']} | {r['gflop']:.1f} | {r['ops']} | "
        f"{'-' if 'kept' not in r else format(r['kept'], '.0f')} | {r['top']} |"
        for r in rows
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256], help="[64 256]")
    parser.add_argument(
        "--configs",
        type=Path,
        default=ROOT / "benchmarks" / "sd21_configs",
        help="a folder with vae_config.json and unet_config.json [SD-2.1-base's]",
    )
    parser.add_argument(
        "--channels-last",
        action="store_true",
        help="VAE, U-Net and their inputs in NHWC, as a --fp16/--bf16 run on CUDA has them",
    )
    parser.add_argument(
        "--blocks",
        action="store_true",
        help="also what the VAE encode keeps for backward by block of the encoder",
    )
    parser.add_argument("--out", type=Path, help="append the section to this markdown file")
    args = parser.parse_args(argv)
    if any(size < 1 for size in args.sizes):
        parser.error("--sizes must be positive")
    models = build_models(args.configs, args.channels_last)
    rows = [row for size in args.sizes for row in measure(models, size)]
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = command_line("guidance_cost.py", argv)
    report = (
        f"\n## Guidance cost by part (meta device, {args.configs.name}) — {stamp}\n\n"
        f"`{command}` (torch {torch.__version__}, fp16, batch 1, "
        f"{'channels_last' if args.channels_last else 'contiguous'})\n\n{table(rows)}\n"
    )
    if args.blocks:
        # The resize is all the render size changes: the encoder runs at its 512 px.
        kept = kept_by_block(models, args.sizes[0])
        lines = ["| encoder module | kept MiB |", "|---|---|"]
        lines += [f"| {name} | {mib:.0f} |" for name, mib in kept.items()]
        lines.append(f"| total | {sum(kept.values()):.0f} |")
        report += (
            "\nWhat the VAE encode keeps for backward, by module:\n\n" + "\n".join(lines) + "\n"
        )
    publish(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
