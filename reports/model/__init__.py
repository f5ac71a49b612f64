"""The scaling model: presets, measurements, the step model, estimates, validation."""
