"""Doing it: the runner, the journal, the run folder, progress, notifications and the command-line interface."""
