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


class DrainTimeout(MetadataError):
    """Task instances were still running or queued when the drain timeout expired."""
