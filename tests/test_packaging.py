"""What `pip install dreamtext` gives a newcomer: the sdist, the wheel built from it (as
`python -m build` builds them), and the package run from the wheel's files, not the checkout."""

import ast
import email
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# Imported only where their hardware is: tiny-cuda-nn (not on PyPI; CUDA only) and Triton (ships
# inside Linux CUDA builds of torch; the dev extras add it for the CPU interpreter tests).
OPTIONAL_IMPORTS = {"tinycudann", "triton"}
# Declared but never imported by name: diffusers loads through accelerate (low_cpu_mem_usage).
USED_THROUGH_OTHERS = {"accelerate"}

_NOT_SOURCE = shutil.ignore_patterns(
    "__pycache__", "*.pyc", "*.egg-info", "build", "dist", "node_modules", ".*", "workspace"
)


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _build(backend_call: str, source: Path, out: Path) -> Path:
    """Run ``setuptools.build_meta.<backend_call>(out)`` in ``source``; the file it wrote."""
    code = f"from setuptools import build_meta as b; print(b.{backend_call}({str(out)!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=source, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="session")
def dists(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The sdist of a copy of this source tree, and the wheel built from that sdist alone."""
    setuptools = pytest.importorskip("setuptools", reason="building needs setuptools (dev extras)")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} < 77 (pyproject's build requirement)")
    tmp = tmp_path_factory.mktemp("dists")
    source = tmp / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    out = tmp / "out"
    out.mkdir()
    sdist = _build("build_sdist", source, out)
    with tarfile.open(sdist) as tar:
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}  # Python < 3.10.12
        tar.extractall(tmp / "unpacked", **safe)
    wheel = _build("build_wheel", tmp / "unpacked" / sdist.name.removesuffix(".tar.gz"), out)
    site = tmp / "site"
    with zipfile.ZipFile(wheel) as z:
        z.extractall(site)  # a pure wheel installs as exactly these files
    return {"sdist": sdist, "wheel": wheel, "site": site, "source": source}


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as z:
        return set(z.namelist())


def _metadata(wheel: Path) -> email.message.Message:
    with zipfile.ZipFile(wheel) as z:
        name = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return email.message_from_bytes(z.read(name))


def _run_installed(site: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess:
    """``python *args`` seeing dreamtext only as the wheel's files (outside the checkout)."""
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_the_wheel_holds_the_presets_word_lists_viewer_assets_and_license(dists):
    names = _wheel_names(dists["wheel"])
    wanted = [f"dreamtext/configs/{p.name}" for p in (ROOT / "configs").glob("*.yaml")]
    wanted += [f"dreamtext/data/{p.name}" for p in (ROOT / "dreamtext/data").glob("*.txt")]
    assets = ROOT / "dreamtext/view/assets"
    wanted += [
        f"dreamtext/view/assets/{p.relative_to(assets).as_posix()}"
        for p in assets.rglob("*")
        if p.is_file()
    ]
    assert len(wanted) >= 10  # 3 presets, 2 word lists, page, script, style, vendor JS, its license
    assert sorted(set(wanted) - names) == []
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)


def test_the_wheel_holds_only_the_package(dists):
    package = re.compile(r"dreamtext(/|-[^/]+\.dist-info/)")
    assert sorted(n for n in _wheel_names(dists["wheel"]) if not package.match(n)) == []


def test_the_sdist_carries_the_files_its_tests_need(dists):
    with tarfile.open(dists["sdist"]) as tar:
        top = dists["sdist"].name.removesuffix(".tar.gz")
        names = {m.name.removeprefix(top + "/") for m in tar.getmembers() if m.isfile()}
    # Every test file with its helpers (conftest, tiny models, virtual CUDA, fixtures), and the
    # benchmark and helper scripts the tests import or run.
    needed = {
        p.relative_to(dists["source"]).as_posix()
        for folder in ("tests", "benchmarks", "scripts")
        for p in (dists["source"] / folder).rglob("*")
        if p.is_file()
    }
    assert {"tests/conftest.py", "tests/tiny_models.py", "benchmarks/sds_step.py"} <= needed
    assert sorted(needed - names) == []
    assert {"README.md", "LICENSE", "ARCHITECTURE.md", "pyproject.toml"} <= names
    assert [n for n in names if "__pycache__" in n or "node_modules" in n] == []


