"""Where a whole `dreamtext` command spends its CPU, by phase: cProfile with a CPU clock.

    python benchmarks/run_phases.py -- text "a colorful cube" --model builtin:shapes \\
        --workspace /tmp/cube                     # the README's first run
    python benchmarks/run_phases.py --save run.prof -- text "a red cube" \\
        --model builtin:shapes --iters 50 --no-export --workspace /tmp/red

The command after ``--`` runs in this process (``dreamtext.cli.main``) under cProfile timed
by ``time.process_time``: the CPU time of every thread of the process, user and system, which a
shared machine's load inflates far less than wall time (a profile in wall time counts the time a
busy machine gave to others). Printed: the command's CPU seconds and each phase's share, by the
cumulative time of the functions that make it (start-up and imports, building the guidance and
the prior's images, the training steps split into render, guidance, backward and optimiser, the
occupancy refreshes, previews, checkpoints, and the export's stages). A phase's time includes the
profiler's own overhead per Python call, so compare shares and runs of the same script.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import time
from pathlib import Path

# (label, module file, function): the phases, indented as they nest.
PHASES: tuple[tuple[str, str, str], ...] = (
    ("start-up: torch (model libraries load with their model)", "cli.py", "_libraries_started"),
    ("training (trainer.train)", "trainer.py", "train"),
    ("  guidance and the prior's images", "guidance.py", "make_guidance"),
    ("  training steps", "trainer.py", "train_step"),
    ("    render", "renderer.py", "render_train"),
    ("    guidance (SDS loss)", "guidance.py", "sds_loss"),
    ("    backward", "renderer.py", "backward"),
    ("    optimiser", "trainer.py", "optimizer_step"),
    ("  occupancy refreshes", "trainer.py", "refresh_occupancy"),
    ("  previews", "trainer.py", "save_preview"),
    ("  checkpoints", "trainer.py", "save_run_checkpoint"),
    ("  checkpoints (new)", "trainer.py", "save_new_checkpoint"),
    ("  export", "trainer.py", "export_trained"),
    ("    marching cubes and the solid", "mesh.py", "extract_mesh"),
    ("    decimation", "mesh.py", "decimate"),
    ("    UV atlas (xatlas)", "mesh.py", "unwrap_uv"),
    ("    texture bake", "mesh.py", "bake_texture"),
    ("    GLB", "export.py", "_glb_bytes"),
    ("    OBJ", "export.py", "_obj_files"),
    ("    PLY colours", "mesh.py", "query_surface_albedo"),
    ("    turntable renders", "export.py", "render_turntable"),
    ("    GIF", "export.py", "_gif_bytes"),
    ("    writing files (MP4 included)", "export.py", "write_all_atomically"),
)


def profile_command(argv: list[str]) -> tuple[pstats.Stats, int]:
    """Run ``dreamtext ARGV`` here (``dreamtext.cli.main``, imported inside the profile, as the
    console script imports it) under a CPU-clock cProfile; its stats and exit status."""
    profile = cProfile.Profile(time.process_time)
    profile.enable()
    try:
        from dreamtext.cli import main

        status = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        status = exit_.code if isinstance(exit_.code, int) else 1
    finally:
        profile.disable()
    return pstats.Stats(profile), status


def phase_seconds(stats: pstats.Stats) -> tuple[float, list[tuple[str, float]]]:
    """The profile's total CPU seconds and each of :data:`PHASES`' (its functions' cumulative
    time; 0 for a phase the command did not run)."""
    entries = stats.stats  # {(file, line, function): (calls, primitive, tottime, cumtime, ...)}
    total = max((value[3] for value in entries.values()), default=0.0)
    rows = []
    for label, module, function in PHASES:
        seconds = sum(
            value[3]
            for (file, _, name), value in entries.items()
            if name == function and Path(file).name == module and "dreamtext" in Path(file).parts
        )
        rows.append((label, seconds))
    return total, rows


def report(command: list[str], total: float, rows: list[tuple[str, float]]) -> str:
    """The phases as a markdown table (phases that took no time left out)."""
    lines = [
        f"## CPU by phase — dreamtext {' '.join(command)}",
        "",
        "| phase | CPU s | share |",
        "|---|---|---|",
        f"| whole command | {total:.2f} | 100% |",
    ]
    for label, seconds in rows:
        if seconds > 0:
            name = label.strip()
            indent = "&nbsp;" * 2 * (len(label) - len(label.lstrip()))
            share = 100 * seconds / total if total else 0.0
            lines.append(f"| {indent}{name} | {seconds:.2f} | {share:.1f}% |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--save", type=Path, help="also write the profile here (pstats)")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- and a dreamtext command")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give a dreamtext command after --")
    stats, status = profile_command(command)
    if args.save is not None:
        stats.dump_stats(args.save)
    total, rows = phase_seconds(stats)
    print(report(command, total, rows))
    return status


if __name__ == "__main__":
    sys.exit(main())
