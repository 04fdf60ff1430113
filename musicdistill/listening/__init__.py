"""Blind listening tests: the shared vocabulary, export, the static rating page, analysis of ratings, the summary."""
