"""A kernel-probe child standing in for a CPU with defective kernels (no such CPU exists on this machine).

It is the real child (real llama.cpp, real models) with two faults injected under the *default* configuration
only, as a defective extra-buffer kernel would show them: Q5_0 dies by SIGSEGV inside the run, and IQ4_NL
returns numbers far from the right ones. The safe configuration runs untouched. (Families without AMX kernels, so
the test means the same on an AMX Xeon, where the real AMX families crash by themselves.)
"""
import os
import signal
import sys

from edgellm.kernel_probe import child_main

CONFIG = sys.argv[sys.argv.index("--config") + 1]
CRASH = os.environ.get("FAULTY_PROBE_CRASH", "Q5_0")
WRONG = os.environ.get("FAULTY_PROBE_WRONG", "IQ4_NL")
BOTH = os.environ.get("FAULTY_PROBE_BOTH", "")  # families faulty under the safe configuration too


def tamper(family: str, rows: list) -> None:
    if CONFIG == "default" or family in BOTH.split(","):
        if family == CRASH:
            os.kill(os.getpid(), signal.SIGSEGV)
        if family == WRONG:
            rows[:] = [[3.0 * v + 1.0 for v in row] for row in rows]


sys.exit(child_main(sys.argv[1:], tamper=tamper))
