"""Sampling from a generator: classifier-free guidance (the one place its arithmetic lives), the KV-cached sampler, the static-shape fast decoder."""
