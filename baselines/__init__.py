"""Training-based unlearning baselines: one file per method, one shared loop (`trainer.py`) and losses (`losses.py`)."""
