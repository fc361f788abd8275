"""The facial features DeFacer removes, the one label numbering used everywhere, and how far
the removal reaches by default.

Label files (``--features-from``), the phantom's ground truth and the U-Net's classes all
use these values, so a label map from any of them means the same thing.
"""
from __future__ import annotations

from collections.abc import Iterable

FEATURES = ("eyes", "nose", "mouth", "ears")
BRAIN = "brain"

LABEL_VALUES = {"eyes": 1, "nose": 2, "mouth": 3, "ears": 4, "brain": 5}

# How far the removal reaches by default (DeFacerLib.deface.removal uses them; they live here,
# with no import behind them, so that `deface --help` can show them without loading the engine).
DEFAULT_MARGIN_MM = 10.0
DEFAULT_MAX_DEPTH_MM = 25.0
DEFAULT_PROTECT_MARGIN_MM = 5.0
# The pinna stands off the head, so 10 mm takes all of it; deeper, above and in front of the
# ear, the temporal lobe lies 13-17 mm under the skin (on held-out IXI heads a 25 mm cut
# there reached 40 reference-brain voxels the predicted brain had missed).
EARS_MAX_DEPTH_MM = 10.0
# A cut filled with air alone exposes what lies behind it: sinuses, nasal cavity, orbits and
# bone are darker than the skin threshold, and their cross-section still reads as a face to a
# detector. So the deepest layer of each cut (inside the cut, never beyond it) is set to the
# head's typical tissue value (air.tissue_value): the new skin surface is the cut itself.
DEFAULT_SEAL_MM = 6.0
# and at least this many voxels: renderers smooth before the isosurface (DeFacer's QA by 0.8
# voxel or more), and a 1-2 voxel seal over an open cavity (the nasal cavity, at 2 mm) blurs
# below the skin threshold, so the render looks through it again.
SEAL_MIN_VOXELS = 3
# The whole face's box (face_cut.py says why) is on by default; the shield (shield.py) is not: it
# adds tissue to the image, and docs/reid_study.md measures what each buys against an attacker.
DEFAULT_WHOLE_FACE = True
DEFAULT_SHIELD = False


def parse_features(names: str | Iterable[str]) -> tuple[str, ...]:
    """'nose,eyes' or ("nose", "eyes") -> ('eyes', 'nose'); 'all' -> every feature; a name
    that is no feature is a UsageError. The one check behind --features, DefaceParameters and the
    Slicer module's ticked boxes (each had its own, and DefaceParameters(features="eyes") was
    refused letter by letter).

    A set, in FEATURES' order: the names as typed went into the output's header note, the
    sidecar and batch's settings, so "nose,eyes" gave other bytes than "eyes,nose" for the same
    voxels, and a batch rerun redid every item.

    None named is an error too, not 'all': `--features "$FEATURES"` with the variable unset
    is a slip in a script, and the user should hear of it rather than get a choice made for them.
    """
    from DeFacerLib.errors import UsageError, check_choices

    parts = names.split(",") if isinstance(names, str) else list(names)  # read once: a generator
    wanted = tuple(dict.fromkeys(str(part).strip().lower() for part in parts if str(part).strip()))
    if wanted == ("all",):
        return FEATURES
    if not wanted:  # "," or ", ,": it ran the whole model, then said "the face was not found (missing: )"
        raise UsageError(f"no feature chosen to remove; choose from {', '.join(FEATURES)} (or 'all')")
    check_choices("feature", wanted, FEATURES)
    return tuple(name for name in FEATURES if name in wanted)
