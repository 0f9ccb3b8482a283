"""Predict a GPU run's peak memory from a CPU run: the trainer at SD-2.1-base shapes, bytes counted.

    python benchmarks/memory_model.py                              # default 64 px and FitFusion
    python benchmarks/memory_model.py --presets fitfusion --phases albedo --steps 1 --size 512 \
        --no-preview
    python benchmarks/memory_model.py --out benchmarks/RESULTS.md  # append the table there
    python benchmarks/memory_model.py --descriptor --presets --steps 2  # `dreamtext image`'s
                                                   # descriptor training alone
    python benchmarks/memory_model.py --fitted sphere --phases shaded --no-preview
                                                   # a trained run's steps: the field fitted
                                                   # to a sphere, not the fresh fog

Without a GPU, ``torch.cuda.max_memory_allocated`` cannot be read, but the bytes behind it can be
counted: this runs ``dreamtext.trainer.train`` itself (model loading, steps, the final checkpoint
and preview; with ``--export`` the export that ends a user's run) on the CPU under
``torch.profiler`` with ``profile_memory=True``, and replays the profiler's allocation and free
events in time order to get the most bytes alive at once. The run is made to hold what a
``--fp16`` CUDA run holds:

- the SD-2.1-base-shaped model of ``benchmarks/sds_step.py`` (random weights; the cost does not
  depend on them) in bfloat16, which takes the same 2 bytes a value as float16 (float16 is refused
  on the CPU); U-Net and VAE channels-last, as on CUDA;
- the field's MLP under bfloat16 autocast, on whole chunks (on the CPU it otherwise runs in
  pieces of ``CPU_QUERY_PIECE`` / ``CPU_NO_GRAD_PIECE`` points);
- the text encoder: a CUDA run parks it on the CPU once the prompt is encoded; here everything is
  on the CPU, so its bytes are left out of the figures (``text encoder`` column).

What the GPU reserves above that: the same allocations and frees, from the first step on (the
resident tensors first), go through ``benchmarks/allocator_model.py``, a model of torch's CUDA
caching allocator, with its default fixed-size segments and with the expandable segments
``dreamtext`` asks for: the peak it reserves without a limit, and the least memory (in 64 MiB
steps) the run fits in, emptying its cache as the allocator does when it reaches the limit.
The CPU run's allocations stand for the GPU's: its kernels' temporaries may differ.

What the figures do not hold: cuDNN and cuBLAS workspaces, the CUDA context (~0.5 GB), and the
Triton hash grid's fusion (this runs the torch grid, whose per-level temporaries are counted:
the figures are an upper bound for the grid). ``shaded`` steps are all lambertian (the most a step
can cost: textureless costs the same normals); ``albedo`` steps never shade.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterable, Iterator
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks"), str(ROOT / "tests")]

from dreamtext.inputs import spin_briefly  # noqa: E402

# Before torch loads libgomp, which reads it once: the CLI's short spin count (README, Speed).
spin_briefly(os.environ)
import torch  # noqa: E402
from allocator_model import LAYOUTS, replay  # noqa: E402
from sds_step import (  # noqa: E402
    FITTED_SHAPES,
    PROMPT,
    FittedStart,
    fields_starting_from,
    fitted_state,
    publish,
    render_settings,
    table_of,
    write_sd21_random,
)
from torch.profiler import ProfilerActivity, profile  # noqa: E402

from dreamtext import factory, field, models, trainer  # noqa: E402
from dreamtext.config import resolve_config  # noqa: E402

HALF = torch.bfloat16  # the CPU's 2-byte stand-in for float16
MIB = 2**20


@contextlib.contextmanager
def as_on_cuda() -> Iterator[contextlib.ExitStack]:
    """Within the block, the CPU run holds what a ``--fp16`` CUDA run holds. The stack it gives
    takes further patches, undone with these on leaving."""
    with contextlib.ExitStack() as stack:
        for obj, name, value in (
            (factory, "resolve_dtype", lambda cfg, device: HALF),
            (factory, "mixed_precision", lambda cfg, device: HALF),
            (models, "check_precision", lambda dtype, device: None),
            (models, "use_channels_last", lambda setting, device, dtype: True),
            (field, "CPU_QUERY_PIECE", 1 << 62),
            (field, "CPU_NO_GRAD_PIECE", 1 << 62),
        ):
            stack.enter_context(mock.patch.object(obj, name, value))
        yield stack


def live_bytes(prof) -> tuple[list[int], list[int]]:
    """Times (ns) and bytes alive after each allocator event of the profiled region."""
    events = sorted(
        (event.start_ns(), event.nbytes())
        for event in prof.profiler.kineto_results.events()
        if event.name() == "[memory]"
    )
    times, alive, total = [], [], 0
    for when, nbytes in events:
        total += nbytes
        times.append(when)
        alive.append(total)
    return times, alive


def peak_between(times: list[int], alive: list[int], start: int, end: int) -> int:
    """The most bytes alive after any event in ``[start, end]`` (``times`` is sorted)."""
    inside = alive[bisect.bisect_left(times, start) : bisect.bisect_right(times, end)]
    return max(inside, default=0)


def alive_before(times: list[int], alive: list[int], when: int) -> int:
    """Bytes alive just before ``when``: after the last event earlier than it."""
    i = bisect.bisect_left(times, when)
    return alive[i - 1] if i else 0


def growth(prof, windows: list[tuple[int, int]]) -> tuple[int, int]:
    """The most bytes the steps (their ``(start, end)`` wall-clock ns in ``windows``) and the
    whole profiled run allocate above what was alive when the first step began: what the GPU
    would hold on top of its resident bytes. The profiler's clock and ``time.time_ns()`` are
    both the wall clock in ns."""
    times, alive = live_bytes(prof)
    steps_peak = max(peak_between(times, alive, s, e) for s, e in windows)
    at_start = alive_before(times, alive, windows[0][0])
    return steps_peak - at_start, max(alive) - at_start


def allocation_events(prof, since_ns: int) -> list[tuple[int, int]]:
    """The profiled allocations and frees from ``since_ns`` (wall clock) on, in time order, as
    ``(address, bytes)`` with negative bytes for a free: what :func:`allocator_model.replay`
    takes. At equal times frees come first (an address is freed before it is reused)."""
    found = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        fields = node.extra_fields
        if hasattr(fields, "alloc_size") and node.start_time_ns >= since_ns:
            found.append((node.start_time_ns, fields.alloc_size > 0, fields.ptr, fields.alloc_size))
    found.sort()
    return [(address, size) for _, _, address, size in found]


def smallest_limit(events: list[tuple[int, int]], layout: str, unlimited: dict) -> int:
    """The least memory, in steps of 64 MiB, under which ``events`` run through the allocator
    model without running out (``unlimited``: their replay without a limit)."""
    step = 64 * MIB
    lo = unlimited["allocated"] // step  # below what is in use at once: out of memory
    hi = -(-unlimited["reserved"] // step)  # what it took without a limit: enough
    while lo < hi:
        mid = (lo + hi) // 2
        if replay(events, layout, mid * step)["out_of_memory"]:
            lo = mid + 1
        else:
            hi = mid
    return hi * step


def caching_allocator_columns(resident: list[int], events: list[tuple[int, int]]) -> dict:
    """What the CUDA caching allocator would reserve (``benchmarks/allocator_model.py``) for the
    resident tensors (``resident``: their sizes, allocated first) and then ``events``: per
    layout, the peak reserved without a limit and the least memory the run fits in."""
    events = [(-1 - i, size) for i, size in enumerate(resident)] + events
    columns = {}
    for layout in LAYOUTS:
        unlimited = replay(events, layout)
        columns[f"reserved_{layout}"] = f"{unlimited['reserved'] / MIB:.0f}"
        columns[f"fits_{layout}"] = f"{smallest_limit(events, layout, unlimited) / MIB:.0f}"
    return columns


def memory_columns(
    prof, windows: list[tuple[int, int]], resident: list[int], preview: bool
) -> dict:
    """A row's memory figures in MiB from the profiled run: resident (``resident``: the sizes
    of the tensors on the GPU when the first step starts), what the steps (their ``windows``)
    and the whole run allocate above it, the predicted peaks (the run's only with its final
    ``preview``) and the caching allocator's columns; ``bytes`` has the first three in bytes."""
    grow_steps, grow_run = growth(prof, windows)
    resident_bytes = sum(resident)
    return {
        "resident": f"{resident_bytes / MIB:.0f}",
        "grow_steps": f"{grow_steps / MIB:.0f}",
        "step_peak": f"{(resident_bytes + grow_steps) / MIB:.0f}",
        "run_peak": f"{(resident_bytes + grow_run) / MIB:.0f}" if preview else "(no preview)",
        **caching_allocator_columns(resident, allocation_events(prof, windows[0][0])),
        "bytes": {"resident": resident_bytes, "grow_steps": grow_steps, "grow_run": grow_run},
    }