def test_the_installed_wheel_finds_its_data_through_importlib_resources(dists, tmp_path):
    script = (
        "from importlib import resources\n"
        "import dreamtext\n"
        "from dreamtext.config import available_presets\n"
        "from dreamtext.view.page import ASSETS, asset_bytes\n"
        "import json\n"
        "yamls = resources.files('dreamtext.configs').iterdir()\n"
        "nouns = resources.files('dreamtext.data').joinpath('nouns.txt').read_text()\n"
        "print(json.dumps({'file': dreamtext.__file__,\n"
        "    'yamls': sorted(p.name for p in yamls if p.name.endswith('.yaml')),\n"
        "    'presets': available_presets(), 'nouns': len(nouns.split()),\n"
        "    'smallest_asset': min(len(asset_bytes(name)) for name in ASSETS)}))\n"
    )
    done = _run_installed(dists["site"], tmp_path, "-c", script)
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.splitlines()[-1])
    assert Path(found["file"]).is_relative_to(dists["site"])
    assert found["yamls"] == sorted(p.name for p in (ROOT / "configs").glob("*.yaml"))
    assert {"fitfusion", "stable-dreamfusion", "builtin-shapes"} <= set(found["presets"])
    assert found["nouns"] > 1000
    assert found["smallest_asset"] > 100


def test_the_installed_wheel_prints_the_slurm_job_script_byte_for_byte(dists, tmp_path):
    """README's SLURM recipe submitted `scripts/slurm_array.sbatch`, which only a checkout has:
    the script is package data, and `dreamtext batch --sbatch-script`, run from the wheel's files
    outside the checkout with no prompts file, prints the source's file as it is and exits 0."""
    source = (ROOT / "dreamtext" / "data" / "slurm_array.sbatch").read_bytes()
    assert "dreamtext/data/slurm_array.sbatch" in _wheel_names(dists["wheel"])
    env = {**os.environ, "PYTHONPATH": str(dists["site"]), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "dreamtext", "batch", "--sbatch-script"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        timeout=300,
    )
    assert (done.returncode, done.stderr.decode()) == (0, "")
    assert done.stdout == source
    assert source.startswith(b"#!/bin/bash\n") and b"\n#SBATCH --array=0-7 " in source
    assert list(tmp_path.iterdir()) == []


def test_python_dash_m_dreamtext_is_the_command_and_says_the_wheels_version(dists, tmp_path):
    done = _run_installed(dists["site"], tmp_path, "-m", "dreamtext", "--version")
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == f"dreamtext {_metadata(dists['wheel'])['Version']}"


