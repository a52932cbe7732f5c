"""Facts about the machine and this process that measures read and nothing registers: the CPU model (``cpu``),
resident memory now and at peak (``memory``), what other processes do on our cores (``contention``: a probe around
a window), the memory copy bandwidth (``bandwidth``: the decode roofline).

Helpers, not measures: ``measures/`` (environment, memory, contention), ``tasks/`` (the causal LM's decode roofline)
and ``isolation`` (the parent's peak RSS) read them; this package imports nothing of squeezebench's."""
