#!/bin/bash
# A one-node Ceph cluster (Debian bookworm, Ceph 16 "pacific") on loopback for the tests: a monitor, one
# in-memory OSD and radosgw (a real S3 implementation). From ../shared/recipes/ceph-radosgw-loopback.sh,
# adapted: ports chosen by the caller, users `trainer` (owns the buckets) and `reader`, and a `rgw`
# mode that starts radosgw alone again (the tests stop it to play a server that went away).
#   CEPH_DIR=DIR MON_PORT=P RGW_PORT=Q bash start.sh        # cluster + radosgw + users
#   CEPH_DIR=DIR bash start.sh rgw                          # radosgw again, same config
# Every daemon writes its PID to $CEPH_DIR/run/*.pid; the caller stops them (SIGTERM, then waits).
# WATCH_PID=PID: should that process die without stopping them (a killed pytest), a watchdog does.
# No cephx between daemons; S3 clients still sign their requests (SigV4), and radosgw checks them.
# Without 'ms mon client mode = crc secure' radosgw hangs at start ('get_initial_auth_request returned -13').
set -euo pipefail
D=${CEPH_DIR:?set CEPH_DIR to an empty folder}
C="-c $D/ceph.conf"

start_rgw() {
    local port
    port=$(cat "$D/rgw_port")
    radosgw $C -n client.rgw.local
    for _ in $(seq 240); do
        curl -s -o /dev/null "http://127.0.0.1:$port/" && return 0
        sleep 0.25
    done
    echo "radosgw did not answer on 127.0.0.1:$port within 60 s; see $D/log/client.rgw.local.log" >&2
    return 1
}

if [ "${1:-}" = rgw ]; then
    start_rgw
    exit 0
fi

MON_PORT=${MON_PORT:?set MON_PORT to a free port}
RGW_PORT=${RGW_PORT:?set RGW_PORT to a free port}
mkdir -p "$D"/{run,log,mon,osd/ceph-0}
echo "$RGW_PORT" > "$D/rgw_port"
if [ -n "${WATCH_PID:-}" ]; then
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 2; done
        for f in "$2"/run/*.pid; do [ -f "$f" ] && kill "$(cat "$f")"; done' watchdog "$WATCH_PID" "$D" \
        </dev/null >/dev/null 2>&1 &
    echo $! > "$D/watchdog.pid"
fi
FSID=$(uuidgen)
cat > "$D/ceph.conf" <<CONF
[global]
fsid = $FSID
mon host = v2:127.0.0.1:$MON_PORT
public network = 127.0.0.1/32
auth cluster required = none
auth service required = none
auth client required = none
ms bind ipv6 = false
ms mon client mode = crc secure
run dir = $D/run
admin socket = $D/run/\$name.asok
log file = $D/log/\$name.log
pid file = $D/run/\$name.pid
mon data = $D/mon/\$name
osd data = $D/osd/\$cluster-\$id
osd objectstore = memstore
memstore device bytes = 1073741824
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon allow pool size one = true
mon max pg per osd = 1000
mon warn on pool no redundancy = false
# the monitor batches map changes for 1 s by default; radosgw's start creates pools one after another,
# each waiting on a map change: 13 s to start with the default, 3.5 s with this
paxos propose interval = 0.05
paxos min wait = 0.01
osd crush chooseleaf type = 0
rgw crypt require ssl = false
rgw crypt s3 kms backend = testing
rgw crypt s3 kms encryption keys = testkey-1=YmluCmJvb3N0CmJvb3N0LWJ1aWxkCmNlcGguY29uZgo=
[client.rgw.local]
rgw frontends = beast endpoint=127.0.0.1:$RGW_PORT
rgw dns name = localhost
CONF
monmaptool --create --addv a "[v2:127.0.0.1:$MON_PORT]" --fsid "$FSID" "$D/monmap" >/dev/null
ceph-mon $C --mkfs -i a --monmap "$D/monmap"
ceph-mon $C -i a
OSD_UUID=$(uuidgen)
ceph $C osd new "$OSD_UUID" >/dev/null
ceph-osd $C -i 0 --mkfs --osd-uuid "$OSD_UUID" 2>/dev/null
ceph-osd $C -i 0
up=
for _ in $(seq 120); do
    if ceph $C osd stat 2>/dev/null | grep -q "1 up"; then up=1; break; fi
    sleep 0.5
done
[ -n "$up" ] || { echo "the OSD did not come up within 60 s; see $D/log/osd.0.log" >&2; exit 1; }
start_rgw
# the keys are test-only constants (tests/radosgw_server.py has the same ones)
radosgw-admin $C user create --uid=trainer --display-name=trainer \
    --access-key=LLMRGWTRAINERKEY0001 --secret=llm-rgw-trainer-secret-5b1e93c07d >/dev/null
radosgw-admin $C user create --uid=reader --display-name=reader \
    --access-key=LLMRGWREADERKEY00001 --secret=llm-rgw-reader-secret-0c4d7a2e19 >/dev/null
