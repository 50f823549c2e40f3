"""The acquisition framework: domains, GP surrogate, acquisitions, strategies, campaigns.

Public API (import from the submodules):

- ``screening.bo.domain``: ``DiscretePool``, ``Box``, ``LinearConstraint``, ``BoundaryExpansion``
- ``screening.bo.surrogate``: ``GPSurrogate`` (Matérn-5/2 ARD, standardised outputs)
- ``screening.bo.acquisition``: EI / logEI / UCB / PI, window probability, folded EI,
  local penalisation
- ``screening.bo.strategy``: ``Strategy``, ``Target``, ``suggest_pool``, ``suggest_box``
- ``screening.bo.campaign``: ``Campaign`` (ask / tell / run, stop rules, history)
- ``screening.bo.store``: ``CampaignStore`` (SQLite, crash-safe)
"""
