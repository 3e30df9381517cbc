"""Workers: Celery tasks, the chunk pipeline, its stages and the networks they run."""
