"""What the built-in prior (``--model builtin:shapes``) can draw: its shapes and colours, and
the captions that name them, without torch.

:mod:`dreamtext.shapes` renders these objects and :mod:`dreamtext.prior` denoises towards them;
the CLI checks a prompt against the same captions (:func:`check_builtin_prompts`) before it
imports torch, so that a prompt the prior cannot draw is its one line at once, not after the
prior's dataset has loaded.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass
from pathlib import Path

from dreamtext.errors import DreamtextError, shorten
from dreamtext.prompts_text import shows_nothing

BUILTIN_MODELS = ("builtin:shapes",)
"""The ``--model`` names of the built-in priors."""

SHAPES: tuple[str, ...] = ("cube", "sphere", "cylinder", "cone", "torus")

# Linear RGB albedo of each colour name.
COLOURS: dict[str, tuple[float, float, float]] = {
    "red": (0.85, 0.15, 0.15),
    "green": (0.15, 0.70, 0.20),
    "blue": (0.15, 0.30, 0.85),
    "yellow": (0.90, 0.80, 0.10),
    "orange": (0.95, 0.50, 0.10),
    "purple": (0.55, 0.20, 0.75),
}

COLORFUL = "colorful"


@dataclass(frozen=True)
class Primitive:
    """One caption's object: a shape and a colour name (or ``"colorful"`` for the cube)."""

    shape: str
    colour: str

    @property
    def caption(self) -> str:
        """``"a red cube"``; the article follows English (``"an orange cone"``)."""
        article = "an" if self.colour[0] in "aeiou" else "a"
        return f"{article} {self.colour} {self.shape}"


def primitives() -> list[Primitive]:
    """Every object the prior knows: each colour × each shape, then the colorful cube."""
    objects = [Primitive(shape, colour) for colour in COLOURS for shape in SHAPES]
    return [*objects, Primitive("cube", COLORFUL)]


def captions() -> list[str]:
    """The captions of :func:`primitives`, in the same order."""
    return [p.caption for p in primitives()]


def captions_in_words() -> str:
    """The captions of :func:`captions` in one short phrase, for a message that cannot list all
    of them: ``"a COLOUR SHAPE" (COLOUR: red, …; SHAPE: cube, …) or "a colorful cube"``."""
    return (
        f'"a COLOUR SHAPE" (COLOUR: {", ".join(COLOURS)}; SHAPE: {", ".join(SHAPES)}) or '
        f'"a {COLORFUL} cube"'
    )


def normalise_caption(prompt: str) -> str:
    """Lower case, single spaces, no final full stop, the right article ("a orange" → "an"),
    compatibility forms as their plain letters (NFKC: a full-width "ａ") and no invisible format
    characters (Unicode category Cf: a zero-width space, a byte-order mark from a file read with
    ``"$(cat prompt.txt)"``, a soft hyphen), which made a caption the refusal then quoted as one it
    lists look unknown. A format character that draws a mark (an end of ayah, ``"\u06dd"``) is
    text, no caption's (:func:`dreamtext.prompts_text.shows_nothing`)."""
    visible = "".join(c for c in prompt if c.isspace() or not shows_nothing(c))
    words = unicodedata.normalize("NFKC", visible).strip().rstrip(".").lower().split()
    if len(words) == 3 and words[0] in ("a", "an"):
        words[0] = "an" if words[1][0] in "aeiou" else "a"
    return " ".join(words)


def find_primitive(prompt: str) -> Primitive:
    """The primitive a caption names; a :class:`DreamtextError` listing the captions otherwise."""
    wanted = normalise_caption(prompt)
    for primitive in primitives():
        if primitive.caption == wanted:
            return primitive
    raise DreamtextError(
        f'the built-in prior does not know "{prompt}"; use one of its captions: '
        f"{captions_in_words()}"
    )


def check_builtin_prompts(model: str, prompt: str, negative: str) -> None:
    """With a built-in prior, the prompt and the negative prompt are captions it knows
    (:func:`find_primitive`, in the order :meth:`dreamtext.prior.ShapesPrior.set_prompt` asks);
    a blank one stands for every image and is not asked. Other models take any prompt."""
    if model not in BUILTIN_MODELS:
        return
    if not shows_nothing(prompt):  # an invisible one is refused as empty (config.validate)
        find_primitive(prompt)
    check_builtin_negative(negative)


def check_builtin_negative(negative: str) -> None:
    """A built-in prior's negative prompt is blank or one of its captions: its refusal names
    the negative prompt (``--negative`` or a config's ``guidance.negative``), where the prompt
    may be a caption it knows."""
    if shows_nothing(negative):  # an invisible one is refused as such (config.validate)
        return
    try:
        find_primitive(negative)
    except DreamtextError as error:
        raise DreamtextError(
            f"the negative prompt (--negative, guidance.negative): {error} (or leave it empty)"
        ) from None


def needs_stable_diffusion(model: str, what: str) -> None:
    """``what`` (image→3D, ``--diverse``) needs a Stable Diffusion ``model``: a built-in prior
    has no text encoder or image sampler. Asked by :mod:`dreamtext.imageto3d`, and by the CLI
    before it imports torch."""
    if model.startswith("builtin:"):
        raise DreamtextError(
            f"{what} needs a Stable Diffusion model, not {model}; pass --model with a diffusers "
            "Stable Diffusion hub id or folder"
        )


# How many of the prompts the built-in prior does not know the batch's line names.
UNKNOWN_PROMPTS_SHOWN = 3


def check_builtin_prompt_lines(
    model: str, lines: list[tuple[int, str]], negative: str, prompts_file: Path
) -> None:
    """With a built-in prior, ``--negative`` and every text line of a prompts file, ``(line
    number, prompt)``, are captions it knows (:func:`find_primitive`): one line names the lines
    it does not know (the first :data:`UNKNOWN_PROMPTS_SHOWN`). ``dreamtext batch`` asks it
    (:func:`dreamtext.batch.check_builtin_prior`), and the CLI before it imports torch."""
    if model not in BUILTIN_MODELS:
        return
    check_builtin_negative(negative)
    known = set(captions())  # as find_primitive matches them
    unknown = [
        (number, prompt) for number, prompt in lines if normalise_caption(prompt) not in known
    ]
    if not unknown:
        return
    shown = [
        f'{number} ("{shorten(prompt, 40)}")' for number, prompt in unknown[:UNKNOWN_PROMPTS_SHOWN]
    ]
    more = len(unknown) - len(shown)
    which = ", ".join(shown) + (f" and {more} more line{'s' if more > 1 else ''}" if more else "")
    many = len(unknown) > 1
    raise DreamtextError(
        f"{prompts_file}: {model} does not know the prompt{'s' if many else ''} of "
        f"line{'s' if many else ''} {which}; it knows {captions_in_words()}: change "
        f"{'those lines' if many else 'that line'}, or pass --model with a Stable Diffusion "
        "model (a diffusers hub id or folder)"
    )


__all__ = [
    "BUILTIN_MODELS",
    "COLORFUL",
    "COLOURS",
    "SHAPES",
    "Primitive",
    "captions",
    "captions_in_words",
    "check_builtin_prompt_lines",
    "check_builtin_prompts",
    "find_primitive",
    "needs_stable_diffusion",
    "normalise_caption",
    "primitives",
]
