"""A user's mistake is refused before torch and diffusers are imported (seconds and hundreds of
MB; tens of seconds on a cluster's network file system), with the line the command itself would
have printed after them, and nothing before it that the command would not have printed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dreamtext.inputs import no_cuda_here

PRESETS = "builtin-shapes, fitfusion, stable-dreamfusion"
RESUMED = (
    "dreamtext: resumed/config.json is of a run whose resumes changed lr at step 5: this run "
    "trains every step with its last settings, so it is not that run again\n"
)
RECORDED_PRESETS = (
    "'presets' in presets.yaml is what a run's config.json records it was built on; name a "
    "preset with --preset NAME"
)


def bad_shard(text: str) -> str:
    """A bad ``--shard``'s line, worded as every flag's refusal: the value and ``--help``."""
    return (
        "dreamtext batch: argument --shard: must be K/N with 0 ≤ K < N (e.g. 0/4 for the first "
        f"of four shares), got '{text}' (see dreamtext batch --help)"
    )


def run_without_torch(
    folder: Path, argv: list[str], environ: dict[str, str] | None = None
) -> subprocess.CompletedProcess:
    """``dreamtext ARGV`` in a fresh interpreter in ``folder`` (with ``environ`` set), which
    prints on stdout the model libraries it imported (a refusal of argparse's too)."""
    code = (
        "import sys; from dreamtext.cli import main\n"
        "try:\n    rc = main(sys.argv[1:])\nexcept SystemExit as stop:\n    rc = stop.code\n"
        "print(sorted({'torch', 'diffusers'} & set(sys.modules))); sys.exit(rc)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    env.pop("SLURM_ARRAY_TASK_ID", None)
    env.update(environ or {})
    return subprocess.run(
        [sys.executable, "-c", code, *argv],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def refused_without_torch(
    folder: Path, argv: list[str], environ: dict[str, str] | None = None
) -> str:
    """The stderr of ``dreamtext ARGV`` run by :func:`run_without_torch`, once it is checked
    that the command exited 2 without importing torch or diffusers."""
    done = run_without_torch(folder, argv, environ)
    assert (done.returncode, done.stdout) == (2, "[]\n"), done.stderr
    return done.stderr


@pytest.fixture
def mistakes_folder(tmp_path):
    """A folder with a prompts file, an empty folder, a run's config.json (of a run resumed with
    another lr), a YAML that names presets and one with a stage section."""
    (tmp_path / "prompts.txt").write_text("a cat\na dog\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "resumed").mkdir()
    record = {
        "prompt": "a cube",
        "workspace": "resumed",
        "presets": ["builtin-shapes"],
        "resumes": [{"step": 5, "changed": {"lr": [0.01, 0.02], "iters": [5, 10]}}],
    }
    (tmp_path / "resumed" / "config.json").write_text(json.dumps(record))
    (tmp_path / "presets.yaml").write_text("presets: [fitfusion]\n")
    (tmp_path / "lr.yaml").write_text("lr: 0.01\n")
    (tmp_path / "stage.yaml").write_text("image_to_3d:\n  describe: {max_words: 2}\n")
    (tmp_path / "badstage.yaml").write_text("image_to_3d:\n  sentence: {}\n")
    return tmp_path


MORE_EARLY_MISTAKES = [
    (
        ["text", "x", "--resume", "--workspace", "empty"],
        "dreamtext: error: nothing to resume in empty: no config.json; drop --resume to start a "
        "new run\n",
    ),
    (
        ["text", "x", "--resume", "--workspace", "resumed", "--preset", "nope"],
        f"dreamtext: error: unknown preset 'nope'; available presets: {PRESETS}\n",
    ),
    (
        ["batch", "prompts.txt", "--preset", "nope"],
        f"dreamtext: error: unknown preset 'nope'; available presets: {PRESETS}\n",
    ),
    # A run's config.json, then a file that is not there: the run's line comes first, as the
    # command prints it when it reads the files in turn.
    (
        ["text", "x", "--config", "resumed/config.json", "--config", "nope.yaml"],
        RESUMED + "dreamtext: error: config file 'nope.yaml' does not exist; check the --config "
        "path\n",
    ),
    (
        ["text", "x", "--config", "lr.yaml", "--config", "presets.yaml"],
        f"dreamtext: error: {RECORDED_PRESETS}\n",
    ),
    (
        ["batch", "prompts.txt", "--config", "resumed/config.json", "--config", "presets.yaml"],
        RESUMED + f"dreamtext: error: {RECORDED_PRESETS}\n",
    ),
    (
        ["batch", "prompts.txt", "--config", "stage.yaml", "--config", "nope.yaml"],
        "dreamtext: error: config file 'nope.yaml' does not exist; check the --config path\n",
    ),
    (
        ["batch", "prompts.txt", "--config", "badstage.yaml"],
        "dreamtext: error: unknown config field 'image_to_3d.sentence' in badstage.yaml; the "
        "section 'image_to_3d' has: image, describe, descriptor, word_lists (a run's config.json "
        "lists every field with its value)\n",
    ),
    # This worker's share, which run_batch resolves after reading the list and before the
    # preset: a bad --shard is its line even with a bad preset after it.
    (
        ["batch", "prompts.txt", "--shard", "3/2", "--preset", "nope"],
        f"{bad_shard('3/2')}\n",
    ),
    (["batch", "prompts.txt", "--shard", "x/y"], f"{bad_shard('x/y')}\n"),
    (["batch", "missing.txt", "--shard", "1"], f"{bad_shard('1')}\n"),
    (
        ["batch", "prompts.txt", "--shard", "1/2", "--preset", "nope"],
        f"dreamtext: error: unknown preset 'nope'; available presets: {PRESETS}\n",
    ),
]


@pytest.mark.parametrize(
    ("argv", "stderr"),
    MORE_EARLY_MISTAKES,
    ids=[" ".join(argv) for argv, _ in MORE_EARLY_MISTAKES],
)
def test_a_mistake_in_a_resume_preset_or_config_file_is_refused_before_torch_is_imported(
    mistakes_folder, argv, stderr
):
    err = refused_without_torch(mistakes_folder, argv)
    assert err == stderr
    assert not (mistakes_folder / "workspace").exists()


def test_batch_sbatch_script_prints_the_job_script_with_no_prompts_file_and_no_torch(tmp_path):
    """`dreamtext batch --sbatch-script > slurm_array.sbatch` (README, "A SLURM cluster") needs no
    PROMPTS_FILE, as --version needs no command: the script on stdout, as the package holds it,
    and no model library loaded, inside a SLURM array task too."""
    from dreamtext.inputs import sbatch_script

    done = run_without_torch(tmp_path, ["batch", "--sbatch-script"], {"SLURM_ARRAY_TASK_ID": "5"})
    assert (done.returncode, done.stderr) == (0, "")
    # The script, then what run_without_torch prints: the model libraries imported, none.
    assert done.stdout == sbatch_script().decode("utf-8") + "[]\n"
    assert list(tmp_path.iterdir()) == []


def test_a_slurm_array_task_that_is_not_a_range_is_refused_before_torch_is_imported(
    mistakes_folder,
):
    array = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_COUNT": "3"}
    err = refused_without_torch(mistakes_folder, ["batch", "prompts.txt"], array)
    assert err == (
        "dreamtext: error: SLURM array task 5 is not one of 3 evenly spaced tasks from 1; submit "
        "the array as a range (--array=0-7) or pass --shard K/N\n"
    )


@pytest.mark.skipif(not no_cuda_here(), reason="this machine may have a CUDA GPU")
@pytest.mark.parametrize("device", ["cuda", "cuda:1"])
def test_describe_on_a_gpu_this_machine_cannot_have_is_refused_before_torch_is_imported(
    tmp_path, device
):
    line = f"--device {device} was asked for but no CUDA GPU is visible; use --device cpu"
    err = refused_without_torch(tmp_path, ["describe", "mug.png", "--device", device])
    assert err == f"dreamtext: error: {line}\n"


def fake_machine(root: Path, vendors=("0x8086",), files=()) -> Path:
    """A file system root with the PCI devices of ``vendors`` and the ``files``."""
    for number, vendor in enumerate(vendors):
        device = root / "sys" / "bus" / "pci" / "devices" / f"0000:00:{number:02x}.0"
        device.mkdir(parents=True)
        (device / "vendor").write_text(f"{vendor}\n")
    (root / "dev").mkdir(exist_ok=True)
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).mkdir()
    return root


def test_a_linux_machine_without_gpu_hardware_or_driver_has_no_cuda(tmp_path):
    root = fake_machine(tmp_path, vendors=("0x8086", "0x1af4"))
    assert no_cuda_here(root, {"PATH": ""}, "linux")


@pytest.mark.parametrize(
    ("vendors", "files"),
    [
        (("0x8086", "0x10de"), ()),  # an NVIDIA card whose driver CUDA loads on first use
        (("0x1002",), ()),  # AMD: torch's ROCm build calls it cuda
        (("0x8086",), ("proc/driver/nvidia",)),
        (("0x8086",), ("dev/nvidia0",)),
        (("0x8086",), ("dev/nvidiactl",)),
        (("0x8086",), ("dev/kfd",)),
        (("0x8086",), ("dev/nvhost-ctrl-gpu",)),  # a Jetson's integrated GPU
        (("0x8086",), ("dev/dxg",)),  # WSL's GPU
        ((), ()),  # no PCI bus to read: not known
    ],
)
def test_any_sign_of_a_gpu_leaves_the_answer_to_torch(tmp_path, vendors, files):
    root = fake_machine(tmp_path, vendors=vendors, files=files)
    assert not no_cuda_here(root, {"PATH": ""}, "linux")


def test_nvidia_smi_on_the_path_or_another_system_leaves_the_answer_to_torch(tmp_path):
    root = fake_machine(tmp_path / "root")
    tools = tmp_path / "bin"
    tools.mkdir()
    (tools / "nvidia-smi").write_text("#!/bin/sh\n")
    (tools / "nvidia-smi").chmod(0o755)
    assert not no_cuda_here(root, {"PATH": str(tools)}, "linux")
    assert not no_cuda_here(root, {"PATH": ""}, "win32")
    assert not no_cuda_here(root, {"PATH": "", "WSL_DISTRO_NAME": "Ubuntu"}, "linux")


@pytest.mark.parametrize(
    ("lines", "plain"),
    [
        (["a cat", "", "# a comment", "a dog"], True),
        (["a cat", "a  cat "], False),  # read_prompts says the second repeats the first
        (["Cafe\u0301", "Café"], False),  # the same prompt, NFC
        (["a red cube", "A Red Cube"], False),  # the same prompt up to case
        (["a cat", "Image: mug.png"], False),  # an image, which read_prompts opens
        (["# only a comment", ""], False),  # no prompts: read_prompts' own line
    ],
)
def test_a_prompts_list_is_plain_when_read_prompts_takes_it_without_a_word(lines, plain):
    from dreamtext.inputs import plain_prompt_lines

    assert plain_prompt_lines(lines) is plain


def test_a_prompt_line_holding_a_flag_is_refused_before_torch_is_imported(mistakes_folder):
    (mistakes_folder / "flags.txt").write_text(
        "# tried with --iters 2\na cat\na red cube --iters 5\n"
    )
    err = refused_without_torch(
        mistakes_folder, ["batch", "flags.txt", "--model", "builtin:shapes"]
    )
    assert err == (
        "dreamtext: error: flags.txt:3: '--iters' is a command-line flag, not words of a prompt: "
        "a prompts file holds prompts only, one per line; put flags on the dreamtext batch "
        "command line (or in a --config file)\n"
    )
    assert not (mistakes_folder / "workspace").exists()


@pytest.mark.parametrize("line", ["a cube --seed=3", "--no-export a red cube", "a cone --fp16"])
def test_every_flag_of_batch_in_a_prompt_line_is_refused(tmp_path, line):
    from dreamtext.errors import DreamtextError
    from dreamtext.inputs import read_prompt_lines

    path = tmp_path / "prompts.txt"
    path.write_text(line + "\n")
    with pytest.raises(DreamtextError, match="is a command-line flag"):
        read_prompt_lines(path)


@pytest.mark.parametrize(
    "line",
    [
        "a T-shirt",
        "a cat -- on a mat",
        "a cat--dog",
        "# a comment --iters 5",
        "-5 degrees",
        "a --weird-- style",  # starts like a flag, but batch has no --weird--
        "a --fast car",
    ],
)
def test_dashes_that_are_no_flag_leave_a_prompt_line_as_it_is(tmp_path, line):
    from dreamtext.inputs import read_prompt_lines

    path = tmp_path / "prompts.txt"
    path.write_text(line + "\n")
    assert read_prompt_lines(path) == [line, ""]


def test_a_repeated_line_is_said_before_the_presets_refusal_as_it_was(
    tmp_path, monkeypatch, capsys
):
    """The early check leaves a list that read_prompts has something to say of to the command,
    which says it before the preset's line."""
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    Path("prompts.txt").write_text("a cat\na  cat\n")
    assert main(["batch", "prompts.txt", "--preset", "nope"]) == 2
    assert capsys.readouterr().err == (
        "batch: line 2 repeats line 1; it runs once\n"
        f"dreamtext: error: unknown preset 'nope'; available presets: {PRESETS}\n"
    )


def unusable_images(folder: Path) -> None:
    """Files a user can pass as an image that load_image refuses: text, a PNG cut short, a fully
    transparent PNG, a GIF."""
    import io

    from PIL import Image

    (folder / "notes.png").write_text("not an image\n")
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 30, 30)).save(buffer, "PNG")
    (folder / "cut.png").write_bytes(buffer.getvalue()[:60])
    Image.new("RGBA", (32, 32), (0, 0, 0, 0)).save(folder / "blank.png")
    Image.new("RGB", (32, 32), (200, 30, 30)).save(folder / "anim.gif")


@pytest.mark.parametrize("command", ["describe", "image"])
@pytest.mark.parametrize("name", ["notes.png", "cut.png", "blank.png", "anim.gif"])
def test_an_image_that_cannot_be_used_is_refused_before_torch_is_imported(
    tmp_path, monkeypatch, command, name
):
    """Its line is load_image's, which the command itself stops with (after the torch import
    it was: 21-37 s and ~500 MB before the line)."""
    from dreamtext.errors import DreamtextError
    from dreamtext.images import load_image

    unusable_images(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(DreamtextError) as refused:
        load_image(Path(name))  # relative, as typed
    err = refused_without_torch(tmp_path, [command, name])
    assert err == f"dreamtext: error: {refused.value}\n"
    assert not (tmp_path / "workspace").exists()


NO_GPU = "was asked for but no CUDA GPU is visible; use --device cpu"


@pytest.fixture
def gpu_mistakes_folder(tmp_path):
    """What each command needs to get as far as its device: an image, a prompts file the
    built-in prior knows, and a run to export (its checkpoint a file: resolve_workspace asks no
    more before the device)."""
    from PIL import Image

    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "mug.png")
    (tmp_path / "shapes.txt").write_text("a red cube\na blue sphere\n")
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    (tmp_path / "run" / "checkpoints" / "last.pt").write_bytes(b"")
    return tmp_path


GPU_MISTAKES = [
    (["text", "a red cube", "--model", "builtin:shapes", "--device", "cuda"], "cuda"),
    (["image", "mug.png", "--device", "cuda"], "cuda"),
    (["batch", "shapes.txt", "--model", "builtin:shapes", "--device", "cuda:1"], "cuda:1"),
    (["export", "--workspace", "run", "--device", "cuda"], "cuda"),
]


@pytest.mark.skipif(not no_cuda_here(), reason="this machine may have a CUDA GPU")
@pytest.mark.parametrize(
    ("argv", "device"), GPU_MISTAKES, ids=[" ".join(argv) for argv, _ in GPU_MISTAKES]
)
def test_a_gpu_this_machine_cannot_have_is_refused_before_torch_is_imported(
    gpu_mistakes_folder, argv, device
):
    """text, image, batch and export as describe: the line torch's answer gave after 8-9 s of
    CPU and ~450 MB."""
    err = refused_without_torch(gpu_mistakes_folder, argv)
    assert err == f"dreamtext: error: --device {device} {NO_GPU}\n"
    assert not (gpu_mistakes_folder / "workspace").exists()


@pytest.mark.skipif(not no_cuda_here(), reason="this machine may have a CUDA GPU")
@pytest.mark.parametrize("half", ["--fp16", "--bf16"])
def test_a_gpu_asked_for_in_half_precision_is_told_to_drop_it_with_the_device(
    tmp_path, monkeypatch, capsys, half
):
    """``--device cuda --fp16`` where there is no GPU was told "use --device cpu", which is
    refused beside --fp16 ("--fp16 needs a CUDA GPU"). The line names the flag to drop, and the
    command it names runs."""
    from dreamtext.cli import main

    monkeypatch.chdir(tmp_path)
    command = ["text", "a red cube", "--model", "builtin:shapes", "--iters", "1", "--h", "16"]
    command += ["--no-export"]
    err = refused_without_torch(tmp_path, [*command, "--device", "cuda", half])
    fix = f"--device cpu --fp32 (without {half})"
    assert err == f"dreamtext: error: --device cuda {NO_GPU[: -len('--device cpu')]}{fix}\n"
    assert main([*command, half, "--device", "cpu"]) == 2  # the old line's advice
    assert f"{half} needs a CUDA GPU" in capsys.readouterr().err
    assert main([*command, "--device", "cpu", "--fp32"]) == 0, capsys.readouterr().err


@pytest.mark.skipif(not no_cuda_here(), reason="this machine may have a CUDA GPU")
@pytest.mark.parametrize(
    "argv",
    [
        ["text", "a red cube", "--device", "cuda", "--preset", "nope"],
        ["image", "nothere.png", "--device", "cuda"],
        ["batch", "nothere.txt", "--device", "cuda"],
        ["export", "--workspace", "nothere", "--device", "cuda"],
    ],
)
def test_a_gpu_this_machine_cannot_have_is_the_first_mistake_said(tmp_path, argv):
    """As describe's: the flag is checked against the machine before the files it names."""
    err = refused_without_torch(tmp_path, argv)
    assert err == f"dreamtext: error: --device cuda {NO_GPU}\n"


def a_run_of(folder: Path, prompt: str = "a cube", state: str | None = None) -> Path:
    """``folder`` as a run that wrote its config.json (and a status.json in ``state``) and no
    checkpoint: killed, or failed, before its first one."""
    folder.mkdir(parents=True)
    # Its workspace as typed where it was started (since moved): its folder is where it is.
    record = {"prompt": prompt, "workspace": "moved/away", "presets": []}
    (folder / "config.json").write_text(json.dumps(record))
    if state is not None:
        (folder / "status.json").write_text(json.dumps({"state": state, "pid": 1}))
    return folder


def nothing_to_resume(workspace: str, no: str = "checkpoints/last.pt") -> str:
    return (
        f"dreamtext: error: nothing to resume in {workspace}: no {no}; drop --resume to start a "
        "new run\n"
    )


def test_resume_without_workspace_finds_no_run_before_torch_is_imported(tmp_path):
    """The prompt's default folder, as _saved_config finds it, without a run."""
    err = refused_without_torch(tmp_path, ["text", "a cube", "--resume"])
    assert err == nothing_to_resume("workspace/a_cube", "config.json")


@pytest.mark.parametrize(
    "argv",
    [
        ["text", "a cube", "--resume"],
        ["text", "Cafe\u0301 cube", "--resume"],  # the same prompt, NFC, in the same folder
        ["text", "a cube", "--resume", "--workspace", "workspace/a_cube"],
    ],
)
def test_resume_of_a_run_without_a_checkpoint_is_refused_before_torch_is_imported(tmp_path, argv):
    """A run whose config.json was written but no checkpoint (killed, or failed, while it
    loaded or in its first steps): the line train() gave after the torch import."""
    folder = "a_cube" if argv[1] == "a cube" else "café_cube"
    recorded = "a cube" if argv[1] == "a cube" else "Caf\u00e9 cube"
    a_run_of(tmp_path / "workspace" / folder, prompt=recorded, state="interrupted")
    (tmp_path / "workspace" / folder / "checkpoints").mkdir()
    err = refused_without_torch(tmp_path, argv)
    assert err == nothing_to_resume(f"workspace/{folder}")


def test_resume_in_the_folder_a_runs_config_json_names_is_refused_before_torch_is_imported(
    tmp_path,
):
    """``--config RUN/config.json`` without ``--workspace``: the run's own folder."""
    a_run_of(tmp_path / "run", state="failed")
    err = refused_without_torch(
        tmp_path, ["text", "a cube", "--resume", "--config", "run/config.json"]
    )
    assert err == nothing_to_resume("run")


@pytest.mark.parametrize(
    ("layout", "stderr"),
    [
        # A step file only: whole, it is resumed from (restore_newest); damaged, as here, it is
        # not. Which it is takes reading it, so torch decides.
        ("step file", nothing_to_resume("run")),
        # A lock file: another process may hold the run, loading before its first checkpoint.
        # Here its holder is gone, so the command takes the lock and says the same.
        ("lock", nothing_to_resume("run")),
    ],
)
def test_a_resume_that_takes_torch_to_decide_is_left_to_the_command(tmp_path, layout, stderr):
    a_run_of(tmp_path / "run", prompt="a cube")
    if layout == "step file":
        (tmp_path / "run" / "checkpoints").mkdir()
        (tmp_path / "run" / "checkpoints" / "step_000002.pt").write_bytes(b"not a checkpoint")
    if layout == "lock":
        (tmp_path / "run" / ".dreamtext.lock").write_text("{}")
    done = run_without_torch(tmp_path, ["text", "a cube", "--resume", "--workspace", "run"])
    assert (done.returncode, done.stderr) == (2, stderr)
    assert "torch" in done.stdout


def test_a_resume_of_another_prompts_run_is_refused_before_torch_and_its_settings(tmp_path):
    """`text "a cube" --resume --workspace run --seed 5` where run holds a run of 'a dog': the
    command refused the seed as a resumed run's changed setting, after torch loaded; dropping
    --seed as that line said only led to this one."""
    a_run_of(tmp_path / "run", prompt="a dog")
    argv = ["text", "a cube", "--resume", "--workspace", "run", "--seed", "5"]
    err = refused_without_torch(tmp_path, argv)
    assert err == (
        "dreamtext: error: run holds a run of 'a dog'; resume it with that prompt, or drop "
        "--resume and pass --workspace NEW_FOLDER for this prompt\n"
    )


def test_holds_no_checkpoint_only_where_can_resume_is_false(tmp_path):
    """The torch-free answer never contradicts dreamtext.checkpoint.can_resume, and names the
    files it does."""
    from dreamtext import checkpoint, inputs, runstatus
    from dreamtext.inputs import holds_no_checkpoint

    assert (inputs.CHECKPOINT_DIR, inputs.LAST_CHECKPOINT) == (
        checkpoint.CHECKPOINT_DIR,
        checkpoint.LAST,
    )
    assert inputs.RUN_STATUS == runstatus.STATUS
    empty = a_run_of(tmp_path / "empty")
    (empty / "checkpoints").mkdir()
    assert holds_no_checkpoint(empty) and not checkpoint.can_resume(empty)
    assert holds_no_checkpoint(a_run_of(tmp_path / "nofolder", state="interrupted"))
    last = a_run_of(tmp_path / "last")
    (last / "checkpoints").mkdir()
    (last / "checkpoints" / "last.pt").write_bytes(b"")
    assert not holds_no_checkpoint(last) and checkpoint.can_resume(last)
    assert not holds_no_checkpoint(a_run_of(tmp_path / "running", state="running"))
    file = a_run_of(tmp_path / "file")
    (file / "checkpoints").write_text("")
    assert not holds_no_checkpoint(file)


@pytest.fixture
def other_runs_folder(tmp_path):
    """An image (``mug.png``) and folders holding other runs than its: a text→3D run, another
    image's run, a sentence of this image whose descriptor training has started, this image's run
    whose copy is of another image (the image edited since), and the default folder
    ``workspace/mug`` holding the run of another ``mug.png``."""
    from PIL import Image

    def record(path: Path, data: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))

    Image.new("RGB", (64, 64), (200, 30, 30)).save(tmp_path / "mug.png")
    Image.new("RGB", (64, 64), (30, 30, 200)).save(tmp_path / "cup.png")
    (tmp_path / "other").mkdir()
    Image.new("RGB", (64, 64), (30, 200, 30)).save(tmp_path / "other" / "mug.png")
    record(tmp_path / "text" / "config.json", {"prompt": "a cube", "workspace": "text"})
    for run, image in (("cup", "cup.png"), ("workspace/mug", "other/mug.png")):
        path = str(tmp_path / image)
        record(tmp_path / run / "descriptor" / "sentence.json", {"sentence": "x", "image": path})
        sections = {"prompt": "x", "workspace": run, "image_to_3d": {"image": path}}
        record(tmp_path / run / "config.json", sections)
    mug = {"sentence": "a red mug", "image": str(tmp_path / "mug.png")}
    record(tmp_path / "trained" / "descriptor" / "sentence.json", {**mug, "trained_sentence": "t"})
    record(tmp_path / "edited" / "descriptor" / "sentence.json", mug)
    (tmp_path / "edited" / "descriptor" / "source.png").write_bytes(
        (tmp_path / "cup.png").read_bytes()
    )
    return tmp_path


