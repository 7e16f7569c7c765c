"""Execution, on the driver side: the one sweep driver, the executors that run each job in a
fresh worker process (local zygote or spawn, Ray), the scaling frontier, and the nightly run."""
