"""Schedules for a fleet: when each environment should run (model, evaluate), which environments
follow which schedule (config), and what the paused hours save (pricing)."""
