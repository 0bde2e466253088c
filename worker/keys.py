"""Every Redis key the service uses, under one prefix, with the TTLs that matter.

Keeping the layout in one module lets a test arrange or inspect Redis state
through the same names the code uses, and lets a deployment share a Redis
instance with other software (everything lives under ``<prefix>:``).
"""

from __future__ import annotations

#: Seconds an idempotency claim lives. Patreon retries for about three weeks and
#: Twitch gives no bound, so keep claims well past that: at least 35 days.
IDEMPOTENCY_TTL_S = 40 * 24 * 3600

#: Seconds a "seen" marker of a webhook delivery lives (as long as idempotency claims).
SEEN_TTL_S = IDEMPOTENCY_TTL_S

#: Seconds a stored profile snapshot lives without being refreshed.
PROFILE_TTL_S = 90 * 24 * 3600

#: Most wake tokens a queue's wake list keeps (``wake_key``). A token per message written wakes up to
#: this many idle consumers at once; more would only be spare wake-ups once everyone is busy.
WAKE_TOKENS_MAX = 16


def wake_key(namespace: str, queue_name: str) -> str:
    """LIST of wake tokens beside Dramatiq's queue ``<namespace>:<queue_name>`` (``worker.pickup``).

    Whatever writes a message onto that queue pushes a token here (capped at
    ``WAKE_TOKENS_MAX``); an idle consumer waits on it with BLPOP. Only a hint:
    the queue's list stays the truth.
    """
    return f"{namespace}:{queue_name}.wake"


def scope(key_id: str, guild_id: str) -> str:
    """What a 401/403 pauses: one API key (its fingerprint) for one guild, ``"<key id>:<guild id>"``.

    WetBot keys belong to one guild, so a refusal for one guild says nothing about grants for another;
    with one guild this is simply "the key". The pause, refusal and probe keys are per scope
    (``Keys.key_paused`` and the two after it; ``worker.key_health`` reads and writes them).
    """
    return f"{key_id}:{guild_id}"


