"""The one runtime every service runs on.

consume a batch -> apply it -> store effects, offsets and outbox rows in one
Postgres transaction -> relay the outbox to Kafka in order. Plus the CloudEvents
codec, the dead-letter policy, tenant keys, metrics and the HTTP base app.
"""
