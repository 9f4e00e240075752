"""The ``durabletask`` command-line tool: inspect and manage instances, entities and schedules.

Built on ``durabletask.client.TaskHubGrpcClient``; run ``durabletask --help`` for the commands.
``main(argv)`` runs one command and returns its exit code (see ``durabletask.cli.errors``).
"""

from durabletask.cli.main import main

__all__ = ["main"]
