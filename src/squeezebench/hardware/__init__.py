"""Facts about the machine that measures read and nothing registers: the CPU model, what other processes do on our
cores (``contention``: a probe around a window), the memory copy bandwidth (``bandwidth``: the decode roofline).

Helpers, not measures: ``measures/`` (its contention and generation measures), ``tasks/`` (the causal LM's decode
roofline) and the environment section all read them; this package imports nothing of squeezebench's."""