OTHER_RUNS = [
    (
        ["describe", "mug.png", "--workspace", "text"],
        "text holds the text→3D run of 'a cube'; pass --workspace NEW_FOLDER to describe mug.png",
    ),
    (
        ["describe", "mug.png", "--workspace", "cup"],
        "cup holds the sentence of {root}/cup.png; pass --workspace NEW_FOLDER to describe mug.png",
    ),
    (
        ["describe", "mug.png", "--workspace", "trained"],
        "trained holds the image→3D run of 'a red mug', whose descriptor training has started; "
        "to describe the image again, pass --workspace NEW_FOLDER",
    ),
    (
        ["describe", "mug.png"],
        "workspace/mug holds the sentence of {root}/other/mug.png; pass --workspace NEW_FOLDER to "
        "describe mug.png",
    ),
    (
        ["image", "mug.png", "--workspace", "text"],
        "text holds a text→3D run of 'a cube'; pass --workspace NEW_FOLDER for this image",
    ),
    (
        ["image", "mug.png", "--workspace", "cup"],
        "cup holds the image→3D run of {root}/cup.png; pass --workspace NEW_FOLDER for this image",
    ),
    (
        ["image", "mug.png", "--workspace", "edited"],
        "mug.png has changed since the run in edited started from it; pass --workspace "
        "NEW_FOLDER for the new image, or its copy edited/descriptor/source.png to continue the "
        "run",
    ),
    (
        ["image", "mug.png"],
        "workspace/mug holds the image→3D run of {root}/other/mug.png; pass --workspace "
        "NEW_FOLDER for this image",
    ),
]


