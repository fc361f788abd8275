"""Head geometry and guarded removal: the head mask, skin depth, air value, removal engine.

    head = head_mask(volume)
    defaced, report = remove_features(volume, {"eyes": eyes, "nose": nose}, protected=brain, head=head)

No voxel inside ``protected`` ever changes: ``remove_features`` checks it byte for byte and
raises GuaranteeError instead of returning a volume that breaks it.
"""
from DeFacerLib.deface.air import air_value
from DeFacerLib.deface.head_mask import head_mask
from DeFacerLib.deface.removal import (
    DEFAULT_MARGIN_MM,
    DEFAULT_MAX_DEPTH_MM,
    DEFAULT_PROTECT_MARGIN_MM,
    EARS_MAX_DEPTH_MM,
    FeatureRemoval,
    RemovalReport,
    changed_region_mask,
    feature_max_depth_mm,
    remove_features,
    verify_protected_unchanged,
)
from DeFacerLib.deface.skin_depth import skin_depth_mm

__all__ = [
    "DEFAULT_MARGIN_MM",
    "DEFAULT_MAX_DEPTH_MM",
    "DEFAULT_PROTECT_MARGIN_MM",
    "EARS_MAX_DEPTH_MM",
    "FeatureRemoval",
    "RemovalReport",
    "air_value",
    "changed_region_mask",
    "feature_max_depth_mm",
    "head_mask",
    "remove_features",
    "skin_depth_mm",
    "verify_protected_unchanged",
]
