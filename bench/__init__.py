"""Benchmarks: each prints its figures (``BENCHMARKS.md`` keeps the current ones) and asserts nothing.

Run from the repository root as ``python -m bench.<name>`` (``--help`` lists each one's options).

Benchmarks:

- ``backlog``: a large backlog for one key drained by real workers; pace, run counts, isolation.
- ``chaos_long``: the chaos scenarios of ``tests/chaos`` with more grants and more disruptions.
- ``cli_startup``: wall time of ``wetbot-rewards --help`` and ``wetbot-rewards grants list``.
- ``console_pages``: console page times with 100,000 grants in Redis against 1,000.
- ``drain``: grants over many users and keys through real workers (coalescing, scaling, isolation).
- ``fuzz_campaigns``: long fuzzing of every POST route and of the OpenAPI document.
- ``ingest``: signed Twitch notifications through the real app, beside a bare route.
- ``limiter``: the rate limiter against a strict simulator, beside stock Dramatiq.
- ``memory``: RSS of every Procfile process with 10,000 grants queued.
- ``pickup_latency``: producer answer to request at WetBot on an idle system, ours against stock.
- ``retention``: Redis bytes per delivered grant, and how fast old grants are trimmed.
- ``eventsub_reconnect``: WebSocket reconnect time after ``session_reconnect``, and a fresh session after a drop.
- ``twitch_catchup``: time from a restart to the Twitch redemptions missed while down granted.
- ``twitch_fulfilment``: Helix calls per 100 redemptions told, and the time from a dead grant to its refund.
- ``verify_cost``: what reading a baseline before each request costs.

Parts they share:

- ``backlog_counted_actors``: ``worker.actors`` with every run counted (for ``backlog``).
- ``console_seed``: a realistic ledger of N grants (for ``console_pages``).
- ``drain_isolation``: the isolation scenario of ``drain``.
- ``fleet``: guilds with a key each, one strict simulator, real worker processes (``drain``, ``backlog``).
- ``fuzz_routes``: the fuzzing campaigns (``fuzz_campaigns`` and ``tests/wetbot_rewards/test_fuzz_routes.py``).
- ``ingest_clients``: HTTP client threads, closed loop or paced (for ``ingest``).
- ``latency_stock_actor``: the stock Dramatiq actor ``pickup_latency`` compares against.
- ``limiter_one_run``: one measured run of ``limiter``.
- ``limiter_stock_actor``: the stock rate-limited actor ``limiter`` compares against.
- ``private_redis``: a redis-server of the benchmark's own, and what it is asked to do (MONITOR).
- ``rig``: the service's environment, its processes, key prefixes, the simulator, figure formatting.
"""
