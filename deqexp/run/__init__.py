"""The experiment runner: the config schema and its validation, building a job's data and
model, the training loop and optimiser, checkpoints, CSV and W&B logging, the non-training
tasks (E4 agreement, E5 timing), and re-evaluating a finished run."""
