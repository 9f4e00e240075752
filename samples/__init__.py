"""Runnable samples. Each module has ``register(worker)``, ``run(client)`` and ``main()``."""
