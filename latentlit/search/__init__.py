"""Search: what spends the N trajectories of a question (N-way sampling, adaptive rounds, latent
beam search, DVTS)."""
