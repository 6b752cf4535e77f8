"""What a model says about a text: evaluation, per-character probes, loss plots, compression."""
