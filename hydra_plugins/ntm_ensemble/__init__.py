"""A Hydra launcher that trains a sweep's jobs which differ only in seed as one ensemble.

`hydra/launcher=ensemble` composes each job of a batch, groups the jobs whose task configs
differ at most in `seed`, and trains each group in one process with ntm.train.train_together
(one model with a leading member dimension); groups run in parallel worker processes. Every job
still gets its own run folder, .hydra/ record, pruning reporter and JobReturn, as with Hydra's
basic or joblib launcher.
"""
