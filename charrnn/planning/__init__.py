"""Planning a run for its text, device and minutes: measured speeds and the choice of shape."""
