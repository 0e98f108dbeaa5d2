"""What the host gives a run: atomic writes, the CPUs this process may use, signals turned
into clean stops, and a description of the machine.  Plain Python, no numba: every other
layer may use it, and it uses none of them."""
