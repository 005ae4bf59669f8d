"""qfbridge core package, shipped in the Lambda layer."""
