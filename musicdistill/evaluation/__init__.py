"""Comparing systems: system specs, the evaluation run and its set-up, metrics with paired bootstrap intervals, fronts, the Pareto plot, the claims."""