def tensor_sizes(tensors: Iterable) -> list[int]:
    """Bytes of each tensor among ``tensors`` (anything else is skipped)."""
    return [t.numel() * t.element_size() for t in tensors if isinstance(t, torch.Tensor)]


def nbytes(tensors: Iterable) -> int:
    return sum(tensor_sizes(tensors))


def module_tensors(module: torch.nn.Module) -> tuple:
    return (*module.parameters(), *module.buffers())


def tensor_bytes(module: torch.nn.Module) -> int:
    return nbytes(module_tensors(module))


def device_tensors(run) -> list[int]:
    """The sizes of the tensors a CUDA run holds on the GPU when its first step starts: U-Net,
    VAE, field, renderer (occupancy grid) and the prompt embeddings. Read from the objects,
    because weights read from safetensors files partly bypass the allocator the profiler
    watches."""
    models_ = run.guidance.models
    tensors = []
    for module in (models_.unet, models_.vae, run.field, run.renderer):
        tensors += module_tensors(module)
    prompts = run.guidance.prompts
    for value in vars(prompts).values() if prompts is not None else ():
        tensors += value.values() if isinstance(value, dict) else [value]
    return tensor_sizes(tensors)


def module_bytes(name: str) -> int:
    """Parameter bytes of the loaded models' ``name`` part (``unet``, ``vae``, ``text_encoder``)."""
    parts = (getattr(loaded, name, None) for loaded in models._LOADED.values())
    return sum(nbytes(part.parameters()) for part in parts if part is not None)


