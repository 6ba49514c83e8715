"""What training and the service must agree on, in one torch-free place both import.

- `contract.ids`: the id vocabularies, the padding item and the generic user, the score column
  of an item, and the one function that turns a user's history into the model's input row;
- `contract.bundle`: the serving bundle (file names, format version, the `Manifest` model that
  validates a manifest whole, loading and verifying a bundle with onnxruntime);
- `contract.redis_layout`: the Redis key layout of users' histories and event logs;
- `contract.event_log`: reading the service's durable event log back (what training reads).
"""
