#!/bin/bash
# Runs inside a Postgres host's postgres service (docker compose exec -T postgres bash -s --
# COMMAND), sent by lib.healing.postgres_failover; the server's own socket, trusted as in the
# official image. Prints key=value lines, never a password.
#   state    what this server is: in_recovery, receiver (the WAL receiver's status, empty when
#            none runs), received/replayed/lsn, streaming (the standbys streaming from it)
#   promote  wait (bounded) until everything received is replayed, then pg_promote() and wait
#            until it is out of recovery; it starts asynchronous (synchronous_standby_names
#            emptied) until a standby streams from it (server.sh's watcher turns sync on).
set -euo pipefail

sql() {
    psql -XAtq -v ON_ERROR_STOP=1 -F '|' --username "$POSTGRES_USER" --dbname "$POSTGRES_DB" \
        -c "$1"
}

state() {
    sql "SELECT 'in_recovery=' || pg_is_in_recovery()
         UNION ALL SELECT 'receiver=' || coalesce((SELECT status FROM pg_stat_wal_receiver), '')
         UNION ALL SELECT 'received=' || coalesce(pg_last_wal_receive_lsn()::text, '')
         UNION ALL SELECT 'replayed=' || coalesce(pg_last_wal_replay_lsn()::text, '')
         UNION ALL SELECT 'lsn=' || CASE WHEN pg_is_in_recovery()
                                   THEN coalesce(pg_last_wal_replay_lsn()::text, '')
                                   ELSE pg_current_wal_lsn()::text END
         UNION ALL SELECT 'streaming=' || coalesce((SELECT string_agg(application_name, ',')
                                                    FROM pg_stat_replication
                                                    WHERE state = 'streaming'), '')"
}

promote() {
    local waited=0
    if [ "$(sql "SELECT pg_is_in_recovery()")" != t ]; then
        echo "promoted=already"
        state
        return
    fi
    # What the standby received is committed on the old primary: replay it all first.
    until [ "$(sql "SELECT pg_last_wal_receive_lsn() IS NULL
                    OR pg_last_wal_replay_lsn() >= pg_last_wal_receive_lsn()")" = t ]; do
        waited=$((waited + 1))
        if [ "$waited" -gt "${REPLAY_WAIT:-60}" ]; then
            echo "error=replay did not catch up with the received WAL in ${REPLAY_WAIT:-60}s"
            exit 3
        fi
        sleep 1
    done
    # Waits (up to 60 s) until the server has left recovery.
    if [ "$(sql "SELECT pg_promote(true, 60)")" != t ]; then
        echo "error=pg_promote did not complete within 60s"
        exit 4
    fi
    sql "ALTER SYSTEM SET synchronous_standby_names = ''" >/dev/null
    sql "SELECT pg_reload_conf()" >/dev/null
    echo "promoted=now"
    state
}

case "${1:-}" in
    state) state ;;
    promote) promote ;;
    *) echo "error=usage: state | promote"; exit 2 ;;
esac
