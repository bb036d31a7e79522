"""ingest: HTTP intake of CloudEvents, tenant auth, validation, produce."""
