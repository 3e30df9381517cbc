"""Service functions: the API's logic, called by thin routes."""
