"""The worker side: one job in its own process (torch is imported here and nowhere on the
driver side).

``process`` is the process entry (a fresh interpreter, or a child forked from the zygote);
``job`` turns a :class:`~seqbench.config.job.Job` into a row; ``train``, ``measure``,
``scale`` and ``peaks`` do the work; ``models`` and ``data`` hold the architectures and the
tasks, one file per family or kind of data.
"""
