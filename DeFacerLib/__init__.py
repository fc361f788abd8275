"""DeFacer: remove what identifies a patient's face from medical data, and prove it.

Pure Python; never imports slicer, qt or ctk. See README.md for the command line.
"""
from DeFacerLib.volume import SourceInfo, Volume

__version__ = "0.1.0"
__all__ = ["Volume", "SourceInfo", "__version__"]
