"""Who is this: the gallery of enrolled people (SQLite), matching, enrolment, and per-track aggregation."""
