"""Built-in prompt templates (package data)."""
