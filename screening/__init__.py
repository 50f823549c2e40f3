"""matscreen: graph-network materials screening with Bayesian-optimisation campaigns."""

__version__ = "0.1.0"
