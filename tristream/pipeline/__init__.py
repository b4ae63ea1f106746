"""Beam wiring: options, one DoFn per stage, shard sinks and the runner set-up."""
