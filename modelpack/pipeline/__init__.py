"""The stages between a loaded model directory and a build context: settings, validate, resolve, lock, render."""
