"""The facial features DeFacer removes, and the one label numbering used everywhere.

Label files (``--features-from``), the phantom's ground truth and the U-Net's classes all
use these values, so a label map from any of them means the same thing.
"""

FEATURES = ("eyes", "nose", "mouth", "ears")
BRAIN = "brain"

LABEL_VALUES = {"eyes": 1, "nose": 2, "mouth": 3, "ears": 4, "brain": 5}


def parse_features(text: str) -> tuple[str, ...]:
    """'eyes,nose' -> ('eyes', 'nose'); 'all' -> every feature; unknown names are an error."""
    if text.strip().lower() in ("", "all"):
        return FEATURES
    names = tuple(dict.fromkeys(part.strip().lower() for part in text.split(",") if part.strip()))
    if not names:  # "," or ", ,": it ran the whole model, then said "the face was not found (missing: )"
        raise ValueError(f"--features {text!r} names no feature; choose from {', '.join(FEATURES)} (or 'all')")
    unknown = [name for name in names if name not in FEATURES]
    if unknown:
        raise ValueError(f"unknown feature(s) {', '.join(unknown)}; choose from {', '.join(FEATURES)}")
    return names
