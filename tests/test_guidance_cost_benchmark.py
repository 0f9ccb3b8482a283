"""benchmarks/guidance_cost.py: a guidance call's work and ops by part, on the meta device."""

from __future__ import annotations

import pytest
from benchmark_scripts import load_benchmark


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("guidance_cost", "guidance_cost_benchmark")


def test_the_parts_of_a_guidance_call_are_counted_at_sd21_base_shapes(bench, tmp_path, capsys):
    """The VAE encodes at its 512 px whatever the render size (dreamtext's own encode_images
    resizes), its backward is input gradients only (about the forward's work: frozen weights),
    and SD-2.1-base's figures are what its configs make: 1,117 GFLOP to encode, 1,609 for the
    U-Net's batch of 2."""
    out = tmp_path / "RESULTS.md"
    assert bench.main(["--sizes", "64", "96", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rows = [line.split(" | ") for line in printed.splitlines() if line.startswith("| 64 |")]
    rows += [line.split(" | ") for line in printed.splitlines() if line.startswith("| 96 |")]
    assert [r[1] for r in rows] == list(bench.PARTS) * 2
    gflop = [float(r[2]) for r in rows]
    ops = [int(r[3]) for r in rows]
    assert gflop[:3] == gflop[3:] and ops[:3] == ops[3:]  # the resize is all that differs
    forward, backward, unet = gflop[:3]
    assert forward == pytest.approx(1116.7, abs=0.1) and unet == pytest.approx(1608.5, abs=0.1)
    assert 0.95 < backward / forward < 1.1
    assert all(n > 100 for n in ops) and ops[2] > 5 * ops[0]  # the U-Net's many small ops
    assert "| 64 | VAE encode, forward | 1116.7 |" in out.read_text()
    kept = [r[4] for r in rows[:3]]
    assert kept[1:] == ["-", "0"]  # the backward keeps nothing more; the no-grad U-Net nothing
    assert 1200 < float(kept[0]) < 2000  # the encoder's activations at 512 px, in MiB


def test_kept_counts_each_saved_storage_once_and_no_weights(bench):
    """A linear layer saves its input (and its weight, left out); ``x * x`` saves ``x`` twice:
    one storage. 4 × 1024 fp32 inputs are 16 KiB each."""
    import torch

    layer = torch.nn.Linear(1024, 1024)
    weights = {p.untyped_storage()._cdata for p in layer.parameters()}
    x = torch.rand(4, 1024, requires_grad=True)
    with bench.Kept(weights) as kept:
        y = layer(x)
        y * y
    # saved: x (by the linear layer), y (twice, by the product); the weight is not counted
    assert sorted(kept.storages.values()) == [4 * 1024 * 4, 4 * 1024 * 4]
    assert kept.mib == pytest.approx(2 * 16 / 1024)


def test_views_and_allocations_are_not_counted_as_kernels(bench):
    import torch

    with bench.OpCount() as count:
        x = torch.ones(4, 4)
        (x.t() + 1).sum()
        x.view(16)
        torch.empty(3)
    assert dict(count.ops) == {"ones": 1, "add": 1, "sum": 1}
    assert count.total == 3


def test_attention_counts_as_the_one_kernel_cuda_launches_with_its_flops(bench):
    """On the meta device SDPA runs its math fallback (10 ops: 2 matrix products, a softmax,
    scalings and casts); CUDA runs one fused kernel. The FLOPs stay the fallback's, which are
    the attention's: 2 · 2 · L² · d a head."""
    import torch

    with torch.device("meta"):
        q = torch.randn(2, 5, 64, 8, dtype=torch.float16)
        with bench.Measured() as measured:
            torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert dict(measured.count.ops) == {"scaled_dot_product_attention": 1}
    assert measured.flops.get_total_flops() == 2 * 5 * (2 * 2 * 64 * 64 * 8)
    # Outside a measurement the function is torch's own again.
    assert torch.nn.functional.scaled_dot_product_attention is bench.SDPA


def test_channels_last_puts_the_models_and_the_unets_input_in_nhwc(bench, capsys):
    import torch

    models = bench.build_models(bench.ROOT / "benchmarks" / "sd21_configs", channels_last=True)
    assert models.channels_last
    conv = models.vae.encoder.conv_in.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    assert bench.main(["--sizes", "64", "--channels-last"]) == 0
    printed = capsys.readouterr().out
    assert "fp16, batch 1, channels_last)" in printed
    unet = next(line for line in printed.splitlines() if "U-Net, CFG batch of 2" in line)
    assert " | 1608.5 | " in unet  # the layout changes copies, never the work


def test_the_encoders_kept_bytes_are_split_by_block_and_add_up(bench, capsys):
    """``--blocks``: what the encode keeps, by module of SD-2.1-base's encoder at its 512 px.
    The modules' shares add up to the encode's own "kept MiB" and shrink block by block (each
    down block works at half the side with twice the channels: half the bytes a tensor); the
    first block's 832 MiB are over half of the 1,586, which is why vae_checkpointing recomputes
    it one ResNet block at a time."""
    assert bench.main(["--sizes", "64", "--blocks"]) == 0
    printed = capsys.readouterr().out
    encode = next(line for line in printed.splitlines() if "| VAE encode, forward |" in line)
    blocks = dict(
        (line.split(" | ")[0].strip("| "), float(line.split(" | ")[1].strip(" |")))
        for line in printed.split("by module:")[1].splitlines()
        if line.startswith("| ") and not line.startswith("| encoder module")
    )
    assert float(encode.split(" | ")[4]) == blocks["total"]
    assert sum(v for name, v in blocks.items() if name != "total") == pytest.approx(
        blocks["total"], abs=4
    )
    downs = [blocks[f"down_blocks.{i}"] for i in range(4)]
    assert downs[0] == 832 and downs[1] / downs[0] == pytest.approx(0.44, abs=0.02)
    assert downs == sorted(downs, reverse=True) and downs[0] > blocks["total"] / 2
