"""The operator server: questions for the operator (and between agents), with deadlines."""
