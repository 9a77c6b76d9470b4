"""A Hydra sweeper that owns Optuna's ask/tell loop, so sweep jobs can be pruned.

hydra-optuna-sweeper never hands a job its trial (Hydra issues 1710, 1954). This sweeper
(`hydra/sweeper=ntm_optuna`) takes the same search-space syntax and samplers, and adds:
- pruning: each job gets its trial through `hydra.job.env_set` and reports to it (ntm.pruning);
- `n_trials` as the study's total: a rerun asks only for what is missing, retrying failed
  trials and trials left running by a killed sweep (found by their stale heartbeats);
- grids walked by the sweeper itself, in command-line order, a failed point asked again
  (each point's parameters enqueued: optuna's GridSampler would count it as visited).
"""
