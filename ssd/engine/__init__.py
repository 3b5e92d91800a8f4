"""Training: the trainer, its learning-rate schedules, the learning-rate range test."""