def model_row(
    model: str,
    preset: str,
    phase: str,
    size: int | None,
    steps: int,
    preview: bool = True,
    export: bool = False,
    guidance: dict | None = None,
    start: FittedStart | None = None,
    field_settings: dict | None = None,
) -> dict:
    """Run the trainer for ``steps`` steps under the profiler; the peaks in MiB. Without
    ``preview`` the final preview is skipped (it takes minutes on the CPU at 512 px); with
    ``export`` the run ends with its default export (mesh files and turntable), as a user's;
    ``guidance``: more settings of the guidance section (``--guidance``); ``start``: a shape's
    name and the fitted field (``sds_step.fitted_state``) the trainer's field starts from and
    is held at (``sds_step.fields_starting_from``), with the occupancy grid refreshed after every
    step, so that the steps after the first see a trained run's empty space (``--fitted``);
    ``field_settings``: settings of the field section over the preset's (the tests' smaller
    hash table)."""
    overrides = {
        "prompt": PROMPT,
        "iters": steps,
        "device": "cpu",
        "log_every": 1,
        "preview_every": 0,
        "checkpoint_every": 10**9,
        "export": export,
        "albedo_epochs": 10**6 if phase == "albedo" else 0,
        "shading_probs": [0.0, 0.0, 1.0],
        "guidance": {**(guidance or {}), "model": model},
    }
    if size is not None:
        overrides.update(h=size, w=size)
    if field_settings is not None:
        overrides["field"] = field_settings
    if start is not None:
        overrides["render"] = {"grid_update_every": 1}
    windows: list[tuple[int, int]] = []
    resident: list[int] = []
    step = trainer.train_step

    def timed_step(run):
        if not resident:
            resident.extend(device_tensors(run))
        began = time.time_ns()
        try:
            return step(run)
        finally:
            windows.append((began, time.time_ns()))

    models.clear_cache()
    try:
        with as_on_cuda() as patches, tempfile.TemporaryDirectory() as workspace:
            patches.enter_context(mock.patch.object(trainer, "train_step", timed_step))
            if not preview:
                patches.enter_context(
                    mock.patch.object(trainer, "save_preview", lambda r, p, **k: None)
                )
            overrides["workspace"] = workspace
            cfg = resolve_config(overrides, preset=None if preset == "default" else preset)
            started = time.perf_counter()
            with (
                fields_starting_from(start),
                profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof,
            ):
                trainer.train(cfg)
            seconds = time.perf_counter() - started
            records = [
                json.loads(line)
                for line in Path(workspace, "log.jsonl").read_text(encoding="utf-8").splitlines()
            ]
            text = module_bytes("text_encoder")
            weights = module_bytes("unet") + module_bytes("vae")
    finally:
        models.clear_cache()
    return {
        "preset": preset,
        "px": cfg.h,
        "phase": phase,
        "field": "fresh" if start is None else f"fitted {start[0]}",
        "steps": len(windows),
        "deferred": f"{sum(r.get('backprop') == 'deferred' for r in records)}/{len(records)}",
        "samples": f"{records[-1]['samples_per_ray']:.1f}",
        "weights": f"{weights / MIB:.0f}",
        **memory_columns(prof, windows, resident, preview),
        "export": "yes" if export else "no",
        "text": f"{text / MIB:.0f}",
        "seconds": f"{seconds:.0f}",
    }


