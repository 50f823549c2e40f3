"""Names of the prediction columns `matscreen featurize` writes with the shipped multi-task model.

One home for the names that readers downstream filter and search on (the band-gap pool, the
screen ranking), so a rename cannot leave one reader behind. ``featurize`` derives them from the
model's output names (``pred_<output>``, ``pred_<first>_std``).
"""

PRED_BAND_GAP = "pred_band_gap"
PRED_BAND_GAP_STD = "pred_band_gap_std"
PRED_FORMATION_ENERGY = "pred_formation_energy_per_atom"
