# Sourced by script/test and script/bench: a throwaway PostgreSQL 15 cluster on a free loopback port,
# without systemd (initdb refuses root, so it runs as postgres). Stopped and removed on exit.
PGBIN=/usr/lib/postgresql/15/bin
PGBASE=$(mktemp -d /tmp/sw-pg.XXXXXX)
chown postgres:postgres "$PGBASE"
PGPORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
stop_pg() {
  runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGBASE/data" -m fast -w stop >/dev/null 2>&1 || true
  rm -rf "$PGBASE"
}
trap stop_pg EXIT
runuser -u postgres -- "$PGBIN/initdb" -D "$PGBASE/data" -U postgres -A trust -E UTF8 --locale=C.UTF-8 --no-sync >/dev/null
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGBASE/data" -l "$PGBASE/server.log" -w -t 30 \
  -o "-p $PGPORT -k $PGBASE -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off" \
  start >/dev/null
PG_URL="postgresql://postgres@127.0.0.1:$PGPORT/postgres"
echo "PostgreSQL 15 throwaway cluster on 127.0.0.1:$PGPORT" >&2