def files_under(folder: Path) -> dict[str, bytes | None]:
    return {
        str(path.relative_to(folder)): path.read_bytes() if path.is_file() else None
        for path in sorted(folder.rglob("*"))
    }


@pytest.mark.parametrize(
    ("argv", "line"), OTHER_RUNS, ids=[" ".join(argv) for argv, _ in OTHER_RUNS]
)
def test_a_workspace_holding_another_run_is_refused_before_torch_is_imported(
    other_runs_folder, argv, line
):
    """describe's and image's line for a folder of another run (check_describe_workspace,
    check_image_workspace), which they gave after the torch import (7-15 s, ~475 MB)."""
    before = files_under(other_runs_folder)
    expected = f"dreamtext: error: {line.format(root=other_runs_folder)}\n"
    err = refused_without_torch(other_runs_folder, argv)
    assert err == expected
    assert files_under(other_runs_folder) == before


def test_image_runs_where_a_config_file_names_but_not_where_a_runs_record_does(
    other_runs_folder,
):
    """``text --config ws.yaml`` trains in the workspace ws.yaml names; ``image`` took
    workspace/<image name> whatever it named (so a folder named there was never looked at).
    A run's own config.json (``image IMG --config RUN/config.json``, README) names RUN, which
    is not IMG's folder: its options are read, its folder is not taken."""
    (other_runs_folder / "ws.yaml").write_text("workspace: cup\n")
    err = refused_without_torch(other_runs_folder, ["image", "mug.png", "--config", "ws.yaml"])
    assert err == (
        f"dreamtext: error: cup holds the image→3D run of {other_runs_folder}/cup.png; pass "
        "--workspace NEW_FOLDER for this image\n"
    )
    record = ["image", "mug.png", "--config", "cup/config.json"]
    err = refused_without_torch(other_runs_folder, record)
    assert err == (
        "dreamtext: error: workspace/mug holds the image→3D run of "
        f"{other_runs_folder}/other/mug.png; pass --workspace NEW_FOLDER for this image\n"
    )


