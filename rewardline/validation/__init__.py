"""Validation: Great Expectations suites, inter-annotator agreement, annotator exclusion."""
