"""Data: reading and checking FASTA/CSV records, splitting them over sites, tasks,
batching, the antibody tables, downloads and data exploration."""
