"""hydra/launcher=slurm: hydra-submitit-launcher's SLURM launcher, where a job that SLURM stops
is one failed trial, not the end of the sweep.

Hydra's launcher submits a batch of jobs and returns `[job.results()[0] for job in jobs]`: a job
that SLURM cancels, kills for its memory or loses with its node leaves no result, so its error
is raised out of the whole batch and the sweep stops. This one launches each job of the batch
through that same public `launch`, one job per call, all at once (one waiting thread each), and
turns a job without a result into a failed JobReturn carrying submitit's error, which names
SLURM's state (e.g. "CANCELLED by 0"): the sweeper records a failed trial and goes on, and the
next run of the sweep asks for it again. Jobs whose task raised already come back as failed
JobReturns from Hydra's run_job. Each job is its own sbatch submission (no job arrays).
"""

import logging
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor

from hydra.core.utils import JobReturn, JobStatus
from hydra_plugins.hydra_submitit_launcher import submitit_launcher

log = logging.getLogger(__name__)


class SlurmLauncher(submitit_launcher.SlurmLauncher):
    def launch(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> Sequence[JobReturn]:
        launch_one = super().launch
        with ThreadPoolExecutor(max_workers=len(job_overrides)) as pool:
            futures = [pool.submit(launch_one, [overrides], initial_job_idx + i) for i, overrides in enumerate(job_overrides)]
            return [self.job_return(future, overrides) for future, overrides in zip(futures, job_overrides)]

    @staticmethod
    def job_return(future: Future, overrides: Sequence[str]) -> JobReturn:
        try:
            return future.result()[0]
        except Exception as error:  # the job left no result: SLURM stopped it, or it died
            log.warning("Job %s left no result: %s", " ".join(overrides), error)
            failed = JobReturn(overrides=list(overrides), status=JobStatus.FAILED)
            failed.return_value = error
            return failed
