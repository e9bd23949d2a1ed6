"""Errors of the metadata engine. Each says what is wrong and that nothing was changed."""

from mwaa_control.errors import ControlPlaneError


class MetadataError(ControlPlaneError):
    """Base class of backup, restore and verification errors."""


class SealingError(MetadataError):
    """A secret could not be decrypted, sealed or unsealed."""


class BackupNotFound(MetadataError):
    """No complete backup (one with a manifest) at the given location."""


class BackupCorrupt(MetadataError):
    """A file of the backup does not match the manifest's checksum or row count."""


class SchemaMismatch(MetadataError):
    """The target database's schema revision differs from the backup's."""


class RestoreRefused(MetadataError):
    """The restore cannot proceed (missing keys, dangling references); the target was not changed."""


class BackupNotAuthentic(RestoreRefused):
    """The backup cannot be proved to be what its environment's backup writer wrote: no
    manifest.mac, a MAC that does not match, a data key KMS will not unwrap for the requested
    environment and backup id, or a manifest naming another backup. Nothing was changed."""


class UnsafePickle(RestoreRefused):
    """A pickled value holds something other than plain data (a call, a class, a persistent id):
    Airflow would run it when it unpickles the value. Nothing was changed."""


class DrainTimeout(MetadataError):
    """Task instances were still running or queued when the drain timeout expired."""
