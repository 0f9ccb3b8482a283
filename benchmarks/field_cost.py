"""What the field costs per sample in an albedo and in a shaded training render, by part.

    python benchmarks/field_cost.py [--points 131072] [--repeats 3] [--device cpu|cuda]
                                    [--field '{"normals": "analytic"}' ...] [--out FILE]
                                    [--mlp-precision fp32|fp16|bf16] [--compile]

A training render queries the field twice at every kept sample: once without a graph for the
image, and again with one in backward (``render.recompute_field``, the default: the replay).
Shaded renders take the normals at both. Per point, with the field's own calls, best of
``--repeats`` after a warm-up:

- ``σ, albedo``: ``field(x)`` without a graph, and forward + backward (a random linear loss);
- ``normals``: ``field.normals(x, σ)`` without a graph, and forward + backward with ``σ`` a leaf,
  as the replay takes them; with analytic normals (``joint_normals``) the shaded sample runs
  ``field.forward_with_normals(x)`` instead of both calls;
- ``grid``: the hash grid alone (``field.encoding``), both ways: its share of the above.

Summed the renderer's way: ``F_a`` = σ, albedo without a graph + with one; ``F_s`` = ``F_a`` +
normals without a graph + with one (joint: ``forward_with_normals`` both ways). ``F_s / F_a`` is
what a shaded step costs over an albedo one when nothing but the field costs anything. A step
also pays a rest ``r`` per sample that does not depend on the shading (the marcher and its
pruning pass, compositing, the guidance, Adam), so its ratio is ``(F_s + r) / (F_a + r)``, and
a shaded step at most 2× an albedo one needs ``r ≥ F_s − 2 F_a``: printed as "rest for 2×".
Each ``--field`` JSON (FieldConfig overrides) is one row; ``{}`` is the default field. With
``--compile`` each field has a second row with its MLPs ``torch.compile``d
(``NeRFField.compile_mlps``, as ``dreamtext text --compile`` on CUDA: it compiles and checks
them before the first timed call).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from dreamtext.inputs import spin_briefly

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402
from encoding_speed import best_of  # noqa: E402

from dreamtext.field import NeRFField, field_config_from_dict  # noqa: E402

MLP_PRECISIONS = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def per_point_costs(field: NeRFField, x: torch.Tensor, repeats: int) -> dict[str, float]:
    """Microseconds a point of each part (see the module docstring), on ``x``'s device."""
    device = x.device
    generator = torch.Generator(device="cpu").manual_seed(0)
    weights = torch.randn(x.shape[0], 7, generator=generator).to(device)
    with torch.no_grad():
        sigma = field(x)[0]
    joint = getattr(field, "joint_normals", False)

    def both_grad() -> None:
        s, albedo = field(x)
        (s * weights[:, 0] + (albedo * weights[:, 1:4]).sum(-1)).sum().backward()

    def normals_grad() -> None:
        centre = sigma.detach().requires_grad_(True)
        (field.normals(x, centre) * weights[:, 4:7]).sum().backward()

    def joint_grad() -> None:
        s, albedo, normals = field.forward_with_normals(x)
        loss = s * weights[:, 0] + (albedo * weights[:, 1:4]).sum(-1)
        (loss + (normals * weights[:, 4:7]).sum(-1)).sum().backward()

    def grid_grad() -> None:
        (field.encoding(x) * 1.0).sum().backward()

    def no_grad(fn):
        def run() -> None:
            with torch.no_grad():
                fn()

        return run

    parts = {
        "σ, albedo, no graph": no_grad(lambda: field(x)),
        "σ, albedo, fwd+bwd": both_grad,
        "normals, no graph": no_grad(lambda: field.normals(x, sigma)),
        "normals, fwd+bwd": normals_grad,
        "grid, no graph": no_grad(lambda: field.encoding(x)),
        "grid, fwd+bwd": grid_grad,
    }
    if joint:
        parts["σ, albedo, normals, no graph"] = no_grad(lambda: field.forward_with_normals(x))
        parts["σ, albedo, normals, fwd+bwd"] = joint_grad
    costs = {}
    for name, run in parts.items():
        seconds, _ = best_of(run, repeats, device)
        field.zero_grad(set_to_none=True)
        costs[name] = seconds / x.shape[0] * 1e6
    return costs


