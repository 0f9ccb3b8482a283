"""Wall time of one `dreamtext batch` over N prompts against N separate `dreamtext text` calls.

    python benchmarks/batch_vs_separate.py                     # 5 prompts, tiny random SD, 20 steps
    python benchmarks/batch_vs_separate.py --sd21-load         # also: loading SD-2.1-base shapes
    python benchmarks/batch_vs_separate.py --out benchmarks/RESULTS.md

Every run is a real process, as a user starts it, with the tiny random pipeline of the tests
(``tests/tiny_models.py``) and the tests' tiny field (16 px renders), no export. Where the
difference goes: each separate call starts Python and imports torch, diffusers and dreamtext
(measured alone as "process start + imports"), and loads Stable Diffusion (the loader logs each
load with its time; a batch logs one). ``--sd21-load`` times what loading costs for a real-size
model: SD-2.1-base shapes with random weights (``benchmarks/sds_step.py``'s ``sd21-random``,
written once to ``--cache``) loaded by ``dreamtext.models`` in a fresh process, memory-lean
(``low_cpu_mem_usage``, the default) and not, with the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

PROMPTS = ["a red cube", "a blue sphere", "a green castle", "a red chair", "a blue dog", "a cat"]
LOADED = re.compile(r"loaded Stable Diffusion .* in ([0-9.]+) s")


def environment() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(ROOT)}
    env.setdefault("OMP_NUM_THREADS", "1")
    return {k: v for k, v in env.items() if not k.startswith("SLURM_")}


def timed(command: list[str]) -> tuple[float, str]:
    """Wall seconds of a process, and its stderr; a failing process stops the benchmark."""
    start = time.perf_counter()
    done = subprocess.run(command, env=environment(), capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return seconds, done.stderr


def load_seconds(stderr: str) -> list[float]:
    return [float(s) for s in LOADED.findall(stderr)]


def import_seconds(repeats: int) -> float:
    """Median wall time of a process that only imports what `dreamtext text` imports."""
    code = (
        "import dreamtext.cli, dreamtext.trainer, dreamtext.batch\n"
        "from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel\n"
        "from transformers import CLIPTextModel, CLIPTokenizer"
    )
    return statistics.median(timed([sys.executable, "-c", code])[0] for _ in range(repeats))


def compare(work: Path, model: str, prompts: list[str], iters: int) -> dict:
    import yaml
    from tiny_models import TINY_TRAIN

    from dreamtext.config import slugify

    config = work / "tiny.yaml"
    config.write_text(yaml.safe_dump({**TINY_TRAIN, "preview_every": 0, "log_every": 10}))
    flags = ["--model", model, "--config", str(config), "--iters", str(iters), "--guidance", "10"]
    cli = [sys.executable, "-m", "dreamtext.cli"]

    separate, separate_loads = [], []
    for prompt in prompts:
        seconds, err = timed(
            [*cli, "text", prompt, *flags, "--workspace", str(work / "sep" / slugify(prompt))]
        )
        separate.append(seconds)
        separate_loads += load_seconds(err)

    listing = work / "prompts.txt"
    listing.write_text("".join(p + "\n" for p in prompts))
    batch_s, err = timed([*cli, "batch", str(listing), *flags, "--workspace", str(work / "batch")])
    records = [json.loads(line) for line in (work / "batch" / "batch.jsonl").open()]
    assert [r["status"] for r in records] == ["finished"] * len(prompts), records
    return {
        "separate_s": sum(separate),
        "separate_each_s": separate,
        "separate_loads_s": separate_loads,
        "batch_s": batch_s,
        "batch_loads_s": load_seconds(err),
        "batch_prompt_s": [r["seconds"] for r in records],
    }


def measure_load(folder: str, lean: bool) -> dict:
    """In this process: load ``folder`` through dreamtext.models; seconds and peak RSS (MiB)."""
    import resource

    import torch

    import dreamtext.models as models

    if not lean:
        real = models._from_pretrained

        def eager(cls, path, subfolder, **kwargs):
            if "low_cpu_mem_usage" in kwargs:
                kwargs["low_cpu_mem_usage"] = False
            return real(cls, path, subfolder, **kwargs)

        models._from_pretrained = eager
    loaded = models.load_stable_diffusion(folder, "cpu", torch.float32)
    seconds = loaded.load_seconds  # reading the weights; the imports come first
    parameters = sum(
        p.numel() for m in (loaded.unet, loaded.vae, loaded.text_encoder) for p in m.parameters()
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    from dreamtext.trainer import ru_maxrss_unit  # after the reading: its imports take memory

    peak = peak * ru_maxrss_unit() / 2**20
    return {"seconds": seconds, "peak_rss_mib": peak, "parameters": parameters}


def sd21_load(cache: Path, repeats: int) -> list[dict]:
    import torch
    from sds_step import write_sd21_random

    folder = str(write_sd21_random(cache / "sd21-random", torch.device("cpu")))
    rows = []
    for lean in (True, False):
        runs = []
        for _ in range(repeats):
            code = (
                "import json, sys; sys.path[:0] = [sys.argv[1]]; "
                "from batch_vs_separate import measure_load; "
                "print(json.dumps(measure_load(sys.argv[2], sys.argv[3] == '1')))"
            )
            command = [sys.executable, "-c", code, str(ROOT / "benchmarks"), folder, str(int(lean))]
            done = subprocess.run(command, env=environment(), capture_output=True, text=True)
            if done.returncode != 0:
                sys.exit(f"loading failed:\n{done.stderr[-3000:]}")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        rows.append(
            {
                "lean": lean,
                "seconds": statistics.median(r["seconds"] for r in runs),
                "all_seconds": [r["seconds"] for r in runs],
                "peak_rss_mib": max(r["peak_rss_mib"] for r in runs),
                "parameters": runs[0]["parameters"],
            }
        )
    return rows


def load_row(label: str, row: dict) -> str:
    each = ", ".join(f"{s:.1f}" for s in row["all_seconds"])
    return f"| {label} | {row['seconds']:.1f} ({each}) | {row['peak_rss_mib']:.0f} |"


def report(args, result: dict, imports_s: float, sd21: list[dict] | None) -> str:
    import torch

    n = args.prompts
    saved = result["separate_s"] - result["batch_s"]
    extra_loads = sum(result["separate_loads_s"]) - sum(result["batch_loads_s"])
    extra_starts = (n - 1) * imports_s
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    command = "python benchmarks/batch_vs_separate.py " + " ".join(sys.argv[1:])
    cpu = f"CPU ({platform.processor() or platform.machine()}, {os.cpu_count()} cores)"
    lines = [
        f"\n## Batch vs separate calls — {cpu} — {stamp}\n",
        f"`{command.strip()}` (torch {torch.__version__}, OMP_NUM_THREADS="
        f"{environment()['OMP_NUM_THREADS']}): {n} prompts, tiny random SD, the tests' tiny field "
        f"(16 px renders), {args.iters} steps each, no export; every run a fresh process.\n",
        "| | wall s | Stable Diffusion loads | load s (sum) |",
        "|---|---|---|---|",
        f"| {n} × `dreamtext text` | {result['separate_s']:.1f} "
        f"({' + '.join(f'{s:.1f}' for s in result['separate_each_s'])}) | "
        f"{len(result['separate_loads_s'])} | {sum(result['separate_loads_s']):.2f} |",
        f"| `dreamtext batch` | {result['batch_s']:.1f} (prompts "
        f"{' + '.join(f'{s:.1f}' for s in result['batch_prompt_s'])}) | "
        f"{len(result['batch_loads_s'])} | {sum(result['batch_loads_s']):.2f} |",
        "",
        f"The batch saves {saved:.1f} s ({saved / result['separate_s']:.0%}). Reading the tiny "
        f"model's weights in {n - 1} more processes accounts for {extra_loads:.2f} s of it (the "
        f"loader's own timing, imports excluded); starting {n - 1} more processes (Python and the "
        f"imports of torch, diffusers, transformers and dreamtext: {imports_s:.1f} s each, median "
        f"of {args.repeats} processes that only import) for about {extra_starts:.1f} s; the rest, "
        f"{saved - extra_loads - extra_starts:.1f} s, is other per-process set-up and noise.",
    ]
    if sd21:
        lean, eager = sd21
        lines += [
            "",
            f"Loading SD-2.1-base shapes ({lean['parameters'] / 1e9:.2f} B parameters, random "
            "weights saved in fp16, loaded in fp32 on the CPU, page cache warm) in a fresh "
            f"process, median of {args.repeats}:",
            "",
            "| loading | seconds | peak RSS MiB |",
            "|---|---|---|",
            load_row("`low_cpu_mem_usage=True` (dreamtext.models, with accelerate)", lean),
            load_row("`low_cpu_mem_usage=False` (U-Net and VAE built, then filled)", eager),
            "",
            f"So each prompt after the first in a batch of real-size runs saves about "
            f"{lean['seconds']:.0f} s of loading on this CPU, besides the process start.",
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=5, help="number of prompts [5]")
    parser.add_argument("--iters", type=int, default=20, help="steps per prompt [20]")
    parser.add_argument("--repeats", type=int, default=3, help="import / load timings [3]")
    parser.add_argument("--sd21-load", action="store_true", help="also time an SD-2.1-sized load")
    parser.add_argument(
        "--cache", type=Path, default=Path("/tmp/dreamtext-bench"), help="[/tmp/dreamtext-bench]"
    )
    parser.add_argument("--out", type=Path, help="append the report to this markdown file")
    args = parser.parse_args(argv)
    if not 1 <= args.prompts <= len(PROMPTS):
        parser.error(f"--prompts must be 1..{len(PROMPTS)}")

    from tiny_models import write_tiny_sd

    model = args.cache / "tiny"
    if not (model / "model_index.json").is_file():
        write_tiny_sd(model)
    work = args.cache / "batch_vs_separate"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    imports_s = import_seconds(args.repeats)
    result = compare(work, str(model), PROMPTS[: args.prompts], args.iters)
    sd21 = sd21_load(args.cache, args.repeats) if args.sd21_load else None
    text = report(args, result, imports_s, sd21)
    print(text)
    if args.out:
        with args.out.open("a", encoding="utf-8") as f:
            f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
