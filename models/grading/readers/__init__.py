"""Readers for the public datasets the grader can be trained or checked on."""