class Keys:
    """Builds key names under one prefix (``REDIS_KEY_PREFIX``, default ``wbr``)."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    @property
    def dramatiq_namespace(self) -> str:
        """Namespace handed to Dramatiq's Redis broker, so its queues live under the prefix too."""
        return f"{self.prefix}:dramatiq"

    # --- ledger -----------------------------------------------------------------
    def grant(self, grant_id: str) -> str:
        """HASH: one grant's fields (see ``ledger.py``)."""
        return f"{self.prefix}:grant:{grant_id}"

    def history(self, grant_id: str) -> str:
        """LIST of JSON transitions of one grant, oldest first."""
        return f"{self.prefix}:grant:{grant_id}:history"

    def grant_terms(self, grant_id: str) -> str:
        """STRING: the search terms one grant is indexed under, "\\n"-separated (``worker.grant_index``)."""
        return f"{self.prefix}:grant:{grant_id}:terms"

    def state_index(self, state: str) -> str:
        """ZSET grant id -> time it entered ``state``; one per state."""
        return f"{self.prefix}:state:{state}"

    def all_grants(self) -> str:
        """ZSET grant id -> creation time."""
        return f"{self.prefix}:grants"

    def guild_grants(self, guild_id: str) -> str:
        """ZSET grant id -> creation time of one guild's grants (``worker.grant_index``)."""
        return f"{self.prefix}:by-guild:{guild_id}"

    def guild_state(self, guild_id: str, state: str) -> str:
        """ZSET grant id -> time it entered ``state``: one guild's share of ``state_index``."""
        return f"{self.prefix}:by-guild:{guild_id}:{state}"

    def source_grants(self, source: str) -> str:
        """ZSET grant id -> creation time of the grants of one source (twitch, patreon, api, cli)."""
        return f"{self.prefix}:by-source:{source}"

    def find(self, term: str) -> str:
        """ZSET grant id -> creation time of the grants found by a search term (``worker.grant_index``)."""
        return f"{self.prefix}:find:{term}"

    def guilds(self) -> str:
        """SET of the guild ids that have (or had) grants."""
        return f"{self.prefix}:guilds"

    def sources(self) -> str:
        """SET of the sources (twitch, patreon, api, cli) that have (or had) grants (``lua/grant_index.lua``)."""
        return f"{self.prefix}:sources"

    def index_version(self) -> str:
        """STRING: the secondary indexes' version every older grant was backfilled to."""
        return f"{self.prefix}:index-version"

    def idempotency(self, idempotency_key: str) -> str:
        """STRING grant id, claimed for ``IDEMPOTENCY_TTL_S`` (without a TTL for ``NewGrant.keep_claim``)."""
        return f"{self.prefix}:idem:{idempotency_key}"

    def due(self) -> str:
        """ZSET grant id -> milliseconds (Redis clock) when the reconciler looks at the grant next.

        The ledger's schedule (``worker.schedule``): every grant that should move
        (queued, retrying, sending) has an entry, so a lost queue message, a
        dropped delay queue or a crashed command only delays a grant, never
        strands it.
        """
        return f"{self.prefix}:due"

    def inflight(self, guild_id: str) -> str:
        """ZSET grant id -> ms (Redis clock) of its last dispatch or step: one guild's grants in flight, from a
        dispatch until they settle (delivered, dead, unknown, cancelled, parked).

        The reconciler lets no more than its cap in (``worker.schedule``, ``lua/inflight.lua``).
        """
        return f"{self.prefix}:inflight:{guild_id}"

    def overflow(self, guild_id: str) -> str:
        """HASH ``at`` (ms, Redis clock) and ``seats``: the latest window grants of the guild over its in-flight
        cap were pushed to, and how many seats of it are taken (``lua/dispatch_due.lua``)."""
        return f"{self.prefix}:overflow:{guild_id}"

    def overflow_member(self, guild_id: str, user_id: str) -> str:
        """STRING ms (Redis clock): when the member's seated (or in-flight) grant comes due, so its other grants
        need no seat of their own (with coalescing one request carries them all)."""
        return f"{self.prefix}:overflow-member:{guild_id}:{user_id}"

    def pending(self, guild_id: str, user_id: str) -> str:
        """SET of ids of the user's moving grants (queued, retrying, sending): what a merged request may carry."""
        return f"{self.prefix}:pending:{guild_id}:{user_id}"

    def hold(self, guild_id: str, user_id: str) -> str:
        """STRING grant id whose read-back verification the user's other grants wait for (no TTL)."""
        return f"{self.prefix}:hold:{guild_id}:{user_id}"

    def parked(self, platform: str, external_id: str) -> str:
        """SET of ids of grants parked until ``external_id`` on ``platform`` is linked to a Discord user."""
        return f"{self.prefix}:parked:{platform}:{external_id}"

    def parked_for_key(self, guild_id: str) -> str:
        """SET of ids of grants parked because no configured API key serves ``guild_id``."""
        return f"{self.prefix}:parked-key:{guild_id}"

    def key_parked_guilds(self) -> str:
        """SET of guild ids that have a ``parked_for_key`` index with grants in it."""
        return f"{self.prefix}:parked-key-guilds"

    def links(self, platform: str) -> str:
        """HASH external id -> Discord user id: links added at run time (``POST /links``, CLI, link rewards)."""
        return f"{self.prefix}:links:{platform}"

    def self_links(self, platform: str, discord_user_id: str) -> str:
        """SET of the external ids a link reward linked to ``discord_user_id`` (``lua/set_link.lua``)."""
        return f"{self.prefix}:self-links:{platform}:{discord_user_id}"

    # --- fates someone waits for -------------------------------------------------------
    def watched_moves(self) -> str:
        """ZSET grant id -> when it last left the moving states, for grants whose hash says ``watched`` = 1:
        something outside the ledger waits for their fate (a Twitch redemption, ``producers.twitch.redemptions``).
        Written by ``lua/grant_index.lua`` in the step that moves the grant, so no fate is missed."""
        return f"{self.prefix}:watched-moves"

    def twitch_redemption(self, redemption_id: str) -> str:
        """HASH: one channel-point redemption whose fate Twitch is told (``producers.twitch.redemptions``)."""
        return f"{self.prefix}:twitch:redemption:{redemption_id}"

    def twitch_redemption_grants(self, redemption_id: str) -> str:
        """SET of the ids of the grants one redemption made."""
        return f"{self.prefix}:twitch:redemption:{redemption_id}:grants"

    def twitch_redemption_calls(self) -> str:
        """ZSET redemption id -> when its Helix status update is due (a claimed one: when its claim ends)."""
        return f"{self.prefix}:twitch:redemption-calls"

    # --- producers -------------------------------------------------------------------
    def seen(self, source: str, ident: str) -> str:
        """STRING marker that a delivery (``source`` = e.g. ``twitch-message``) was handled; TTL ``SEEN_TTL_S``."""
        return f"{self.prefix}:seen:{source}:{ident}"

    def source_state(self, source: str, ident: str) -> str:
        """HASH of what a producer remembers about one entity (e.g. a Patreon member's last charge date)."""
        return f"{self.prefix}:source:{source}:{ident}"

    def event(self, event_id: str) -> str:
        """HASH: one webhook delivery kept in the event inbox (``producers.inbox``)."""
        return f"{self.prefix}:event:{event_id}"

    def events(self) -> str:
        """ZSET event id -> received time (ms): the event inbox, newest last."""
        return f"{self.prefix}:events"

    def events_by_outcome(self, outcome: str) -> str:
        """ZSET event id -> received time (ms) of the inbox events whose outcome is ``outcome``."""
        return f"{self.prefix}:events:outcome:{outcome}"

    def traffic(self, hour: int) -> str:
        """HASH ``<source>:<outcome>`` -> webhook deliveries in one hour (hours since the epoch), kept 49 h."""
        return f"{self.prefix}:traffic:{hour}"

    def counters(self) -> str:
        """HASH counter name -> count (events received, ignored, ...), exported by ``/metrics``."""
        return f"{self.prefix}:counters"

    def lease(self, guild_id: str, user_id: str) -> str:
        """STRING ``<grant id>:<run token>`` of the one run sending to this user now (PX = that run)."""
        return f"{self.prefix}:lease:{guild_id}:{user_id}"

    def profile(self, guild_id: str, user_id: str) -> str:
        """HASH ``profile`` (JSON as WetBot returned it) and ``at`` (epoch seconds)."""
        return f"{self.prefix}:profile:{guild_id}:{user_id}"

    # --- per API key (``key_id`` is a fingerprint, never the key) ------------------
    # The 401/403 pause is per ``scope(key_id, guild_id)``; ``worker.key_health`` reads and writes it.
    def rate_window(self, key_id: str) -> str:
        """ZSET slot -> the time it counts from (microseconds, Redis clock): its start, its answer once back."""
        return f"{self.prefix}:rate:{key_id}"

    def rate_pending(self, key_id: str) -> str:
        """ZSET slot -> the latest time its request may still reach WetBot (microseconds), until its answer is
        recorded: such a slot stays in the window (``worker.limiter``)."""
        return f"{self.prefix}:rate:{key_id}:pending"

    def rate_block(self, key_id: str) -> str:
        """STRING microsecond timestamp before which no request may start (set after a 429)."""
        return f"{self.prefix}:rate:{key_id}:blocked"

    def rate_line(self, key_id: str) -> str:
        """ZSET grant id -> its turn (microseconds, Redis clock): grants waiting for this key's next slots."""
        return f"{self.prefix}:rate:{key_id}:line"

    def rate_throttled(self, key_id: str) -> str:
        """STRING set (with a TTL) after WetBot answered this key 429: no slot is spare meanwhile."""
        return f"{self.prefix}:rate:{key_id}:throttled"

    def reported(self, digest: str) -> str:
        """STRING set once (with a TTL) when a problem of this digest went to Sentry: it is reported once."""
        return f"{self.prefix}:reported:{digest}"

    def key_outcomes(self, key_id: str) -> str:
        """HASH outcome (``worker.client.CallOutcome``) -> how many of this key's requests ended so (``/metrics``)."""
        return f"{self.prefix}:rate:{key_id}:outcomes"

    def key_paused(self, scope: str) -> str:
        """STRING reason; its TTL is the remaining pause after a 401/403."""
        return f"{self.prefix}:key:{scope}:paused"

    def key_unauthorised(self, scope: str) -> str:
        """STRING reason, no TTL: the key was refused and has not succeeded since."""
        return f"{self.prefix}:key:{scope}:unauthorised"

    def key_probe(self, scope: str) -> str:
        """STRING worker token: the one request allowed to test a refused key again."""
        return f"{self.prefix}:key:{scope}:probe"

    # --- the broadcaster's Twitch authorisation (``producers.twitch.tokens``) ------------
    def twitch_tokens(self) -> str:
        """HASH ``sealed`` (the tokens, Fernet-encrypted under ``TOKEN_ENCRYPTION_KEY``) and ``version`` (one
        more each time a new pair is written), written in one step (``lua/store_tokens.lua``). A disconnect
        removes ``sealed`` and keeps ``version`` (``lua/forget_tokens.lua``)."""
        return f"{self.prefix}:twitch:tokens"

    def twitch_auth_state(self) -> str:
        """HASH of the connection's state others read without the key: ``state`` (connected, refresh_failed,
        revoked, undecryptable), since when and why, the broadcaster's id and login, scopes, expiry and the
        last validation's time and result."""
        return f"{self.prefix}:twitch:auth-state"

    def twitch_refresh_lock(self) -> str:
        """STRING token of the one process refreshing the tokens now (PX: how long it may take), released by
        compare-and-delete (``lua/release_lock.lua``)."""
        return f"{self.prefix}:twitch:refresh-lock"

    # --- the Twitch process (``producers.twitch.runner``) ------------------------------------
    def twitch_runner_lease(self) -> str:
        """STRING token of the one ``twitch run`` process at work now (PX: the lease, renewed while it lives;
        renewed by ``lua/extend_lease.lua``, released by ``lua/release_lock.lua``)."""
        return f"{self.prefix}:twitch:runner-lease"

    def twitch_delivery(self) -> str:
        """HASH ``last_seen_at`` (epoch seconds of the last EventSub WebSocket message) and ``session_id``:
        where a restarted runner's gap starts."""
        return f"{self.prefix}:twitch:delivery"

    def twitch_missed_periods(self) -> str:
        """ZSET of JSON ``{"reason", "since", "until"}`` (epoch seconds; ``since`` null when unknown) -> ``until``:
        the periods for which cheers, subs and follows may have been missed (Helix keeps no history of them);
        the newest ``producers.twitch.runner.MISSED_PERIODS_KEPT`` are kept."""
        return f"{self.prefix}:twitch:missed-periods"

    def twitch_gap_requested(self) -> str:
        """STRING flag (epoch seconds of the latest request): a gap was recorded outside the Twitch process (a
        webhook revocation, ``producers.twitch.gaps``); the process takes it (GETDEL) and sweeps the
        subscriptions and catches up soon."""
        return f"{self.prefix}:twitch:gap-requested"

    def twitch_subscriptions(self) -> str:
        """HASH subscription id -> JSON of one EventSub subscription as last seen, plus field ``:check`` -> JSON
        ``{"checked_at", "transport", "error"}`` (``producers.twitch.subscription_status``; the console lists it)."""
        return f"{self.prefix}:twitch:subscriptions"

    def twitch_own_rewards(self) -> str:
        """SET of the ids of the custom rewards our client id manages on the connected channel, as the last
        catch-up pass listed them (``producers.twitch.catchup``): the webhook path watches those rewards'
        redemptions without asking Helix. Replaced whole by each pass."""
        return f"{self.prefix}:twitch:own-rewards"

    # --- the channel's rewards and who is who by name (``producers.twitch.reward_catalogue``) ---
    def twitch_reward_catalogue(self) -> str:
        """STRING JSON of the last reward sync: the channel's rewards (id, title, cost, ours), the rules'
        titles resolved to ids, our ``[[twitch.rewards]]`` by title, and the problems found, written in one SET."""
        return f"{self.prefix}:twitch:reward-catalogue"

    def link_names(self, platform: str) -> str:
        """HASH external id -> JSON ``{"login", "display_name"}`` of a linked user, as the platform named them
        when linked by login (the console and searches show them next to the id)."""
        return f"{self.prefix}:link-names:{platform}"

    # --- operator console (``admin.console``) and audit log -------------------------
    def console_session(self, digest: str) -> str:
        """HASH of one console session (csrf token, expiry, flash); ``digest`` is the sha256 of the cookie value.

        TTL ``CONSOLE_SESSION_S``; the cookie value itself is never stored.
        """
        return f"{self.prefix}:console:session:{digest}"

    def console_twitch_state(self, digest: str) -> str:
        """STRING JSON of one pending "Connect with Twitch" (the console session it belongs to, the sha256 of its
        browser binding); ``digest`` is the sha256 of the OAuth ``state``. TTL a few minutes; used up once."""
        return f"{self.prefix}:console:twitch-state:{digest}"

    def console_login_failures(self, client: str) -> str:
        """STRING count of recent wrong console tokens from one client address (TTL: the counting window)."""
        return f"{self.prefix}:console:login-failures:{client}"

    def audit(self) -> str:
        """STREAM of operator actions (who, what, when), newest last, trimmed to about 10000 (``producers.audit``)."""
        return f"{self.prefix}:audit"

    def replication_barrier(self) -> str:
        """STRING counter a confirmed write or read increments just before its ``WAIT`` (``worker.replication``):
        a write of its own, so the ``WAIT`` covers everything the primary had, also when the step wrote nothing."""
        return f"{self.prefix}:replication-barrier"
