"""The statistics behind graphqa's numbers and decisions: pure functions of arrays and tensors.

Nothing in this package reads or writes a file (``tests/test_layout.py`` checks its imports), so
each formula can be tested on hand-made arrays and reused by any stage worker:

- :mod:`graphqa.maths.metrics`: every reported metric, bootstrap intervals over targets;
- :mod:`graphqa.maths.evidence`: paired comparisons of two models on the same targets;
- :mod:`graphqa.maths.calibration`: rescaling, thresholds and target-grouped conformal intervals;
- :mod:`graphqa.maths.flt`: feature-group scores and the keep-fraction recommendation of FLT.
"""
