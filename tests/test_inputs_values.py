"""What dreamtext/inputs.py reads from the files a command line names, each expected value worked
out by hand from its docstrings (not read back from its output)."""

import errno
import os
from pathlib import Path

import pytest

from dreamtext import inputs
from dreamtext.errors import DreamtextError
from dreamtext.inputs import (
    ascii_slug,
    check_thread_count,
    check_word_length,
    configured_workspace,
    layered_guidance,
    read_prompt_lines,
    read_yaml,
    resumes_line,
    shard_from_environment,
    usable_cpus,
)


def test_a_yaml_error_names_the_line_as_editors_number_it(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("a: 1\nb: 2\nc: d: e\n")  # the third line is the broken one
    with pytest.raises(DreamtextError) as raised:
        read_yaml(path)
    assert str(raised.value) == f"config file '{path}' is not valid YAML (line 3); fix it"


def test_a_utf16_config_file_is_said_to_be_no_utf8_with_what_to_do(tmp_path):
    """PowerShell's `echo "iters: 12" > c.yaml` writes UTF-16: the line was Python's "'utf-8'
    codec can't decode byte 0xff in position 0: invalid start byte", and no way out."""
    path = tmp_path / "c.yaml"
    path.write_text("iters: 12\n", encoding="utf-16")
    with pytest.raises(DreamtextError) as raised:
        read_yaml(path)
    assert str(raised.value) == (
        f"config file '{path}' is not UTF-8 text (invalid start byte: byte 0xFF on line 1); save "
        "it as UTF-8"
    )


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be"])
def test_a_utf16_config_file_without_a_byte_order_mark_is_said_to_be_no_utf8(tmp_path, encoding):
    """``iconv -t UTF-16LE`` writes no byte order mark: its ASCII decodes as UTF-8 with a NUL
    beside each letter, and the line was "is not valid YAML; fix it", naming nothing to fix."""
    path = tmp_path / "c.yaml"
    path.write_text("iters: 12\n", encoding=encoding)
    with pytest.raises(DreamtextError) as raised:
        read_yaml(path)
    assert str(raised.value) == (
        f"config file '{path}' is not UTF-8 text (UTF-16 without a byte order mark: a NUL byte "
        "beside each letter); save it as UTF-8"
    )


def test_a_config_byte_that_is_not_utf8_is_named_by_its_line(tmp_path):
    """A Latin-1 "é" on a config file's third line was "at byte 33", where the prompts file's
    same error names the line, as the config's YAML errors do."""
    path = tmp_path / "c.yaml"
    path.write_bytes(b"iters: 12\r\nseed: 3\r\nnegative: caf\xe9\r\n")
    with pytest.raises(DreamtextError) as raised:
        read_yaml(path)
    assert str(raised.value) == (
        f"config file '{path}' is not UTF-8 text (invalid continuation byte: byte 0xE9 on line "
        "3); save it as UTF-8"
    )


def test_a_config_file_of_comments_only_is_no_settings(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing set yet\n")
    assert read_yaml(path) == {}


def test_of_several_config_files_the_last_that_names_a_workspace_counts(tmp_path):
    first, second, third = (tmp_path / name for name in ("a.yaml", "b.yaml", "c.yaml"))
    first.write_text("workspace: runs/first\n")
    second.write_text("workspace: runs/second\n")
    third.write_text("iters: 5\n")
    assert configured_workspace([first, second, third]) == "runs/second"


def test_a_resume_that_swapped_its_own_tokens_for_another_file_changed_a_setting():
    """Only a move of the run's own learned tokens (both paths ``…/descriptor/learned_embeds
    .safetensors``) leaves the steps' settings as they were."""
    own = "/a/run/descriptor/learned_embeds.safetensors"
    moved = {"resumes": [{"step": 9, "changed": {"guidance.textual_inversion": [own, own[2:]]}}]}
    assert resumes_line(Path("config.json"), moved) is None
    other = {"resumes": [{"step": 9, "changed": {"guidance.textual_inversion": [own, "/x.bin"]}}]}
    line = resumes_line(Path("config.json"), other)
    assert line is not None and "guidance.textual_inversion at step 9" in line


def test_the_ascii_folder_of_earlier_versions_has_no_underscore_at_either_end():
    """The folder of "(A castle)" was ``a_castle``, as that of "A castle" (ASCII letters and
    digits, separators as one ``_``)."""
    assert ascii_slug("(A castle)") == "a_castle"
    assert ascii_slug("¡Crème brûlée!") == "cr_me_br_l_e"


def test_a_flag_in_a_prompts_file_is_named_by_its_line_number(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("a red cube\na blue sphere --iters 5\n")
    with pytest.raises(DreamtextError) as raised:
        read_prompt_lines(path)
    assert str(raised.value).startswith(f"{path}:2: '--iters' is a command-line flag")


def test_a_runs_config_json_that_lacks_the_guidance_names_cannot_tell():
    """A resumed run's config.json without ``negative`` (an older one): its presets fill it in,
    so this reading without torch says it cannot tell."""
    flags = {"model": None, "negative": None}
    assert layered_guidance(flags, None, None, base={"guidance": {"model": "m"}}) is None
    both = {"guidance": {"model": "m", "negative": "blurry"}}
    assert layered_guidance(flags, None, None, base=both) == {"model": "m", "negative": "blurry"}


def test_a_word_of_64_bytes_is_taken_and_one_of_65_refused():
    check_word_length("a" * 64, "--noun")
    check_word_length("é" * 32, "--noun")  # 64 bytes of UTF-8
    with pytest.raises(DreamtextError, match="is 65 bytes long"):
        check_word_length("a" * 65, "--noun")


def test_four_threads_a_cpu_are_taken_and_one_more_refused():
    check_thread_count(8, "--threads", cpus=2)
    with pytest.raises(DreamtextError, match="ask for at most 8"):
        check_thread_count(9, "--threads", cpus=2)


def test_a_slurm_task_of_no_cpus_is_not_taken_for_zero_threads(monkeypatch, tmp_path):
    monkeypatch.setattr(inputs, "CGROUP_ROOT", tmp_path)  # no quota here
    assert usable_cpus({"SLURM_CPUS_PER_TASK": "0"}, affinity=4) == (4, "affinity")
    assert usable_cpus({"SLURM_CPUS_PER_TASK": "3"}, affinity=4) == (3, "SLURM_CPUS_PER_TASK")


def test_a_slurm_task_between_the_arrays_steps_is_refused():
    """--array=0-6:2 has the tasks 0, 2, 4, 6 (shares 0/4 … 3/4); a task 3 is none of them."""
    env = {
        "SLURM_ARRAY_TASK_MIN": "0",
        "SLURM_ARRAY_TASK_MAX": "6",
        "SLURM_ARRAY_TASK_STEP": "2",
        "SLURM_ARRAY_TASK_COUNT": "4",
    }
    assert shard_from_environment({**env, "SLURM_ARRAY_TASK_ID": "4"}) == (2, 4)
    with pytest.raises(DreamtextError, match="not one of 4 evenly spaced tasks"):
        shard_from_environment({**env, "SLURM_ARRAY_TASK_ID": "3"})


def test_a_full_quota_is_named_as_a_full_disk_is(monkeypatch, tmp_path):
    quota = OSError(errno.EDQUOT, os.strerror(errno.EDQUOT), str(tmp_path))
    monkeypatch.setattr(inputs, "root_write_error", lambda root: quota)
    with pytest.raises(DreamtextError) as raised:
        inputs.check_root_writable(tmp_path)
    assert "free space on its disk (or quota) or pass a folder you can write to" in str(
        raised.value
    )


def test_a_blank_omp_num_threads_is_no_setting(monkeypatch, tmp_path):
    monkeypatch.setattr(inputs, "CGROUP_ROOT", tmp_path)  # no quota here
    assert inputs.cpu_threads(None, {"OMP_NUM_THREADS": " "}, affinity=3) == (3, "affinity")
    assert inputs.cpu_threads(None, {"OMP_NUM_THREADS": "2"}, affinity=3) == (
        None,
        "OMP_NUM_THREADS",
    )


def test_an_image_name_with_an_upper_case_suffix_is_a_path_not_a_prompt(tmp_path):
    missing = tmp_path.name + " photo.PNG"  # words with a space, but a picture's suffix
    with pytest.raises(DreamtextError) as raised:
        inputs.check_image_path(Path(missing))
    assert str(raised.value) == f"image not found: {missing} (check the path)"


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("lr: 0.01\nseed: !!int 1.5\n", "(line 2: int does not fit '1.5')"),
        ("lr: !!float fast\n", "(line 1: float does not fit 'fast')"),
        ("export: !!bool maybe\n", "(line 1: bool does not fit 'maybe')"),
        ("when: !!timestamp abc\n", "(line 1: timestamp does not fit 'abc')"),
        ("x: !!set [1]\n", "(a value its tag does not fit)"),
    ],
)
def test_a_tag_its_value_does_not_fit_is_one_line_not_a_traceback(tmp_path, text, why):
    """`seed: !!int 1.5` ended in a ValueError traceback (exit 1): the constructors of PyYAML's
    tags fail with Python errors, which the YAML error's line did not catch."""
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(DreamtextError) as raised:
        read_yaml(path)
    assert str(raised.value) == f"config file '{path}' is not valid YAML {why}; fix it"


def test_the_ascii_folder_cut_at_60_characters_has_no_underscore_at_its_end():
    """59 letters, a space and more: the first 60 characters of ``aaa…a_b…`` end at the ``_``,
    which the cut folder name of an earlier version does not keep."""
    assert ascii_slug("a" * 59 + " bcd") == "a" * 59
    assert ascii_slug("x" * 70) == "x" * 60


def test_a_resume_that_changed_the_iterations_of_an_annealed_run_changed_its_steps():
    """With ``guidance.t_anneal`` the timesteps' upper end shrinks with step / iters: a run of
    20 steps resumed to 40 drew steps 1-20 on the 20-step schedule, and a run from its
    config.json (40 steps from the start) is not that run again; without the anneal it is."""
    resumed = {"resumes": [{"step": 20, "changed": {"iters": [20, 40]}}]}
    assert resumes_line(Path("config.json"), {**resumed, "guidance": {"t_anneal": False}}) is None
    line = resumes_line(Path("config.json"), {**resumed, "guidance": {"t_anneal": True}})
    assert line is not None and "iters at step 20" in line


def test_a_utf16_prompts_file_with_letters_beyond_latin1_is_said_to_be_utf16(tmp_path):
    """UTF-16 without a byte order mark of "a Rīga castle": ī (U+012B) has no NUL byte, so
    fewer than half the bytes are NULs, yet it is UTF-16, not a line holding U+0000 to remove."""
    path = tmp_path / "prompts.txt"
    path.write_bytes("a Rīga castle\n".encode("utf-16-le"))
    with pytest.raises(DreamtextError, match="UTF-16 without a byte order mark"):
        inputs.read_prompt_lines(path)


def test_an_empty_prompts_file_is_not_said_to_be_utf16(tmp_path):
    """No NUL, no UTF-16: an empty file (0 NULs of 0 characters) is read as empty."""
    path = tmp_path / "prompts.txt"
    path.write_bytes(b"")
    assert inputs.read_prompt_lines(path) == [""]