def summarise(costs: dict[str, float], joint: bool) -> dict[str, float]:
    """``F_a``, ``F_s`` (µs a sample), ``F_s / F_a`` and the rest ``r`` a step needs per sample
    for ``(F_s + r) / (F_a + r) ≤ 2``: ``max(F_s − 2 F_a, 0)``."""
    albedo = costs["σ, albedo, no graph"] + costs["σ, albedo, fwd+bwd"]
    if joint:
        shaded = costs["σ, albedo, normals, no graph"] + costs["σ, albedo, normals, fwd+bwd"]
    else:
        shaded = albedo + costs["normals, no graph"] + costs["normals, fwd+bwd"]
    return {
        "albedo": albedo,
        "shaded": shaded,
        "ratio": shaded / albedo,
        "rest_for_2x": max(shaded - 2.0 * albedo, 0.0),
    }


def section(rows: list[tuple[str, dict, dict]], args: argparse.Namespace, command: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    device = args.device if args.device == "cpu" else torch.cuda.get_device_name(0)
    head = (
        f"## Field cost per sample (issue 9) — {device} ({platform.machine()}, "
        f"{torch.get_num_threads()} threads) — {stamp}\n\n"
        f"`{command}` (torch {torch.__version__}), {args.points} points in [−0.6, 0.6]³, "
        f"MLP {args.mlp_precision}, best of {args.repeats}; µs a point (3 significant digits).\n\n"
        "| field | σ, albedo no graph | σ, albedo fwd+bwd | normals no graph | normals fwd+bwd "
        "| grid no graph | grid fwd+bwd | F_a | F_s | F_s / F_a | rest for 2× |\n"
        "|---|---|---|---|---|---|---|---|---|---|---|\n"
    )
    lines = []
    for label, costs, summary in rows:
        if "σ, albedo, normals, fwd+bwd" in costs:
            normals = (
                f"(joint {costs['σ, albedo, normals, no graph']:.3g}) | "
                f"(joint {costs['σ, albedo, normals, fwd+bwd']:.3g})"
            )
        else:
            normals = f"{costs['normals, no graph']:.3g} | {costs['normals, fwd+bwd']:.3g}"
        lines.append(
            f"| `{label}` | {costs['σ, albedo, no graph']:.3g} | "
            f"{costs['σ, albedo, fwd+bwd']:.3g} | {normals} | {costs['grid, no graph']:.3g} | "
            f"{costs['grid, fwd+bwd']:.3g} | {summary['albedo']:.3g} | {summary['shaded']:.3g} | "
            f"{summary['ratio']:.3g} | {summary['rest_for_2x']:.3g} |"
        )
    return head + "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--points", type=int, default=1 << 17, help="points per call [131072]")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="cpu or cuda [cpu]")
    parser.add_argument(
        "--field",
        nargs="+",
        type=json.loads,
        default=[{}],
        help="FieldConfig overrides as JSON, one row each [{} = the default field]",
    )
    parser.add_argument(
        "--mlp-precision",
        choices=list(MLP_PRECISIONS),
        default="fp32",
        help="the MLPs under autocast, as --fp16 / --bf16 run them on CUDA [fp32]",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="a second row per field with its MLPs torch.compile'd (inductor)",
    )
    parser.add_argument("--out", type=Path, default=None, help="append the section to this file")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: no CUDA device here")
    generator = torch.Generator(device="cpu").manual_seed(0)
    x = ((torch.rand(args.points, 3, generator=generator) * 2 - 1) * 0.6).to(device)
    rows = []
    for overrides, compiled in (
        (o, c) for o in args.field for c in ((False, True) if args.compile else (False,))
    ):
        torch.manual_seed(0)
        field = NeRFField(field_config_from_dict(overrides), device=device)
        field.mlp_dtype = MLP_PRECISIONS[args.mlp_precision]
        if compiled:
            field.compile_mlps()
        costs = per_point_costs(field, x, args.repeats)
        summary = summarise(costs, getattr(field, "joint_normals", False))
        label = json.dumps(overrides) + (" compiled" if compiled else "")
        rows.append((label, costs, summary))
        print(
            f"{label}: F_a {summary['albedo']:.3g} µs, F_s {summary['shaded']:.3g} µs, "
            f"ratio {summary['ratio']:.3g}, rest for 2x {summary['rest_for_2x']:.3g} µs a sample"
        )
    words = sys.argv[1:] if argv is None else argv
    text = section(rows, args, " ".join(["python", "benchmarks/field_cost.py", *words]))
    print(text)
    if args.out is not None:
        with args.out.open("a", encoding="utf-8") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
