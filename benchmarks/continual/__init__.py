"""Continual-learning axis: every measure as EWC importance against naive, L2 and joint."""
