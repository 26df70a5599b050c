"""Celery app, tasks and the command line: the only package that joins node and models."""