def test_a_bad_image_is_said_before_a_config_file_that_does_not_read(other_runs_folder):
    """image_workspace reads the --config files for their workspace: one that does not read was
    said before the image that is not there (the image is the first thing image checks)."""
    (other_runs_folder / "bad.yaml").write_text("workspace: [unclosed\n")
    argv = ["image", "gone.png", "--config", "bad.yaml"]
    err = refused_without_torch(other_runs_folder, argv)
    assert err.startswith("dreamtext: error: image not found: gone.png"), err


def test_an_image_gone_since_its_run_copied_it_is_refused_before_torch_is_imported(
    other_runs_folder,
):
    """check_image's line naming the run's copy, which image gave after the torch import."""
    (other_runs_folder / "mug.png").rename(other_runs_folder / "moved.png")
    err = refused_without_torch(other_runs_folder, ["image", "mug.png", "--workspace", "edited"])
    assert err == (
        "dreamtext: error: image not found: mug.png; to continue the run in edited, pass its copy "
        "and its folder: dreamtext image edited/descriptor/source.png --workspace edited (or the "
        "image's new path in place of the copy)\n"
    )


def test_image_into_a_run_another_process_runs_is_refused_before_torch_is_imported(
    other_runs_folder,
):
    """status.json of a live process (this test's) running the run: check_not_running's line."""
    from dreamtext.processes import this_process

    status = {"state": "running", "phase": "train", "step": 7, **this_process()}
    (other_runs_folder / "cup" / "status.json").write_text(json.dumps(status))
    err = refused_without_torch(other_runs_folder, ["image", "cup.png", "--workspace", "cup"])
    assert err == (
        f"dreamtext: error: cup is in use: process {os.getpid()} on this machine is running its "
        "run (train phase, step 7); wait for it to end or stop it, or pass --workspace NEW_FOLDER\n"
    )


