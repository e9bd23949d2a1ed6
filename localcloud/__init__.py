"""The local cloud every test and the demo run on: moto for the AWS services it has, an MWAA
emulator of our own, and in-process Lambda dispatch to the real handlers. Never deployed."""

from localcloud.clock import ManualClock
from localcloud.cloud import LocalCloud

__all__ = ["LocalCloud", "ManualClock"]
