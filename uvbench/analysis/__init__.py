"""After a call: from what the wire recorded to the call's record and files.

A call's wire part (uvbench/call/engine.py) leaves its timeline, the agent's audio in a file and a
few facts (`CallResult`). Everything else happens here, in an analysis process when calls run
under load, so that none of it runs on the event loop that paces other calls' audio:

- `call.py`: read the call back from the API (end reason, messages, the server's ground truth),
  compute the figures (uvbench.metrics), check the scenario's expectations, build the record,
  write the timeline and, when kept, the recordings.
- `spool.py`: the hand-over from the pacing process: a finished call's raw data in a file.
- `worker.py`: the analysis process: jobs in, records out.
"""