def test_describe_into_a_search_another_process_runs_is_refused_before_torch_is_imported(
    other_runs_folder,
):
    """status.json of a live describe (this test's process) and no sentence yet: the line the
    search's status tracking gave once CLIP had loaded."""
    from dreamtext.processes import this_process

    (other_runs_folder / "searching").mkdir()
    status = {"state": "running", "phase": "describe", "step": 0, **this_process()}
    (other_runs_folder / "searching" / "status.json").write_text(json.dumps(status))
    err = refused_without_torch(
        other_runs_folder, ["describe", "mug.png", "--workspace", "searching"]
    )
    assert err == (
        f"dreamtext: error: searching is in use: process {os.getpid()} on this machine is running "
        "its run (describe phase, step 0); wait for it to end or stop it, or pass --workspace "
        "NEW_FOLDER\n"
    )
    assert sorted(p.name for p in (other_runs_folder / "searching").iterdir()) == ["status.json"]


def test_describe_into_a_locked_workspace_is_left_to_the_command(other_runs_folder):
    """A lock file: another process may hold the workspace, which claim_workspace asks first.
    Here its holder is gone, so the command takes the lock and says the same line."""
    (other_runs_folder / "text" / ".dreamtext.lock").write_text("{}")
    done = run_without_torch(other_runs_folder, ["describe", "mug.png", "--workspace", "text"])
    assert (done.returncode, done.stderr) == (2, f"dreamtext: error: {OTHER_RUNS[0][1]}\n")
    assert "torch" in done.stdout


