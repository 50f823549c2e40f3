"""The acquisition framework: domains, GP surrogate, acquisitions, strategies, campaigns.

Public API (import from the submodules):

- ``screening.bo.domain``: ``DiscretePool``, ``Box``, ``LinearConstraint``, ``BoundaryExpansion``
- ``screening.bo.surrogate``: ``GPSurrogate`` (Matérn-5/2 ARD, standardised outputs)
- ``screening.bo.acquisition``: EI / logEI / UCB / PI, window probability, folded EI,
  local penalisation
- ``screening.bo.strategy``: ``Strategy``, ``Target`` (the settings)
- ``screening.bo.suggest``: ``suggest_pool``, ``suggest_box`` (dispatch); the work behind them in
  ``screening.bo.fitting`` (``fit_surrogate``, ``refit_size``, ``acquisition_scores``),
  ``screening.bo.optimise_pool`` (local penalisation, qLogEI, Thompson over a finite candidate
  set) and ``screening.bo.optimise_box`` (the box batch, SLSQP refinement)
- ``screening.bo.campaign``: ``Campaign`` (ask / tell / run, stop rules, history)
- ``screening.bo.store``: ``CampaignStore`` (SQLite, crash-safe)
"""
