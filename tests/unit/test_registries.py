"""The API validates stage names without importing torch: its lists must match the worker's."""

from __future__ import annotations

from shared.options import INTERPOLATORS, UPSCALERS, JobOptions
from worker.pipeline import Options
from worker.stages.interpolate import INTERPOLATORS as WORKER_INTERPOLATORS
from worker.stages.upscale import UPSCALERS as WORKER_UPSCALERS


def test_stage_names_match_the_worker_registries() -> None:
    assert set(UPSCALERS) == set(WORKER_UPSCALERS)
    assert set(INTERPOLATORS) == set(WORKER_INTERPOLATORS)


def test_service_and_command_line_share_defaults_and_option_names() -> None:
    api = JobOptions()
    cli = Options()
    assert (api.upscaler, api.interpolator) == (cli.upscaler, cli.interpolator)
    assert (api.upscaler, api.interpolator) == ("faithful", "motion")
    # Every job option (but the webhook ones) reaches the pipeline under the same name.
    job_only = {"webhook_url", "webhook_events", "webhook_progress_step"}
    assert set(JobOptions.model_fields) - job_only <= set(Options.model_fields)
