"""What the DeFacer Slicer module does, without its widgets.

``logic.DeFacerLogic`` works on any MRML scene: inside Slicer (the module's Logic adds the
parameter node on top of it), in ``Slicer --no-main-window`` batch runs, and on the MRML
classes of the ``slicer-core`` wheel in the test suite. It imports numpy, vtk and the MRML
classes only; DeFacerLib does the work. ``packages`` lists the optional Python packages.
"""
