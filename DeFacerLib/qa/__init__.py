"""Quality assurance: pictures of what is left of a face after defacing.

``render`` extracts the skin surface of any head Volume (world LPS mm), finds where the
face is from the head's own shape, and renders it offscreen from named views; ``figure``
lays before/after renders side by side in one PNG. The re-identification check of `defacer qa`
is ``check.check_pair`` and its report ``report.write_report`` (docs/qa.md).
"""
from DeFacerLib.qa.figure import before_after_figure
from DeFacerLib.qa.render import (
    DEFAULT_VIEWS,
    FaceBox,
    FaceDirection,
    RenderError,
    detect_faces_yunet,
    face_direction,
    face_direction_details,
    render_before_after,
    render_views,
    save_png,
    skin_fraction,
    skin_surface,
    skin_threshold,
    surface_area_mm2,
    surface_points_mm,
    view_directions,
    yunet_model_path,
)

__all__ = [
    "DEFAULT_VIEWS",
    "FaceBox",
    "FaceDirection",
    "RenderError",
    "before_after_figure",
    "detect_faces_yunet",
    "face_direction",
    "face_direction_details",
    "render_before_after",
    "render_views",
    "save_png",
    "skin_fraction",
    "skin_surface",
    "skin_threshold",
    "surface_area_mm2",
    "surface_points_mm",
    "view_directions",
    "yunet_model_path",
]
