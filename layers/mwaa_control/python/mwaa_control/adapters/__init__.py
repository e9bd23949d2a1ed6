"""Adapters shared by every capability: boto3 clients, the MWAA directory and the lease lock."""
