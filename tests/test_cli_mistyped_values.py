"""Values a user can mistype into a flag, found by sweeping every flag of every subcommand with
bad values (empty, non-finite, huge, wrong kind of file, malformed config): each is refused
with one line on stderr, exit 2, and no files written."""

from pathlib import Path

from PIL import Image
from test_cli import run_main


def assert_refused(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in lines[0], lines[0]


def test_a_config_file_nested_too_deeply_for_the_yaml_reader_is_one_line(
    tmp_path, capsys, monkeypatch
):
    """`--config deep.json` of 100,000 opened lists ended in PyYAML's RecursionError traceback
    (exit 1)."""
    monkeypatch.chdir(tmp_path)
    Path("deep.json").write_text("[" * 100_000 + "]" * 100_000)
    argv = ["text", "a red cube", "--model", "builtin:shapes", "--config", "deep.json"]
    code, err = run_main(argv, capsys)
    assert_refused(code, err, "config file 'deep.json' nests its lists or mappings too deeply")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep.json"]


def test_clip_naming_a_file_is_refused_as_no_folder(tmp_path, capsys, monkeypatch):
    """transformers reads a file given for a model as the processor's JSON config: `--clip
    list.json` (a JSON list) ended in an AttributeError traceback (exit 1)."""
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (32, 32), (200, 30, 30)).save("mug.png")
    Path("list.json").write_text("[1, 2]")
    code, err = run_main(["describe", "mug.png", "--clip", "list.json", "--device", "cpu"], capsys)
    assert_refused(code, err, "--clip list.json is a file, not a folder", "hub id")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["list.json", "mug.png"]


def test_an_export_resolution_past_the_memory_is_the_only_line(tmp_path, capsys):
    """`export --resolution 100000` of a run with recorded export options printed the line of
    those options ("resolution 96 → 100000 ... (flags override them)") before refusing the
    memory it needs: two lines for one refusal."""
    from tiny_models import TINY_SIZES

    from dreamtext.config import resolve_config
    from dreamtext.trainer import train

    overrides = {"prompt": "a red cube", "guidance": {"model": "builtin:shapes"}, "iters": 1}
    overrides.update(TINY_SIZES, workspace=str(tmp_path / "run"), export=False)
    workspace = train(resolve_config(overrides))
    capsys.readouterr()
    before = sorted(p.relative_to(workspace) for p in workspace.rglob("*"))
    argv = ["export", "--workspace", workspace, "--resolution", "100000", "--formats", "ply"]
    code, err = run_main([*argv, "--no-video"], capsys)
    assert_refused(code, err, "an export at --resolution 100000", "lower --resolution")
    assert sorted(p.relative_to(workspace) for p in workspace.rglob("*")) == before