SEARCH_MISTAKES = [
    (["--nouns", "nouns.txt", "--workspace", "text"], OTHER_RUNS[0][1]),
    (["--adjectives", "nouns.txt", "--workspace", "text"], OTHER_RUNS[0][1]),
    (
        ["--nouns", "missing.txt"],
        "cannot read word list missing.txt (No such file or directory); pass --nouns with the "
        "word list's path",
    ),
    (
        ["--adjectives", "empty.txt"],
        "word list empty.txt is empty; give a file with one word per line",
    ),
    (["--noun", " "], "--noun is empty; give one such as 'mug', or leave it out to search"),
]


@pytest.mark.parametrize(
    ("flags", "line"), SEARCH_MISTAKES, ids=[" ".join(flags) for flags, _ in SEARCH_MISTAKES]
)
def test_describe_with_search_flags_is_refused_before_torch_is_imported(
    other_runs_folder, flags, line
):
    """describe's check_options, then its workspace check, which describe gave after the torch
    import (14 s, 474 MB) when a word list was named or a search flag was unusable."""
    (other_runs_folder / "nouns.txt").write_text("mug\ncup\n")
    (other_runs_folder / "empty.txt").write_text("# nothing\n\n")
    before = files_under(other_runs_folder)
    err = refused_without_torch(other_runs_folder, ["describe", "mug.png", *flags])
    assert err == f"dreamtext: error: {line}\n"
    assert files_under(other_runs_folder) == before


def unknown_caption(prompt: str) -> str:
    return (
        f'the built-in prior does not know "{prompt}"; use one of its captions: "a COLOUR SHAPE" '
        "(COLOUR: red, green, blue, yellow, orange, purple; SHAPE: cube, sphere, cylinder, cone, "
        'torus) or "a colorful cube"'
    )


CAPTION_MISTAKES = [
    (["text", "a cat", "--model", "builtin:shapes"], unknown_caption("a cat")),
    (
        ["text", "a red cube", "--preset", "builtin-shapes", "--negative", "a dog"],
        f"the negative prompt (--negative, guidance.negative): {unknown_caption('a dog')} "
        "(or leave it empty)",
    ),
    (["text", "a cat", "--config", "shapes.yaml"], unknown_caption("a cat")),
    (
        ["batch", "prompts.txt", "--model", "builtin:shapes"],
        'prompts.txt: builtin:shapes does not know the prompts of lines 1 ("a cat"), 2 ("a dog"); '
        'it knows "a COLOUR SHAPE" (COLOUR: red, green, blue, yellow, orange, purple; SHAPE: '
        'cube, sphere, cylinder, cone, torus) or "a colorful cube": change those lines, or pass '
        "--model with a Stable Diffusion model (a diffusers hub id or folder)",
    ),
    (
        ["batch", "cubes.txt", "--config", "shapes.yaml", "--negative", "a dog"],
        f"the negative prompt (--negative, guidance.negative): {unknown_caption('a dog')} "
        "(or leave it empty)",
    ),
]


