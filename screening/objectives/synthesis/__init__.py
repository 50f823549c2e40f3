"""Silver-nanoparticle synthesis: objective, spectral loss, virtual lab, rounds, two-step network,
plots and SHAP explanations, all in this one folder.

``screening.objectives.synthesis:SynthesisObjective`` (the spec campaigns made before the
layout change store) still resolves through this re-export.
"""

from screening.objectives.synthesis.objective import INPUT_NAMES, SPECTRUM_COLUMNS, SynthesisObjective, synthesis_box

__all__ = ["INPUT_NAMES", "SPECTRUM_COLUMNS", "SynthesisObjective", "synthesis_box"]