def descriptor_row(model: str, steps: int, preview: bool = True) -> dict:
    """``dreamtext image``'s descriptor training (``train_descriptor``: the text encoder's
    placeholder vectors trained through the frozen U-Net, eq. 5.4) for ``steps`` steps under the
    profiler, ending with a preview (the pipeline sampling 2 images) unless not ``preview``; the
    peaks in MiB. Resident: U-Net, VAE and the trainer's own text encoder, which stays on the
    GPU while it trains."""
    from PIL import Image

    from dreamtext import descriptor
    from dreamtext.describe import sentence_path
    from dreamtext.guidance import GuidanceConfig

    windows: list[tuple[int, int]] = []
    resident: list[int] = []
    resolution: list[int] = []
    step = descriptor.DescriptorTrainer.train_step

    def timed_step(self, image):
        if not resident:
            for part in (self.models.unet, self.models.vae, self.text_encoder):
                resident.extend(tensor_sizes(module_tensors(part)))
            resolution.append(self.models.resolution)
        start = time.time_ns()
        try:
            return step(self, image)
        finally:
            windows.append((start, time.time_ns()))

    options = descriptor.DescriptorOptions(
        iters=steps, checkpoint_every=0, preview_every=steps if preview else 0, preview_steps=2
    )
    models.clear_cache()
    try:
        with as_on_cuda() as patches, tempfile.TemporaryDirectory() as workspace:
            patches.enter_context(mock.patch.object(models, "resolve_dtype", lambda c, d: HALF))
            patches.enter_context(
                mock.patch.object(descriptor.DescriptorTrainer, "train_step", timed_step)
            )
            record = sentence_path(workspace)
            record.parent.mkdir(parents=True)
            words = {"quantifier": "a", "words": ["red", "shiny"], "noun": "mug"}
            record.write_text(json.dumps(words), encoding="utf-8")
            image = Path(workspace, "mug.png")
            Image.new("RGB", (512, 512), (200, 40, 40)).save(image)
            started = time.perf_counter()
            with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
                descriptor.train_descriptor(
                    image, workspace, GuidanceConfig(model=model, fp16=True), options, "cpu"
                )
            seconds = time.perf_counter() - started
            weights = module_bytes("unet") + module_bytes("vae")
    finally:
        models.clear_cache()
    return {
        "preset": "descriptor (`dreamtext image`)",
        "px": resolution[0],
        "phase": "descriptor",
        "steps": len(windows),
        "deferred": "-",
        "samples": "-",
        "weights": f"{weights / MIB:.0f}",
        **memory_columns(prof, windows, resident, preview),
        "export": "no",
        "text": "(on the GPU: in resident)",
        "seconds": f"{seconds:.0f}",
    }


