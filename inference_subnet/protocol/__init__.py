"""The Task API, the btauth/1 signed-request protocol and shared wire models."""
