"""Every flag and config key that an out-of-memory line names as a fix, checked to exist."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from dreamtext.config import FieldConfig, resolve_config
from dreamtext.inputs import config_file_stage_sections
from dreamtext.renderer import RenderConfig

TRAIN_SECTIONS = {"field": FieldConfig(), "render": RenderConfig()}


def named_fixes_exist(
    line: str, argv: list[str], tmp_path: Path, workspace: Path | None = None
) -> list[str]:
    """Every flag and config key that ``line`` names as a fix, checked to exist, in the order
    named; returns them. A fix is a piece of the line between ``,``, ``;`` and ``:``: one that
    starts with flags (``--device cpu --fp32 (without --fp16)``: the flag to leave out is not
    one to give) is parsed by the real parser after ``argv`` (``["text", "a red cube"]``). A key
    ``field.NAME`` or ``render.NAME`` is set in a --config to another value than its default
    and must come out of ``resolve_config`` so; ``image_to_3d.STAGE.NAME`` is set to 1 and must
    come out of the image options resolved for ``workspace``."""
    from dreamtext.cli import build_parser
    from dreamtext.imageto3d import resolve_image_options

    checked = []
    for fix in re.split(r"[,;:]", line):
        fix = fix.strip()
        if fix.startswith("--"):
            flags = re.sub(r" \(without --[a-z0-9-]+\)", "", fix).split()
            build_parser().parse_args([*argv, *flags])
            checked += flags
        for key in re.findall(r"\b(?:field|render|image_to_3d)\.[a-z0-9_.]*[a-z0-9]", fix):
            config = tmp_path / "named_fix.yaml"
            if key.startswith("image_to_3d."):
                _, stage, name = key.split(".")
                config.write_text(yaml.safe_dump({"image_to_3d": {stage: {name: 1}}}))
                sections = config_file_stage_sections(config)
                resolved = resolve_image_options({"configs": sections}, workspace)
                assert getattr(getattr(resolved, stage), name) == 1, key
            else:
                section, name = key.split(".")
                default = getattr(TRAIN_SECTIONS[section], name)
                value = not default if isinstance(default, bool) else default
                if isinstance(default, (int, float)) and not isinstance(default, bool):
                    value = type(default)(max(default // 2, 1))
                config.write_text(yaml.safe_dump({section: {name: value}}))
                resolved = resolve_config({"prompt": "a red cube"}, config_file=config)
                assert getattr(getattr(resolved, section), name) == value, key
            checked.append(key)
    return checked