COLUMNS = [
    ("preset", "preset"),
    ("px", "render px"),
    ("phase", "phase"),
    ("field", "field at step 0"),
    ("steps", "steps"),
    ("deferred", "deferred"),
    ("samples", "samples/ray"),
    ("weights", "U-Net + VAE MiB"),
    ("resident", "resident MiB at step 1"),
    ("grow_steps", "steps allocate MiB"),
    ("step_peak", "predicted peak MiB, steps"),
    ("run_peak", "predicted peak MiB, run"),
    ("reserved_fixed", "reserved MiB, torch's default allocator"),
    ("reserved_expandable", "reserved MiB, expandable segments"),
    ("fits_fixed", "fits in MiB, default allocator"),
    ("fits_expandable", "fits in MiB, expandable segments"),
    ("export", "run exports"),
    ("text", "text encoder MiB (on the CPU)"),
    ("seconds", "CPU s"),
]


def table(rows: list[dict]) -> str:
    return table_of(rows, COLUMNS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=["default", "fitfusion"])
    parser.add_argument("--phases", nargs="+", default=["albedo", "shaded"])
    parser.add_argument("--size", type=int, help="render size (default: the preset's)")
    parser.add_argument("--steps", type=int, default=2, help="trainer steps per row [2]")
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/dreamtext-bench"), help="random model cache"
    )
    parser.add_argument(
        "--no-preview", action="store_true", help="skip the run's final preview (slow at 512 px)"
    )
    parser.add_argument(
        "--export",
        action="store_true",
        help="end each run with its export, as a user's does (on 2 CPU cores: ~50 min and ~24 GB "
        "of RSS for the profiler's events, at 64 px)",
    )
    parser.add_argument(
        "--descriptor",
        action="store_true",
        help="also `dreamtext image`'s descriptor training (--steps steps, then a preview)",
    )
    parser.add_argument(
        "--guidance",
        type=render_settings,
        help="more settings of the guidance section, a JSON object, e.g. "
        "'{\"vae_checkpointing\": true}'",
    )
    parser.add_argument(
        "--fitted",
        choices=FITTED_SHAPES,
        help="the trainer's field starts from the default field fitted to this shape and is "
        "held there (as sds_step.py --trainer --fitted), the grid refreshed after every step: "
        "a trained run's steps, not the fresh fog's [fresh]",
    )
    parser.add_argument("--out", type=Path, help="append the table to this markdown file")
    args = parser.parse_args(argv)
    model = str(write_sd21_random(args.cache / "sd21-random", torch.device("cpu")))
    start = None
    if args.fitted:
        head = field.FieldConfig().density_head  # the default field's, as every row's
        start = (args.fitted, fitted_state(args.fitted, head, args.cache, "cpu"))
    rows = []
    if args.descriptor:
        rows.append(descriptor_row(model, args.steps, not args.no_preview))
        print(table(rows[-1:]), flush=True)
    for preset in args.presets:
        for phase in args.phases:
            row = model_row(
                model,
                preset,
                phase,
                args.size,
                args.steps,
                not args.no_preview,
                args.export,
                args.guidance,
                start,
            )
            rows.append(row)
            print(table(rows[-1:]), flush=True)
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d")
    header = (
        f"Memory model ({when}, CPU {platform.machine()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads): `python benchmarks/memory_model.py "
        f"{' '.join(argv if argv is not None else sys.argv[1:])}`"
    )
    publish(f"\n{header}\n\n{table(rows)}\n", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
