#!/bin/sh
# Install the system programs DeFacer uses beyond its Python wheels: Tesseract OCR (for the
# DICOM Clean Pixel Data option). Idempotent: does nothing when tesseract is already on PATH.
# Uses apt-get when run as root on Debian/Ubuntu; otherwise says what to run.
set -eu

if command -v tesseract >/dev/null 2>&1; then
    echo "tesseract present: $(tesseract --version 2>&1 | head -n 1)"
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "tesseract is missing and apt-get is not available; install Tesseract OCR with your package manager" >&2
    exit 1
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "tesseract is missing; run: sudo apt-get update && sudo apt-get install -y tesseract-ocr" >&2
    exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends tesseract-ocr
echo "installed: $(tesseract --version 2>&1 | head -n 1)"
