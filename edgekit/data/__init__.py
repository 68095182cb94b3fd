"""Texts shipped with edgekit (see README.md in this folder for where each comes from).

``training_text``: what the tiny test models are trained on. ``gate_text``: what the quality gate measures
on, a different text, so a tiny model is never judged on the words it memorised.
"""

from __future__ import annotations

from importlib import resources


def training_text() -> str:
    return resources.files(__name__).joinpath("corpus.txt").read_text(encoding="utf-8")


GATE_TEXT_NAME = "alice29.txt (Alice's Adventures in Wonderland, Canterbury corpus)"


def gate_text() -> str:
    return resources.files(__name__).joinpath("alice29.txt").read_text(encoding="utf-8")