@pytest.mark.parametrize(
    ("argv", "line"), CAPTION_MISTAKES, ids=[" ".join(argv) for argv, _ in CAPTION_MISTAKES]
)
def test_a_prompt_the_builtin_prior_cannot_draw_is_refused_before_torch_is_imported(
    mistakes_folder, argv, line
):
    """The prior's captions (dreamtext.captions), which text asked once the prior had loaded
    (18 s, 704 MB) and batch once torch was imported (14 s, 455 MB)."""
    (mistakes_folder / "shapes.yaml").write_text("guidance: {model: 'builtin:shapes'}\n")
    (mistakes_folder / "cubes.txt").write_text("a red cube\n# a comment\nA  Blue Cube.\n")
    err = refused_without_torch(mistakes_folder, argv)
    assert err == f"dreamtext: error: {line}\n"
    assert not (mistakes_folder / "workspace").exists()


@pytest.fixture
def shapes_run(tmp_path):
    """``run/``: a run of "a red cube" on the built-in prior with a checkpoint of step 7, its
    config.json recording the model and negative prompt as every run's does."""
    from dreamtext.checkpoint import RUN_KEYS, save_checkpoint

    run = tmp_path / "run"
    run.mkdir()
    record = {
        "prompt": "a red cube",
        "workspace": "run",
        "presets": ["builtin-shapes"],
        "guidance": {"model": "builtin:shapes", "negative": ""},
    }
    (run / "config.json").write_text(json.dumps(record))
    save_checkpoint(run, {key: {} for key in RUN_KEYS} | {"step": 7})
    (tmp_path / "shapes.yaml").write_text("guidance: {model: 'builtin:shapes'}\n")
    return run


NEEDS_STABLE_DIFFUSION = (
    "--diverse needs a Stable Diffusion model, not builtin:shapes; pass --model with a diffusers "
    "Stable Diffusion hub id or folder"
)
RESUMED_AND_DIVERSE_MISTAKES = [
    (
        ["text", "a red cube", "--resume", "--workspace", "run", "--negative", "a dog"],
        f"the negative prompt (--negative, guidance.negative): {unknown_caption('a dog')} "
        "(or leave it empty)",
    ),
    (["text", "a red cube", "--diverse", "--model", "builtin:shapes"], NEEDS_STABLE_DIFFUSION),
    (["text", "a dog", "--diverse", "--config", "shapes.yaml"], NEEDS_STABLE_DIFFUSION),
    (["text", "a red cube", "--diverse", "--preset", "builtin-shapes"], NEEDS_STABLE_DIFFUSION),
]


@pytest.mark.parametrize(
    ("argv", "line"),
    RESUMED_AND_DIVERSE_MISTAKES,
    ids=[" ".join(argv) for argv, _ in RESUMED_AND_DIVERSE_MISTAKES],
)
def test_a_resumes_negative_or_diverse_on_the_builtin_prior_is_refused_before_torch_is_imported(
    shapes_run, argv, line
):
    """A resume's --negative the prior cannot draw (the run's config.json gives the model), which
    the prior refused once it had loaded (28 s, 705 MB), and --diverse with the built-in prior,
    refused once torch was imported (16 s, 474 MB)."""
    before = files_under(shapes_run)
    err = refused_without_torch(shapes_run.parent, argv)
    assert err == f"dreamtext: error: {line}\n"
    assert files_under(shapes_run) == before
    assert not (shapes_run.parent / "workspace").exists()


IMAGE_NEEDS_STABLE_DIFFUSION = NEEDS_STABLE_DIFFUSION.replace("--diverse", "image→3D")
IMAGE_ON_THE_BUILTIN_PRIOR = [
    ["image", "mug.png", "--model", "builtin:shapes"],
    ["image", "mug.png", "--config", "shapes.yaml"],
    ["image", "mug.png", "--preset", "builtin-shapes"],
]


@pytest.mark.parametrize("argv", IMAGE_ON_THE_BUILTIN_PRIOR, ids=" ".join)
def test_image_on_the_builtin_prior_is_refused_before_torch_is_imported(shapes_run, argv):
    """image→3D needs Stable Diffusion's text encoder and sampler; the built-in prior (a flag, a
    preset or a --config file naming it) was refused once torch was imported (16 s, 476 MB)."""
    from PIL import Image

    Image.new("RGB", (32, 32), (200, 30, 30)).save(shapes_run.parent / "mug.png")
    err = refused_without_torch(shapes_run.parent, argv)
    assert err == f"dreamtext: error: {IMAGE_NEEDS_STABLE_DIFFUSION}\n"
    assert not (shapes_run.parent / "workspace").exists()


def test_a_resume_of_another_prompts_run_names_that_prompt_not_the_priors_captions(shapes_run):
    """Its line names the run's prompt; the prompt typed is not asked of the prior."""
    argv = ["text", "a dog", "--resume", "--workspace", "run", "--negative", "a dog"]
    done = run_without_torch(shapes_run.parent, argv)
    assert (done.returncode, done.stderr) == (
        2,
        "dreamtext: error: run holds a run of 'a red cube'; resume it with that prompt, or drop "
        "--resume and pass --workspace NEW_FOLDER for this prompt\n",
    )


def test_the_builtin_priors_captions_are_those_it_renders():
    """One vocabulary: the torch-free module's names are the renderer's and the prior's."""
    from dreamtext import captions, prior, shapes

    assert shapes.find_primitive is captions.find_primitive
    assert (shapes.SHAPES, shapes.COLOURS) == (captions.SHAPES, captions.COLOURS)
    assert prior.BUILTIN_MODELS is captions.BUILTIN_MODELS


