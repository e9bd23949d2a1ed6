"""Pause and resume of MWAA environments: snapshot, back up, delete; recreate identically, restore."""
