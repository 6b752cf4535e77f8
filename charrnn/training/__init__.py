"""Training runs: the loop, its state and checkpoints' run folder, resume and fine-tuning,
torchrun, the schedule, previews, and `tune`'s search over runs."""