@pytest.fixture
def checkpointed_run(tmp_path):
    """``run/``: a run of "a cube" whose checkpoint of step 7 was saved as the trainer saves one
    (dreamtext.checkpoint.save_checkpoint, which records its step beside it)."""
    from dreamtext.checkpoint import RUN_KEYS, save_checkpoint

    run = a_run_of(tmp_path / "run", state="interrupted")
    record = json.loads((run / "config.json").read_text())
    (run / "config.json").write_text(json.dumps({**record, "workspace": "run"}))
    save_checkpoint(run, {key: {} for key in RUN_KEYS} | {"step": 7})
    return run


HELD_RUNS = [
    (
        ["text", "a cube", "--workspace", "run"],
        "run already holds a run of this prompt at step 7; pass --resume to continue it, "
        "--overwrite to train it again from scratch, or --workspace NEW_FOLDER",
    ),
    (
        ["text", "a cube", "--config", "run/config.json"],
        "--config run/config.json is the record of the run in run at step 7, where this command "
        "would train; pass --workspace NEW_FOLDER to train it again beside it, or --resume to "
        "continue it",
    ),
    (
        ["text", "a dog", "--workspace", "run", "--overwrite"],
        "run holds a run of 'a cube'; that prompt with --resume continues it, or pass --workspace "
        "NEW_FOLDER for this prompt",
    ),
    (
        ["text", "a dog", "--config", "run/config.json"],
        "--config run/config.json is the record of the run of 'a cube' in run, where this command "
        "would train; pass --workspace NEW_FOLDER to train this prompt with its settings beside it",
    ),
]


@pytest.mark.parametrize(("argv", "line"), HELD_RUNS, ids=[" ".join(argv) for argv, _ in HELD_RUNS])
def test_a_new_run_into_a_workspace_holding_a_run_is_refused_before_torch_is_imported(
    checkpointed_run, argv, line
):
    """The trainer's check_workspace lines, which came after the torch import (10-13 s,
    ~455 MB); the step is the one the checkpoint's save recorded."""
    from dreamtext.checkpoint import resume_step

    before = files_under(checkpointed_run)
    err = refused_without_torch(checkpointed_run.parent, argv)
    assert err == f"dreamtext: error: {line}\n"
    assert files_under(checkpointed_run) == before
    assert resume_step(checkpointed_run) == 7


@pytest.mark.parametrize(
    ("section", "command"),
    [
        (
            {"image_to_3d": {"image": "/data/my mug.png"}},
            "the image→3D run of /data/my mug.png; `dreamtext image '/data/my mug.png' "
            "--workspace run` continues it",
        ),
        (
            {"diverse": {"prompt": "a cube", "seed": 3}},
            "the --diverse run of 'a cube'; `dreamtext text 'a cube' --diverse --seed 3 "
            "--workspace run` continues it",
        ),
    ],
    ids=["image", "diverse"],
)
def test_another_prompt_into_an_image_or_diverse_run_names_that_runs_own_command(
    checkpointed_run, section, command
):
    """text --overwrite of another prompt into the text→3D stage of an image→3D or --diverse
    run: `--resume` with the new prompt is refused, and `text --resume` is not how those runs
    go on; the line names the command that continues the run, from its config.json."""
    record = json.loads((checkpointed_run / "config.json").read_text())
    (checkpointed_run / "config.json").write_text(json.dumps({**record, **section}))
    before = files_under(checkpointed_run)
    done = run_without_torch(
        checkpointed_run.parent, ["text", "a dog", "--workspace", "run", "--overwrite"]
    )
    line = f"run holds {command}, or pass --workspace NEW_FOLDER for this prompt"
    assert (done.returncode, done.stderr) == (2, f"dreamtext: error: {line}\n")
    assert files_under(checkpointed_run) == before


def test_a_checkpoint_changed_since_its_step_was_recorded_is_left_to_the_command(
    checkpointed_run,
):
    """last.pt written over (here with bytes that are no checkpoint): the record is not of it,
    so the trainer reads it, and names no step. With no step file either, the run was told to
    `--resume`, which refused: nothing loads whole."""
    from dreamtext.runfiles import recorded_step

    assert recorded_step(checkpointed_run) == 7
    (checkpointed_run / "checkpoints" / "last.pt").write_bytes(b"not a checkpoint")
    assert recorded_step(checkpointed_run) is None
    done = run_without_torch(checkpointed_run.parent, ["text", "a cube", "--workspace", "run"])
    assert (done.returncode, done.stderr) == (
        2,
        "dreamtext: error: run already holds a run of this prompt, but no checkpoint of it loads "
        "whole (damaged or cut short), so --resume has nothing to go on from; pass --overwrite to "
        "train it again from scratch, or --workspace NEW_FOLDER; if a disk or file server is "
        "failing, run the command again once it is back\n",
    )
    assert "torch" in done.stdout


def test_a_renamed_copy_of_a_runs_config_json_is_told_to_keep_its_name(tmp_path, capsys):
    """`cp RUN/config.json castle.json; dreamtext text ... --config castle.json` was told to
    name a preset with --preset, though README says a run's config.json is a config file: it
    is read as one by its name only."""
    from dreamtext.cli import main

    record = {"prompt": "a red cube", "presets": ["builtin-shapes"], "ran_on": {"device": "cpu"}}
    (tmp_path / "castle.json").write_text(json.dumps(record))
    args = ["text", "a red cube", "--config", str(tmp_path / "castle.json"), "--iters", "1"]
    assert main(args) == 2
    assert capsys.readouterr().err == (
        f"dreamtext: error: 'presets' in {tmp_path / 'castle.json'} is what a run's config.json "
        "records it was built on; a copy of a run's config.json is read as one under that name "
        "only: copy it as config.json into a folder of its own (or delete its presets line)\n"
    )
