"""Anonymize faces in clinical photographs, DICOM photos, folders, videos or a live camera.

Faces are found with YuNet (or dlib HOG/MMOD) and hidden with the chosen method. Measured against
SFace and dlib face recognition (docs/photo.md), only the default, a grey fill over the whole
head (hair and ears included), and ksame (k-Same surrogate faces, with YuNet's 5 points or
--landmarks 68, dlib's NON-COMMERCIAL model) are DE-IDENTIFYING. blur, pixelate, a face-only
region and the eye bar are COSMETIC: a recogniser still identifies people behind them. ksame
needs a folder holding at least k faces. Outputs carry pixels only (no EXIF/XMP/IPTC); video keeps its audio.

examples:
  defacer photo visit.jpg -o visit_anon.jpg
  defacer photo photos/ -o photos_anon/ --method ksame --k 3
  defacer photo consult.mp4 -o consult_anon.mp4
  defacer photo --camera 0 --max-frames 300
"""
from __future__ import annotations

NAME = "photo"
HELP = "anonymize faces in photos, DICOM photos, folders, video or a camera stream"


def add_arguments(parser) -> None:
    from DeFacerLib.cli.main import input_path, home_path
    from DeFacerLib.photo.anonymize import ROTATIONS
    from DeFacerLib.photo.detect import DEFAULT_SCORE, DETECTORS
    from DeFacerLib.photo.obscure import DEFAULT_METHOD, METHODS
    from DeFacerLib.photo.regions import REGIONS

    parser.add_argument("input", nargs="?", type=input_path, help="photo (.jpg .png .tif), DICOM photo, folder of photos, or video")
    parser.add_argument("-o", "--output", type=home_path, help="output file (or folder for a folder input); needed with an INPUT, optional with --camera (a recording: .mp4, .m4v or .mov)")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT_METHOD, help=f"how to hide faces (default {DEFAULT_METHOD})")
    parser.add_argument("--region", choices=REGIONS, help="part of the face to hide (default: head, hair included; bar always covers eyes)")
    parser.add_argument("--detector", choices=DETECTORS, default="yunet", help="face detector (default yunet)")
    parser.add_argument("--landmarks", choices=("5", "68", "auto"), default="5",
                        help="5 (default): YuNet points (permissive); 68: dlib predictor (NON-COMMERCIAL licence); "
                             "auto: 68 where dlib is installed, else 5")
    parser.add_argument("--k", type=int, help="k for --method ksame (default 3)")
    parser.add_argument("--rotations", choices=tuple(ROTATIONS), default="none",
                        help="also search rotated copies: upright (+-30 deg) or all (90, 180 too) (default: none)")
    defaults = ", ".join(f"{name} {DEFAULT_SCORE[name]:g}" for name in DETECTORS)
    parser.add_argument("--score", type=float, help=f"detector score threshold, lower finds more (default, recall first: {defaults})")
    parser.add_argument("--camera", metavar="SOURCE", type=home_path, help="anonymize a live stream: camera index (0), URL or file")
    parser.add_argument("--max-frames", type=int, metavar="N", help="stop the camera after this many frames (default: until the stream ends or Ctrl-C)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing outputs")


def label(de_identifying: bool) -> str:
    """What every summary line adds for a cosmetic method, so "faces hidden" is not read as de-identified."""
    from DeFacerLib.sharing_warnings import COSMETIC

    return "" if de_identifying else f" ({COSMETIC})"


def run(args) -> dict:
    from DeFacerLib.errors import UsageError
    from DeFacerLib.photo.anonymize import PhotoOptions, anonymize_camera, anonymize_path, is_de_identifying, summarize
    from DeFacerLib.photo.media import shown_source

    # options that would be ignored are refused: a user who asked for them meant something else
    if args.camera is not None and args.input:
        raise UsageError("give an INPUT or --camera SOURCE, not both")
    if args.max_frames is not None and args.camera is None:
        raise UsageError("--max-frames is for --camera; a video is read to its end")
    if args.k is not None and args.method != "ksame":
        raise UsageError(f"--k is for --method ksame (the method is {args.method})")
    if args.max_frames is not None and args.max_frames < 1:
        raise UsageError(f"--max-frames must be at least 1 (got {args.max_frames})")
    k = 3 if args.k is None else args.k
    if args.method == "ksame" and k < 2:  # checked before a whole folder is read and searched
        raise UsageError(f"--k must be at least 2 (got {k}); k=1 would leave every face as it is")
    options = PhotoOptions(method=args.method, region=args.region, detector=args.detector, landmarks=args.landmarks,
                           k=k, rotations=args.rotations, score_threshold=args.score)
    if args.camera is not None:
        source = int(args.camera) if args.camera.isdigit() else args.camera
        stats, _ = anonymize_camera(source, options, max_frames=args.max_frames, destination=args.output,
                                    overwrite=args.overwrite)
        de_identifying = is_de_identifying(options.method, options.region, options.landmarks)
        result = {"camera": shown_source(args.camera), "frames": stats.frames, "processing_fps": stats.fps,
                  "faces": stats.faces, "size": f"{stats.width}x{stats.height}", "method": options.method,
                  "de_identifying": de_identifying, "output": args.output}
        if not args.quiet and not args.json:
            print(f"{stats.frames} frames processed at {stats.fps} fps ({stats.width}x{stats.height}), "
                  f"{stats.faces} faces hidden, {options.method}{label(de_identifying)}")
        return result
    if not args.input or not args.output:
        raise UsageError("give an INPUT and -o OUTPUT (or --camera SOURCE)")
    reports = anonymize_path(args.input, args.output, options, overwrite=args.overwrite)
    if not args.quiet and not args.json:
        for report in reports:
            extra = f", {report.frames} frames, audio {'kept' if report.audio else 'none'}" if report.kind == "video" else ""
            print(f"{report.input} -> {report.output}: {report.faces} face(s), {report.method}"
                  f"{label(report.de_identifying)}{extra}" + (f"; {report.note}" if report.note else ""))
    return summarize(reports, args.input)
