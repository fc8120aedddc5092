#!/usr/bin/env bash
# docker-entrypoint.sh of the sandbox's real-postgres containers: what the official postgres
# image's entrypoint (github.com/docker-library/postgres, docker-entrypoint.sh) does, for
# Debian's PostgreSQL 15. On an empty $PGDATA: initdb with POSTGRES_USER/POSTGRES_PASSWORD,
# `host all all all <password_encryption>` (scram-sha-256) in pg_hba.conf, a temporary
# socket-only server, POSTGRES_DB created, /docker-entrypoint-initdb.d/* run (*.sh executed
# when executable, else sourced under this script's `set -e`; *.sql through psql), then the
# server is stopped. Then `exec "$@"` (as postgres when started as root, via gosu).
set -Eeo pipefail

file_env() {
    local var="$1" fileVar="${1}_FILE" def="${2:-}"
    if [ "${!var:-}" ] && [ "${!fileVar:-}" ]; then
        printf >&2 'error: both %s and %s are set (but are exclusive)\n' "$var" "$fileVar"
        exit 1
    fi
    local val="$def"
    if [ "${!var:-}" ]; then
        val="${!var}"
    elif [ "${!fileVar:-}" ]; then
        val="$(< "${!fileVar}")"
    fi
    export "$var"="$val"
    unset "$fileVar"
}

docker_create_db_directories() {
    local user
    user="$(id -u)"
    mkdir -p "$PGDATA"
    chmod 00700 "$PGDATA" || :
    mkdir -p /var/run/postgresql || :
    chmod 03775 /var/run/postgresql || :
    if [ "$user" = '0' ]; then
        find "$PGDATA" \! -user postgres -exec chown postgres '{}' +
        find /var/run/postgresql \! -user postgres -exec chown postgres '{}' +
    fi
}

docker_verify_minimum_env() {
    if [ -z "$POSTGRES_PASSWORD" ] && [ 'trust' != "$POSTGRES_HOST_AUTH_METHOD" ]; then
        cat >&2 <<-'EOE'
			Error: Database is uninitialized and superuser password is not specified.
			       You must specify POSTGRES_PASSWORD to a non-empty value for the
			       superuser. For example, "-e POSTGRES_PASSWORD=password" on "docker run".
		EOE
        exit 1
    fi
}

docker_init_database_dir() {
    # Debian's build has no image-edited postgresql.conf.sample: the image's sed runs on the
    # initialised file instead (listen_addresses = '*'), with the same result.
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        $POSTGRES_INITDB_ARGS
    sed -ri "s!^#?(listen_addresses)\s*=\s*\S+.*!\1 = '*'!" "$PGDATA/postgresql.conf"
}

docker_process_sql() {
    local query_runner=( psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password
                         --no-psqlrc )
    if [ -n "$POSTGRES_DB" ]; then
        query_runner+=( --dbname "$POSTGRES_DB" )
    fi
    PGHOST= PGHOSTADDR= "${query_runner[@]}" "$@"
}

docker_process_init_files() {
    # shellcheck disable=SC2034
    psql=( docker_process_sql )
    printf '\n'
    local f
    for f; do
        case "$f" in
            *.sh)
                if [ -x "$f" ]; then
                    printf '%s: running %s\n' "$0" "$f"
                    "$f"
                else
                    printf '%s: sourcing %s\n' "$0" "$f"
                    # shellcheck disable=SC1090
                    . "$f"
                fi
                ;;
            *.sql) printf '%s: running %s\n' "$0" "$f"; docker_process_sql -f "$f"; printf '\n' ;;
            *) printf '%s: ignoring %s\n' "$0" "$f" ;;
        esac
        printf '\n'
    done
}

docker_setup_db() {
    local exists
    exists="$(POSTGRES_DB= docker_process_sql --dbname postgres --set db="$POSTGRES_DB" \
        --tuples-only <<< "SELECT 1 FROM pg_database WHERE datname = :'db' ;")"
    if [ -z "$exists" ]; then
        POSTGRES_DB= docker_process_sql --dbname postgres --set db="$POSTGRES_DB" \
            <<< 'CREATE DATABASE :"db" ;'
        printf '\n'
    fi
}

docker_setup_env() {
    file_env 'POSTGRES_PASSWORD'
    file_env 'POSTGRES_USER' 'postgres'
    file_env 'POSTGRES_DB' "$POSTGRES_USER"
    file_env 'POSTGRES_INITDB_ARGS'
    : "${POSTGRES_HOST_AUTH_METHOD:=}"
    declare -g DATABASE_ALREADY_EXISTS
    if [ -s "$PGDATA/PG_VERSION" ]; then
        DATABASE_ALREADY_EXISTS='true'
    fi
}

pg_setup_hba_conf() {
    if [ "$1" = 'postgres' ]; then
        shift
    fi
    local auth
    auth="$(postgres -C password_encryption "$@")"
    : "${POSTGRES_HOST_AUTH_METHOD:=$auth}"
    {
        printf '\n'
        printf 'host all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD"
    } >> "$PGDATA/pg_hba.conf"
}

docker_temp_server_start() {
    if [ "$1" = 'postgres' ]; then
        shift
    fi
    set -- "$@" -c listen_addresses='' -p "${PGPORT:-5432}"
    PGUSER="${PGUSER:-$POSTGRES_USER}" pg_ctl -D "$PGDATA" -o "$(printf '%q ' "$@")" -w start
}

docker_temp_server_stop() {
    PGUSER="${PGUSER:-postgres}" pg_ctl -D "$PGDATA" -m fast -w stop
}

_main() {
    if [ "${1:0:1}" = '-' ]; then
        set -- postgres "$@"
    fi
    if [ "$1" = 'postgres' ]; then
        docker_setup_env
        docker_create_db_directories
        if [ "$(id -u)" = '0' ]; then
            exec gosu postgres "${BASH_SOURCE[0]}" "$@"
        fi
        if [ -z "$DATABASE_ALREADY_EXISTS" ]; then
            docker_verify_minimum_env
            ls /docker-entrypoint-initdb.d/ > /dev/null
            docker_init_database_dir
            pg_setup_hba_conf "$@"
            export PGPASSWORD="${PGPASSWORD:-$POSTGRES_PASSWORD}"
            docker_temp_server_start "$@"
            docker_setup_db
            docker_process_init_files /docker-entrypoint-initdb.d/*
            docker_temp_server_stop
            unset PGPASSWORD
            printf '\nPostgreSQL init process complete; ready for start up.\n\n'
        else
            printf '\nPostgreSQL Database directory appears to contain a database; '
            printf 'Skipping initialization\n\n'
        fi
    fi
    exec "$@"
}

_main "$@"
