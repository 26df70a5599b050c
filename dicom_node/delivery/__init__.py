"""Sending results back: C-STORE SCU and STOW-RS, with retries and a dead letter."""
