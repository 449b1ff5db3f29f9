"""The copy engine: copying one object between two stores, planned, parallel, bounded in memory
and verified end to end.

Owns: the planner (pure), the transfer (server-side | parts under a byte budget | single put),
hashing (pure), the cross-cloud metadata mapping and replica marks, the one retry policy,
multipart-upload housekeeping, and the units operators write sizes and durations in.

May import: ``connectors`` (the store interface and ``open_store``) and ``replicator.errors``.
Knows nothing of Kafka, routes or the catalog's tables: a caller that wants a copy resumed after
a crash hands it an ``UploadJournal``.
"""
