"""One module per process: ingest, scheduler, sender, recorder. No stage imports another."""
