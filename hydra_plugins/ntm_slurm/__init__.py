"""hydra/launcher=slurm: Hydra's SLURM launcher where a job SLURM stops is one failed trial (launcher.py)."""
