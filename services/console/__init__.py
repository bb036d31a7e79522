"""The web console (issue 15): server-rendered pages over the services' public HTTP APIs."""