def _third_party_imports() -> dict[str, list[str]]:
    """``{top-level module: [where]}`` for every import in dreamtext/ outside the stdlib."""
    found: dict[str, list[str]] = {}
    for path in sorted((ROOT / "dreamtext").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                modules = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules = [node.module]
            else:
                continue
            for module in modules:
                top = module.split(".")[0]
                if top not in sys.stdlib_module_names and top != "dreamtext":
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    found.setdefault(top, []).append(where)
    return found


def _declared(wheel: Path) -> set[str]:
    requires = _metadata(wheel).get_all("Requires-Dist") or []
    return {
        _normalise(re.match(r"[A-Za-z0-9_.-]+", r).group()) for r in requires if "extra ==" not in r
    }


def test_every_third_party_import_is_a_declared_dependency(dists):
    declared = _declared(dists["wheel"])
    owners = packages_distributions()
    undeclared = {}
    for module, where in _third_party_imports().items():
        if module in OPTIONAL_IMPORTS:
            continue
        distributions = {_normalise(d) for d in owners.get(module, [module])}
        if not distributions & declared:
            undeclared[module] = where[:3]
    assert undeclared == {}


def test_declared_dependencies_not_imported_are_only_those_used_through_others(dists):
    owners = packages_distributions()
    imported = {
        _normalise(d) for module in _third_party_imports() for d in owners.get(module, [module])
    }
    assert _declared(dists["wheel"]) - imported == USED_THROUGH_OTHERS


# The newest release of a dependency that breaks dreamtext, which its lower bound must exclude.
BROKEN_RELEASES = {
    # logging.basicConfig(level=INFO) at import (kornia/constants.py, gone in 0.8.1): each line
    # of dreamtext's log came twice in `dreamtext image` (the second "INFO:dreamtext.export:").
    "kornia": "0.8.0",
}


def test_no_lower_bound_admits_a_release_known_to_break_dreamtext(dists):
    from packaging.requirements import Requirement

    requires = [Requirement(r) for r in _metadata(dists["wheel"]).get_all("Requires-Dist") or []]
    admitted = {
        name: version
        for name, version in BROKEN_RELEASES.items()
        for r in requires
        if _normalise(r.name) == name and r.specifier.contains(version, prereleases=True)
    }
    assert admitted == {}


def test_cis_import_of_every_module_passes_without_triton():
    """.ci/run's Python 3.10 check imports every module in a venv of the CPU torch and the
    declared dependencies, none of which brings triton: it stopped there with "No module named
    'triton'" (dreamtext.encoding_triton) wherever pip found a CPU torch for 3.10."""
    ci = ROOT / ".ci" / "run"
    if not ci.is_file():
        pytest.skip("no .ci/run (an unpacked sdist)")
    walk = re.search(r"-c '\n(import importlib.*?walk_packages.*?)\n'", ci.read_text(), re.S)
    assert walk is not None, "the module walk of .ci/run"
    code = "import sys\nsys.modules['triton'] = None  # import triton fails: not installed\n"
    done = subprocess.run(
        [sys.executable, "-c", code + walk.group(1)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]


def _readme_commands(prefix: str) -> list[str]:
    """The lines of the README's ```bash blocks that start with ``prefix``, comments cut off."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", text, re.S):
        for line in block.splitlines():
            line = line.strip()
            if line.startswith(prefix):
                lines.append(line.split(" #")[0].strip())
    return lines


def test_every_dreamtext_command_in_the_readme_parses():
    """A flag renamed or removed in the CLI leaves no README example that argparse refuses."""
    import shlex

    from dreamtext.cli import build_parser

    commands = _readme_commands("dreamtext ")
    assert len(commands) >= 15
    for command in commands:
        words = shlex.split(command)[1:]
        # A redirect's target (`> slurm_array.sbatch`) is the shell's, not the command's.
        words = [w for i, w in enumerate(words) if i == 0 or words[i - 1] != ">"]
        argv = [word for word in words if word not in (">", "&", "2>&1")]
        argv = [word for word in argv if not word.startswith(("worker", "$"))]
        try:
            build_parser().parse_command_line(argv)
        except SystemExit as error:
            if error.code:  # 0: a flag that prints and exits (--sbatch-script), as --help does
                pytest.fail(f"README command refused by the CLI ({error.code}): {command}")


def test_the_readme_recipe_makes_the_image_its_commands_take(tmp_path: Path):
    """The offline recipe's `describe mug.png` and `image mug.png` named an image no checkout
    holds: the recipe's own `python -c` line writes one that the commands read."""
    from dreamtext.images import load_image

    assert "dreamtext describe mug.png --clip tiny-clip" in _readme_commands("dreamtext describe")
    (line,) = [line for line in _readme_commands("python -c ") if "mug.png" in line.split("#")[0]]
    code = line.split("python -c ", 1)[1].strip().strip('"')
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert load_image(tmp_path / "mug.png").size == (128, 128)


def test_the_readme_command_that_writes_the_tiny_models_writes_loadable_models(tmp_path: Path):
    """The README's offline describe/image recipe: its `PYTHONPATH=tests python -c ...` line,
    run as written from a checkout's root, writes a diffusers pipeline and a CLIP folder."""
    (line,) = _readme_commands("PYTHONPATH=tests python -c ")
    code = line.split("python -c ", 1)[1].strip().strip('"')
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert json.loads((tmp_path / "tiny-sd" / "model_index.json").read_text())["unet"]
    assert json.loads((tmp_path / "tiny-clip" / "config.json").read_text())["model_type"] == "clip"


# Flags the README names that belong to another program: the program, which the same line names.
OTHER_PROGRAMS_FLAGS = {
    "--array": "sbatch",
    "--signal": "sbatch",
    "--include": "hf download",
    "--requeue": "sbatch",
    "--no-requeue": "sbatch",
    "--format": "sacct",
    "--cpus": "docker run",
    "--index-url": "pip install",
    "--dist": "pytest",
    "--remove-destination": "cp ",
    "--descriptor": "benchmarks/memory_model.py",
    "--precisions": "benchmarks/normal_quality.py",
    "--trainer": "benchmarks/sds_step.py",
    "--fitted": "benchmarks/sds_step.py",
    "--gpu-memory-gib": "benchmarks/sds_step.py",
    "--dtype": "benchmarks/encoder_memory.py",
    "--runs": "benchmarks/loaded_models.py",
    "--load-only": "benchmarks/loaded_models.py",
}


def _dreamtext_flags() -> set[str]:
    from dreamtext.cli import build_parser

    parser = build_parser()
    commands = parser._subparsers._group_actions[0].choices.values()
    return {
        flag
        for command in [parser, *commands]
        for action in command._actions
        for flag in action.option_strings
    }


def test_every_flag_the_readme_names_is_one_of_dreamtext_or_of_the_program_it_names():
    """The bash blocks are parsed above; the prose names flags too (`--video-size 128`,
    `--threads 1`, `--lock-timeout`): each is a flag of a dreamtext command, or of the program
    named in the same section (sbatch, pip, a benchmark script, whose source defines it)."""
    flags = _dreamtext_flags()
    unknown, wrongly_excused = [], []
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    for section in re.split(r"\n(?=#{2,} )", text):
        for flag in re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", section):
            if flag in flags:
                continue
            program = OTHER_PROGRAMS_FLAGS.get(flag)
            if program is None:
                unknown.append(flag)
            elif program not in section:
                wrongly_excused.append(f"{flag} in a section without {program!r}")
            elif program.startswith("benchmarks/"):
                assert f'"{flag}"' in (ROOT / program).read_text(encoding="utf-8"), (flag, program)
    assert unknown == []
    assert wrongly_excused == []
    assert len(flags) > 50


def test_every_dreamtext_command_written_inline_in_the_readme_parses():
    """`dreamtext view runs/ --static site/`-like commands in the prose, not only in the bash
    blocks: a span that starts with `dreamtext COMMAND` and gives flags is one argparse takes."""
    import shlex

    from dreamtext.cli import build_parser

    text = re.sub(r"```.*?```", "", (ROOT / "README.md").read_text(encoding="utf-8"), flags=re.S)
    spans = re.findall(r"`(dreamtext [^`\n]+)`", text)
    spans = [s for s in spans if " --" in s and "--help" not in s]
    assert len(spans) >= 3
    for span in spans:
        argv = [word for word in shlex.split(span)[1:] if word != "&"]
        # The shell's redirections and pipes (`2> run.log`, `| tee`) end the command's words.
        shell = [i for i, word in enumerate(argv) if re.fullmatch(r"\d*>>?(&\d)?|\|", word)]
        argv = argv[: shell[0]] if shell else argv
        try:
            build_parser().parse_command_line(argv)
        except SystemExit as error:
            if error.code:  # 0: a flag that prints and exits (--sbatch-script), as --help does
                pytest.fail(f"README command refused by the CLI ({error.code}): {span}")


def test_the_wheel_holds_every_file_of_the_package_tree(dists):
    """`packages` in pyproject.toml is a list written by hand: a new subpackage (or a data file
    of a kind package-data does not name) left out of it would install without it, and only the
    command that imports it would fail, on the user's machine. Every file of dreamtext/ and
    configs/ in the source is in the wheel."""
    source = dists["source"]
    wanted = {
        p.relative_to(source).as_posix()
        for p in (source / "dreamtext").rglob("*")
        if p.is_file() and p.suffix != ".pyc"
    }
    wanted |= {f"dreamtext/configs/{p.name}" for p in (source / "configs").iterdir() if p.is_file()}
    assert len(wanted) > 40
    assert sorted(wanted - _wheel_names(dists["wheel"])) == []


SECTIONS = ("field", "render", "guidance", "cameras", "export_options")


def _setting(cfg, name: str) -> tuple[bool, object]:
    """``(found, default)`` of a setting named bare (``keep_checkpoints``, ``alpha_threshold``)
    or dotted (``render.march_steps``), found in TrainConfig or one of its sections."""
    if "." in name:
        section, name = name.split(".", 1)
        owners = [getattr(cfg, section)] if section in SECTIONS else []
    else:
        owners = [cfg, *(getattr(cfg, section) for section in SECTIONS)]
    for owner in owners:
        if hasattr(owner, name):
            return True, getattr(owner, name)
    return False, None


def test_the_readmes_config_examples_load_and_its_settings_have_the_defaults_it_gives(tmp_path):
    """The README's YAML examples are `--config` files the CLI takes, the settings it names
    (`render.grad_chunk_points`, `field.normals: analytic`) are config fields, and the defaults
    it quotes for them (`alpha_threshold` = 1e-4, "(default 256)") are the config's."""
    import textwrap

    from dreamtext.config import TrainConfig, resolve_config, validate

    text = (ROOT / "README.md").read_text(encoding="utf-8")
    defaults = TrainConfig()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    for number, block in enumerate(blocks):
        path = tmp_path / f"example{number}.yaml"
        path.write_text(textwrap.dedent(block), encoding="utf-8")
        validate(resolve_config({"prompt": "a castle"}, config_file=path))
        for key, default in re.findall(r"^\s*(\w+):.*# .*\(default (\d+)", block, re.M):
            assert _setting(defaults, key) == (True, int(default)), key
    sections = "|".join(SECTIONS)
    named = set(re.findall(rf"`((?:{sections})\.\w+)", text))
    named |= set(re.findall(r"`(\w+): [^`]+`", text)) - {"dreamtext", "batch"}
    assert len(named) >= 10
    assert sorted(name for name in named if not _setting(defaults, name)[0]) == []
    quoted = re.findall(r"`(\w+)`(?: =|,) ([0-9][0-9.e+-]*)\b", text)
    assert len(quoted) >= 3
    for name, value in quoted:
        assert _setting(defaults, name) == (True, float(value)), name


def test_every_source_file_the_readme_names_is_in_the_source():
    """`benchmarks/memory_model.py`, `scripts/install-gltf-validator.sh`, `tests/virtual_cuda.py`: a
    newcomer runs them from a checkout or the sdist, so each is a file there (the benchmarks
    listed by name alone, `view_poll.py`, are in benchmarks/)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    folders = "benchmarks|scripts|tests|configs|docs|dreamtext"
    # A path under another folder (`~/.local/state/dreamtext/view-token`) is not the source's.
    paths = {p.rstrip(".") for p in re.findall(rf"(?<![\w/])(?:{folders})/[\w./-]*\w", text)}
    paths -= {p for p in paths if p.startswith("dreamtext/configs")}  # where a wheel puts configs/
    benchmarks_section = text.split("\n## Benchmarks\n", 1)[1].split("\n## ", 1)[0]
    paths |= {f"benchmarks/{name}" for name in re.findall(r"`(\w+\.(?:py|sh))", benchmarks_section)}
    assert len(paths) >= 30
    assert sorted(p for p in paths if not (ROOT / p).exists()) == []


def test_every_benchmark_script_is_named_in_the_readme():
    """A script in benchmarks/ that README names nowhere is one a newcomer never finds
    (`host_syncs.py` and `phase_peaks.py` were); `allocator_model.py` is a module the memory
    model imports, named beside it."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    scripts = sorted(p.name for p in (ROOT / "benchmarks").iterdir() if p.suffix in {".py", ".sh"})
    assert len(scripts) >= 30
    assert [name for name in scripts if not re.search(rf"\b{re.escape(name)}\b", text)] == []


def test_every_dreamtext_environment_variable_the_readme_names_is_read():
    """`DREAMTEXT_THREADS`, `DREAMTEXT_PROGRESS_SECONDS`, ...: each is read by the package (or,
    for the browser tests' switches, by the tests)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    names = set(re.findall(r"\bDREAMTEXT_[A-Z_]*[A-Z]", text))
    code = "".join(
        p.read_text(encoding="utf-8")
        for folder in ("dreamtext", "tests")
        for p in (ROOT / folder).rglob("*.py")
    )
    assert len(names) >= 3
    assert sorted(name for name in names if f'"{name}"' not in code) == []
