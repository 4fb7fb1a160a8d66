"""Where the shipped example buildings, sites and data live (the repository's `config/`)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONFIG = ROOT / "config"
BUILDINGS = CONFIG / "buildings"
SITES = CONFIG / "sites"
DATA = CONFIG / "data"
