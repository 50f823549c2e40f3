"""The band-gap objective: a pool of featurised crystals, its campaign directory and report.

``screening.objectives.bandgap:BandGapPoolObjective`` (the path campaigns made before the
layout change may name) still resolves through this re-export.
"""

from screening.objectives.bandgap.objective import BandGapPool, BandGapPoolObjective, load_known, load_pool

__all__ = ["BandGapPool", "BandGapPoolObjective", "load_known", "load_pool"]
