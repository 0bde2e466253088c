#!/usr/bin/env bash
# `make run`: check the configuration, then start the Procfile's processes (web, worker, eventsub) with honcho.
# - reads .env if present (a fresh checkout in demo mode gets one, mode 0600, with generated secrets);
# - copies config/rewards.example.toml to config/rewards.toml when there is none;
# - checks settings and the rewards file as web and worker will (one line and exit 2 on a problem),
#   before anything starts;
# - starts a local redis-server when REDIS_URL does not answer, only for this machine's default port
#   6379, and stops it when make run ends (data stays in .run/); with REDIS_SENTINELS it only checks
#   that the master answers through the sentinels;
# - with no WETBOT_API_KEY nor WETBOT_API_KEYS: demo mode (DEMO_MODE=1, keys under the prefix
#   wbr-demo), the bundled WetBot simulator stands in for WetBot, with a demo key for every guild the
#   rewards file names; and the bundled Twitch simulator (python -m simulator twitch, with its EventSub
#   WebSocket server) stands in for Twitch: the channel is connected once (`wetbot-rewards twitch connect`,
#   approved by the simulator itself) and the eventsub process uses TWITCH_TRANSPORT=websocket, so the
#   rules file's [[twitch.rewards]] are created and `wetbot-rewards demo redeem` redemptions become grants.
#   Outside demo mode no simulator starts and the Twitch settings are the user's. Helpers: devtools/make_run.py.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
case "$VENV" in /*) export PATH="$VENV/bin:$PATH" ;; *) export PATH="$PWD/$VENV/bin:$PATH" ;; esac
mkdir -p .run

# Demo mode on a fresh checkout: a .env with generated secrets, so the CLI (send-test) shares them.
if [ -z "${WETBOT_API_KEY:-}" ] && [ -z "${WETBOT_API_KEYS:-}" ] && [ ! -f .env ]; then
  "$PY" -m devtools.make_run demo-env
  echo "make run: created .env (mode 0600) from .env.example with generated demo secrets (add WETBOT_API_KEY there for real use)"
fi

# Read .env without overriding what the environment already sets (the service itself does the same).
if [ -f .env ]; then
  while IFS='=' read -r key value; do
    [[ "$key" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || continue
    if [ -z "${!key:-}" ] && [ -n "$value" ]; then export "$key=$value"; fi
  done < .env
fi
export REDIS_URL=${REDIS_URL:-redis://localhost:6379/0}
export PORT=${PORT:-8000}
export REWARDS_FILE=${REWARDS_FILE:-config/rewards.toml}
DEMO=""
if [ -z "${WETBOT_API_KEY:-}" ] && [ -z "${WETBOT_API_KEYS:-}" ]; then
  DEMO=1
  export DEMO_MODE=1
fi

if [ ! -f "$REWARDS_FILE" ] && [ "$REWARDS_FILE" = config/rewards.toml ]; then
  cp config/rewards.example.toml config/rewards.toml
  echo "make run: created config/rewards.toml from config/rewards.example.toml; edit it to set your rules"
fi

# Everything web and worker check at start, before anything starts: one line, exit 2.
"$PY" -m devtools.make_run check || exit $?

pids=()
signalled=0
# Stop what make run started, newest first: the service before the simulator and Redis it uses. When
# make run was stopped by a signal to its process group (Ctrl-C, a SIGTERM from a supervisor), every
# process got that signal already: each gets up to 5 s to stop on it before it is signalled again. A second
# SIGTERM while honcho is still printing "SIGTERM received" crashes it mid-handler (a reentrant write to
# stdout), leaving web and worker running.
cleanup() {
  local i _
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    if [ "$signalled" = 1 ]; then
      for _ in $(seq 1 50); do
        kill -0 "${pids[i]}" 2>/dev/null || break
        sleep 0.1
      done
    fi
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
}
trap cleanup EXIT
trap 'signalled=1; exit 130' INT TERM

redis_ping() { "$PY" -c 'import os, redis; redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=2).ping()' 2>/dev/null; }

# Wait until $1 (a pid) listens on 127.0.0.1:$2; on its exit or after 10 s show the end of log $3 and fail.
wait_listening() {
  for _ in $(seq 1 100); do
    if ! kill -0 "$1" 2>/dev/null; then break; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$2") 2>/dev/null; then return 0; fi
    sleep 0.1
  done
  echo "make run: $4 did not start; its log ($3) says:" >&2
  tail -n 20 "$3" | sed 's/^/  /' >&2
  exit 1
}

if [ -n "${REDIS_SENTINELS:-}" ]; then
  # Sentinel: ask the sentinels for the master, as the service will; never start a local server.
  "$PY" - <<'PY'
import sys
from redis import RedisError
from config.settings import settings_or_exit
from worker.connections import connect_redis
try:
    connect_redis(settings_or_exit()).ping()
except RedisError as exc:
    sys.exit(f"make run: no Redis master answers through REDIS_SENTINELS ({type(exc).__name__}); check the"
             " sentinels' addresses, REDIS_SENTINEL_MASTER and REDIS_SENTINEL_PASSWORD")
PY
elif ! redis_ping; then
  # Only the default port: a mistyped one must fail here, not get a new, empty Redis of its own.
  rport=$("$PY" -m devtools.make_run local-redis) || exit 1
  if ! command -v redis-server >/dev/null 2>&1; then
    echo "make run: Redis does not answer at REDIS_URL (port $rport) and redis-server is not installed." >&2
    echo "  Install and start one (Debian/Ubuntu: sudo apt install redis-server; macOS: brew install redis && brew services start redis)," >&2
    echo "  or point REDIS_URL at a running Redis, then run 'make run' again." >&2
    exit 1
  fi
  echo "make run: no Redis on port $rport; starting a local redis-server (data in .run/, append-only; it stops when make run ends)"
  redis-server --bind 127.0.0.1 --port "$rport" --dir "$PWD/.run" --appendonly yes \
    --logfile "$PWD/.run/redis.log" &
  pids+=($!)
  wait_listening "${pids[-1]}" "$rport" .run/redis.log redis-server
  for _ in $(seq 1 50); do redis_ping && break; sleep 0.1; done
  if ! redis_ping; then
    echo "make run: the local redis-server does not answer at REDIS_URL; see .run/redis.log" >&2
    exit 1
  fi
fi

if [ -n "$DEMO" ]; then
  SIM_PORT=${SIM_PORT:-8099}
  # The default guild first, then every other guild a rule names: each gets a demo key (WETBOT_API_KEYS),
  # as a real setup needs.
  read -r GUILD OTHER_GUILDS < <("$PY" -m devtools.make_run demo-guilds) || exit 2
  SIM_KEYS=(--key demo-key --guild "$GUILD")
  DEMO_KEYS=""
  for other in ${OTHER_GUILDS:-}; do
    SIM_KEYS+=(--key "demo-key-$other" --guild "$other")
    DEMO_KEYS="${DEMO_KEYS:+$DEMO_KEYS,}$other=demo-key-$other"
  done
  "$PY" -m simulator --host 127.0.0.1 --port "$SIM_PORT" "${SIM_KEYS[@]}" \
    --rate "${WETBOT_RATE_LIMIT:-10/60s}" > .run/wetbot-sim.log 2>&1 &
  pids+=($!)
  wait_listening "${pids[-1]}" "$SIM_PORT" .run/wetbot-sim.log "the WetBot simulator (python -m simulator)"
  export WETBOT_API_URL="http://127.0.0.1:$SIM_PORT/api"
  export WETBOT_API_KEY=demo-key
  export WETBOT_API_KEYS="$DEMO_KEYS"
  # The Twitch simulator (OAuth, Helix and EventSub's WebSocket), a public client approving device codes by
  # itself; every Twitch setting points at it, for make run's own processes only (never written to .env).
  TWITCH_SIM_PORT=${TWITCH_SIM_PORT:-8098}
  EVENTSUB_SIM_PORT=${EVENTSUB_SIM_PORT:-8097}
  "$PY" -m simulator twitch --host 127.0.0.1 --port "$TWITCH_SIM_PORT" --eventsub-port "$EVENTSUB_SIM_PORT" \
    --client-id wbr-demo-client --public --auto-approve-after 1 --poll-interval 1 > .run/twitch-sim.log 2>&1 &
  pids+=($!)
  wait_listening "${pids[-1]}" "$TWITCH_SIM_PORT" .run/twitch-sim.log "the Twitch simulator (python -m simulator twitch)"
  wait_listening "${pids[-1]}" "$EVENTSUB_SIM_PORT" .run/twitch-sim.log "the Twitch simulator (python -m simulator twitch)"
  export TWITCH_AUTH_URL="http://127.0.0.1:$TWITCH_SIM_PORT/oauth2"
  export TWITCH_API_URL="http://127.0.0.1:$TWITCH_SIM_PORT/helix"
  export TWITCH_EVENTSUB_WS_URL="ws://127.0.0.1:$EVENTSUB_SIM_PORT/ws"
  export TWITCH_TRANSPORT=websocket TWITCH_CLIENT_ID=wbr-demo-client TWITCH_CLIENT_SECRET=
  if [ -z "${TOKEN_ENCRYPTION_KEY:-}" ]; then  # a .env from before demo mode had Twitch: a key for this run
    TOKEN_ENCRYPTION_KEY=$("$PY" -c 'import secrets; print(secrets.token_hex(20))')
    export TOKEN_ENCRYPTION_KEY
  fi
  echo "make run: connecting the demo Twitch channel (the Twitch simulator approves the code by itself)"
  if ! "$VENV/bin/wetbot-rewards" twitch connect; then
    echo "make run: connecting the demo Twitch channel failed; the Twitch simulator's log (.run/twitch-sim.log) says:" >&2
    tail -n 20 .run/twitch-sim.log | sed 's/^/  /' >&2
    exit 1
  fi
  if [ -z "${GRANTS_API_TOKEN:-}" ]; then
    GRANTS_API_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')
    export GRANTS_API_TOKEN
  fi
  URL="http://127.0.0.1:$PORT"
  cat <<BANNER

  ======================================================================
   DEMO MODE: WETBOT_API_KEY is not set. Nothing reaches the real WetBot.
   A local WetBot simulator runs at $WETBOT_API_URL (log: .run/wetbot-sim.log)
   and the worker delivers to it. Set WETBOT_API_KEY in .env for real use.
   Demo data lives in Redis under the key prefix ${REDIS_KEY_PREFIX:-wbr-demo}, apart from a real install.

   Send a first grant:
     curl -s -X POST $URL/grants \\
       -H 'Authorization: Bearer $GRANTS_API_TOKEN' -H 'Content-Type: application/json' \\
       -d '{"guild_id": "$GUILD", "user_id": "222222222222222222", "items": [{"item_id": "gem", "amount": 5}]}'
   then look at it:  curl -s -H 'Authorization: Bearer $GRANTS_API_TOKEN' $URL/grants/<id>
   or:               DEMO_MODE=1 $VENV/bin/wetbot-rewards grants list

   Or open the operator console in a browser:  $URL/console
     and log in with the token ${ADMIN_TOKEN:-$GRANTS_API_TOKEN}

   Twitch: a local Twitch simulator stands in for Twitch (log: .run/twitch-sim.log); the channel
   is connected and its rewards are created. Redeem one as a viewer would, then watch it become a
   grant and the redemption FULFILLED (the console's Twitch page shows the channel and rewards):
     DEMO_MODE=1 $VENV/bin/wetbot-rewards demo redeem --simulator http://127.0.0.1:$TWITCH_SIM_PORT --wait 20

   Signed test webhooks (secrets from .env):
     $VENV/bin/wetbot-rewards twitch send-test channel.cheer --user-id 1337 --url $URL
     $VENV/bin/wetbot-rewards patreon send-test members:pledge:create --tier 9999999 --discord-id 222222222222222222 --url $URL

   Clear the demo data (after stopping make run):  DEMO_MODE=1 $VENV/bin/wetbot-rewards demo clear
  ======================================================================

BANNER
fi

honcho start -f Procfile -p "$PORT" &
pids+=($!)
wait "${pids[-1]}"
