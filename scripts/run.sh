#!/usr/bin/env bash
# `make run`: start web + worker from the Procfile with honcho.
# - reads .env if present;
# - starts a local redis-server when REDIS_URL does not answer and one is installed (with
#   REDIS_SENTINELS set it only checks that the master answers through the sentinels);
# - copies config/rewards.example.toml to config/rewards.toml when there is none;
# - with no WETBOT_API_KEY nor WETBOT_API_KEYS: demo mode, the bundled WetBot simulator stands in for
#   WetBot, with a demo key for every guild the rewards file names.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PY="$VENV/bin/python"
export PATH="$PWD/$VENV/bin:$PATH"
mkdir -p .run

# Demo mode on a fresh checkout: a .env with generated secrets, so the CLI (send-test) shares them.
if [ -z "${WETBOT_API_KEY:-}" ] && [ -z "${WETBOT_API_KEYS:-}" ] && [ ! -f .env ]; then
  "$PY" - <<'PY'
import re, secrets
from pathlib import Path
text = Path(".env.example").read_text(encoding="utf-8")
for name in ("GRANTS_API_TOKEN", "TWITCH_WEBHOOK_SECRET", "PATREON_WEBHOOK_SECRET"):
    text = re.sub(rf"^{name}=$", f"{name}={secrets.token_hex(20)}", text, flags=re.M)
Path(".env").write_text(text, encoding="utf-8")
PY
  echo "make run: created .env from .env.example with generated demo secrets (add WETBOT_API_KEY there for real use)"
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

pids=()
cleanup() { for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done; }
trap cleanup EXIT
trap 'exit 130' INT TERM

redis_ping() { "$PY" -c 'import os, redis; redis.Redis.from_url(os.environ["REDIS_URL"], socket_connect_timeout=2).ping()' 2>/dev/null; }

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
  read -r rhost rport < <("$PY" -c 'import os; from urllib.parse import urlsplit; u = urlsplit(os.environ["REDIS_URL"]); print(u.hostname or "localhost", u.port or 6379)')
  if command -v redis-server >/dev/null 2>&1 && [[ "$rhost" == localhost || "$rhost" == 127.0.0.1 ]]; then
    echo "make run: no Redis at $rhost:$rport; starting a local redis-server (data in .run/, append-only)"
    redis-server --daemonize yes --bind 127.0.0.1 --port "$rport" --dir "$PWD/.run" --appendonly yes \
      --pidfile "$PWD/.run/redis.pid" --logfile "$PWD/.run/redis.log"
    for _ in $(seq 1 50); do redis_ping && break; sleep 0.1; done
  fi
  if ! redis_ping; then
    echo "make run: Redis does not answer at REDIS_URL ($rhost:$rport)." >&2
    echo "  Install and start one (Debian/Ubuntu: sudo apt install redis-server; macOS: brew install redis && brew services start redis)," >&2
    echo "  or point REDIS_URL at a running Redis, then run 'make run' again." >&2
    exit 1
  fi
fi

if [ ! -f "$REWARDS_FILE" ] && [ "$REWARDS_FILE" = config/rewards.toml ]; then
  cp config/rewards.example.toml config/rewards.toml
  echo "make run: created config/rewards.toml from config/rewards.example.toml; edit it to set your rules"
fi

if [ -z "${WETBOT_API_KEY:-}" ] && [ -z "${WETBOT_API_KEYS:-}" ]; then
  SIM_PORT=${SIM_PORT:-8099}
  GUILD=$("$PY" -c 'import os; from pathlib import Path; from config.rewards import load_rewards; print(load_rewards(Path(os.environ["REWARDS_FILE"]), missing_ok=True).guild_id or "111111111111111111")')
  # Every other guild a rule names gets a demo key of its own (WETBOT_API_KEYS), as a real setup needs.
  OTHER_GUILDS=$("$PY" -c 'import os; from pathlib import Path; from config.rewards import load_rewards; r = load_rewards(Path(os.environ["REWARDS_FILE"]), missing_ok=True); print(" ".join(sorted({g.guild_id for g in r.rule_guilds()} - {r.guild_id})))')
  SIM_KEYS=(--key demo-key --guild "$GUILD")
  DEMO_KEYS=""
  for other in $OTHER_GUILDS; do
    SIM_KEYS+=(--key "demo-key-$other" --guild "$other")
    DEMO_KEYS="${DEMO_KEYS:+$DEMO_KEYS,}$other=demo-key-$other"
  done
  "$PY" -m simulator --host 127.0.0.1 --port "$SIM_PORT" "${SIM_KEYS[@]}" \
    --rate "${WETBOT_RATE_LIMIT:-10/60s}" > .run/wetbot-sim.log 2>&1 &
  pids+=($!)
  export WETBOT_API_URL="http://127.0.0.1:$SIM_PORT/api"
  export WETBOT_API_KEY=demo-key
  export WETBOT_API_KEYS="$DEMO_KEYS"
  if [ -z "${GRANTS_API_TOKEN:-}" ]; then
    GRANTS_API_TOKEN=$("$PY" -c 'import secrets; print(secrets.token_urlsafe(24))')
    export GRANTS_API_TOKEN
  fi
  cat <<BANNER

  ======================================================================
   DEMO MODE: WETBOT_API_KEY is not set. Nothing reaches the real WetBot.
   A local WetBot simulator runs at $WETBOT_API_URL (log: .run/wetbot-sim.log)
   and the worker delivers to it. Set WETBOT_API_KEY in .env for real use.

   Send a first grant:
     curl -s -X POST http://127.0.0.1:$PORT/grants \\
       -H 'Authorization: Bearer $GRANTS_API_TOKEN' -H 'Content-Type: application/json' \\
       -d '{"guild_id": "$GUILD", "user_id": "222222222222222222", "items": [{"item_id": "gem", "amount": 5}]}'
   then look at it:  curl -s -H 'Authorization: Bearer $GRANTS_API_TOKEN' http://127.0.0.1:$PORT/grants/<id>
   or:               $VENV/bin/wetbot-rewards grants list

   Signed test webhooks (secrets from .env):
     $VENV/bin/wetbot-rewards send-test twitch channel.cheer --user-id 1337
     $VENV/bin/wetbot-rewards send-test patreon members:pledge:create --tier 9999999 --discord-id 222222222222222222
  ======================================================================

BANNER
fi

honcho start -f Procfile -p "$PORT" &
pids+=($!)
wait "${pids[-1]}"
