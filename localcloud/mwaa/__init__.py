"""MWAA emulator: environments with the real API shape and lifecycle, reachable by boto3."""

from localcloud.mwaa.emulator import CREATABLE_VERSIONS, EmulatedEnvironment, MwaaApiError, MwaaEmulator, Timings

__all__ = ["CREATABLE_VERSIONS", "EmulatedEnvironment", "MwaaApiError", "MwaaEmulator", "Timings"]
