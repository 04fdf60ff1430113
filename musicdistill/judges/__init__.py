"""Frozen models that judge generations: the shared log-mel front end, reward embedder, text-audio scorer, attribute oracle, spectral features, judging codes."""
