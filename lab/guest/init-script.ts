/**
 * The lab VM's /init (busybox sh, PID 1): what systemd would do on a real VM, in the
 * order it would do it.
 *
 * 1. Mounts proc, sys, dev, /tmp and /run; installs busybox's applets.
 * 2. Reads the `xmig.*` words of /proc/cmdline (lab/guest/guest-config.ts documents them)
 *    and writes the node's and agent's config files and the keys under /etc/xmig/run and
 *    /var/lib/xmig (`init --configure CMDLINE DIR` does only this, for tests).
 * 3. Turns IPv6 DAD off (the link-local address derived from the MAC must be usable at
 *    once, on every segment), loads the kernel modules listed in /etc/xmig/modules in
 *    that order (virtio-net, virtio-blk, ext4 and what they need), brings up lo and eth0,
 *    and the fixed IPv4 address if configured; mounts /dev/vda at /data if there is one.
 * 4. Keeps the clock on the RTC's (QEMU's follows the host's): stepped when 2 s apart, as
 *    a VM's chrony would after a migration's downtime.
 * 5. Starts `xmig node`, then, once its API socket is there, `xmig agent`,
 *    `xmig cal serve` and, with xmig.tunnelkey, `xmig tunnel serve` in front of a TCP
 *    service on loopback (`guest.tunnel-ready` {dag} once it listens), each restarted a
 *    second after it exits (systemd's Restart=always).
 *
 * 6. Then the Table 2 workloads the config asks for (guest-config.ts: xmig.files, xmig.dbench,
 *    xmig.iperf3), and a reader of the host's commands on the third serial port (/dev/ttyS2,
 *    a Unix socket on the host: LabVm.command). One line each, `CMD ID` (ID 1-999999999),
 *    answered by an event carrying `id`; a line it cannot read is ignored (the host re-sends
 *    until the answer comes, so a command sent before the reader listened is not lost):
 *    - `verify ID`: the file writer paused between two writes, the disk synced and the page
 *      cache dropped, every /data/xmig-files file's sha1 read back from the disk:
 *      `guest.files-verified` {id, files (count), sha1s: {"f00": "<40 hex>", ...}, settled
 *      (false if the writer did not pause within 60 s)}.
 *    - `finish ID`: the file writer and dbench stopped, sync, /data unmounted:
 *      `guest.data-unmounted` {id, ok}; a second finish answers ok again.
 *
 *    Their events: `guest.file-wrote` {file, sha1, seq} after each fsynced write,
 *    `guest.dbench` {line} for every line dbench prints, `guest.iperf3-listening` {port},
 *    `guest.exited` {daemon: dbench|iperf3, code}, `guest.workload-skipped` {workload, reason}
 *    (no /data, or the program not in the image).
 *
 * Where things go: each daemon's JSON log lines (stdout) go to the second serial port
 * (/dev/ttyS1, the host's event log) and to /run/xmig/log/NAME.log in the guest; their
 * stderr goes to the console (/dev/ttyS0, the host's serial log). init itself writes
 * `guest.*` events to the event log (`uptimeMs` = guest uptime) — one per boot phase,
 * `guest.exited` when a daemon ends, and `guest.ready` (hid, ad, dag, memUsedKb) once the
 * node, the agent and the Goldbach service are all up; the console then shows
 * `xmig-guest ready hid=… dag=…`.
 *
 * Nothing CPU-heavy runs here: keys come from the command line, the code was compiled on
 * the host, and Node.js (~9 s to start under TCG) starts once per daemon (three, four
 * with a tunnel), side by side.
 */
import { XMIG_NODE_FLAGS } from '../../shared/node-flags.js';
import { GUEST_AGENT_METRICS_PORT, GUEST_INTERFACE, GUEST_NODE_METRICS_PORT, XIANET_GROUP, XIANET_PORT } from '../lab-constants.js';

/** Where the image puts things (lab/image/image-layout.ts builds that tree). */
export const GUEST_PATHS = {
  node: '/usr/bin/node',
  xmig: '/opt/xmig/bin/xmig.js',
  modules: '/etc/xmig/modules',
  manifest: '/etc/xmig/image.json',
  apiSocket: '/run/xmig/node.sock',
  controlSocket: '/run/xmig/control.sock',
  nodeKey: '/var/lib/xmig/node.key',
  goldbachKey: '/var/lib/xmig/goldbach.key',
  tunnelKey: '/var/lib/xmig/tunnel.key',
  agentState: '/var/lib/xmig/agent.json',
  controlToken: '/var/lib/xmig/control.token',
  configDir: '/etc/xmig/run',
  logDir: '/run/xmig/log',
  dataDevice: '/dev/vda',
  dataMount: '/data',
  /** xmig.files' rotating files. */
  filesDir: '/data/xmig-files',
  dbenchLoadfile: '/usr/share/dbench/client.txt',
  /** The host's command channel (a Unix socket in the VM's dir, lab/qemu-command.ts). */
  commandPort: '/dev/ttyS2',
  /** Marker files between the workload loops and the command reader. */
  workDir: '/run/xmig/work',
} as const;

/** The line the console shows once the guest is up (and the event log's `guest.ready`). */
export const GUEST_READY_PREFIX = 'xmig-guest ready';

const P = GUEST_PATHS;
/** With xmig.control: the node's control port on loopback, which the relay on PORT reaches. */
export const GUEST_CONTROL_LOOPBACK_PORT = 7100;
const NODE = `${P.node} ${XMIG_NODE_FLAGS.join(' ')} ${P.xmig}`;

/** The script (deterministic: it is an input of the image hash). */
export const GUEST_INIT = `#!/bin/busybox sh
# xmig lab guest init: see lab/guest/init-script.ts for what it does and why.
export PATH=/bin:/usr/bin
EVENTS=/dev/ttyS1

uptime_ms() {
  read -r up _ < /proc/uptime
  frac=\${up#*.}
  frac=\${frac#0}
  echo $(( \${up%.*} * 1000 + frac * 10 ))
}

# event NAME [,"field":value...]: one JSON line on the event log.
event() {
  echo "{\\"event\\":\\"$1\\",\\"component\\":\\"guest-init\\",\\"uptimeMs\\":$(uptime_ms)$2}" >> $EVENTS
}

pem() {
  echo '-----BEGIN PRIVATE KEY-----'
  echo "$1" | tr '_-' '/+'
  echo '-----END PRIVATE KEY-----'
}

# configure CMDLINE DIR KEYDIR: the config files from the kernel command line.
configure() {
  NAME= KEY= PORT=${XIANET_PORT} GROUP=${XIANET_GROUP} MTU= LOG=info TRUST= CALKEY= CALNAME= CALTCP= NAMES=
  IPV4= GW4= METRICS=${GUEST_NODE_METRICS_PORT} AGENTMETRICS=${GUEST_AGENT_METRICS_PORT} CONTROL= FILES= DBENCH= IPERF3= TUNNELKEY= TUNNELTO=
  for word in $(cat "$1"); do
    value=\${word#*=}
    case "$word" in
      xmig.name=*) NAME=$value ;;
      xmig.key=*) KEY=$value ;;
      xmig.port=*) PORT=$value ;;
      xmig.group=*) GROUP=$value ;;
      xmig.mtu=*) MTU=$value ;;
      xmig.log=*) LOG=$value ;;
      xmig.trust=*) TRUST=$value ;;
      xmig.calkey=*) CALKEY=$value ;;
      xmig.calname=*) CALNAME=$value ;;
      xmig.caltcp=*) CALTCP=$value ;;
      xmig.names=*) NAMES=$value ;;
      xmig.ipv4=*) IPV4=$value ;;
      xmig.gw4=*) GW4=$value ;;
      xmig.metrics=*) METRICS=$value ;;
      xmig.agentmetrics=*) AGENTMETRICS=$value ;;
      xmig.control=*) CONTROL=$value ;;
      xmig.files=*) FILES=$value ;;
      xmig.dbench=*) DBENCH=$value ;;
      xmig.iperf3=*) IPERF3=$value ;;
      xmig.tunnelkey=*) TUNNELKEY=$value ;;
      xmig.tunnelto=*) TUNNELTO=$value ;;
    esac
  done
  if [ -z "$NAME" ] || [ -z "$KEY" ]; then
    echo "xmig-guest: xmig.name and xmig.key are required on the kernel command line" >&2
    return 1
  fi
  mkdir -p "$2" "$3"
  pem "$KEY" > "$3/node.key"
  chmod 600 "$3/node.key"
  if [ -n "$CALKEY" ]; then
    pem "$CALKEY" > "$3/goldbach.key"
    chmod 600 "$3/goldbach.key"
  fi
  if [ -n "$TUNNELKEY" ]; then
    pem "$TUNNELKEY" > "$3/tunnel.key"
    chmod 600 "$3/tunnel.key"
  fi
  trusted=
  for ad in $(echo "$TRUST" | tr ',' ' '); do
    trusted="$trusted\${trusted:+,}\\"AD:$ad\\""
  done
  names=
  for entry in $(echo "$NAMES" | tr ',' ' '); do
    case "$entry" in
      *@*) item="{\\"name\\":\\"\${entry%@*}\\",\\"sid\\":\\"SID:\${entry#*@}\\"}" ;;
      *) item="{\\"name\\":\\"$entry\\"}" ;;
    esac
    names="$names\${names:+,}$item"
  done
  mtu=
  [ -n "$MTU" ] && mtu=",\\"mtu\\":$MTU"
  # The control port: the node's Unix socket; or, with xmig.control, TCP on loopback, where a
  # connection may only read until it gives the token (only the guest can read that file) and
  # which a relay on PORT opens to the segment: the lab reads the VM's routes, nobody writes them.
  control="{\\"path\\":\\"${P.controlSocket}\\"}" agentcontrol="\\"control\\":\\"${P.controlSocket}\\""
  if [ -n "$CONTROL" ]; then
    control="{\\"host\\":\\"127.0.0.1\\",\\"port\\":${GUEST_CONTROL_LOOPBACK_PORT},\\"tokenFile\\":\\"${P.controlToken}\\"}"
    agentcontrol="\\"control\\":\\"127.0.0.1:${GUEST_CONTROL_LOOPBACK_PORT}\\",\\"controlTokenFile\\":\\"${P.controlToken}\\""
  fi
  cat > "$2/node.json" <<EOF
{"name":"$NAME","role":"host","keyFile":"$3/node.key","trustedAds":[$trusted],
 "interfaces":[{"name":"${GUEST_INTERFACE}","bind":"::","port":$PORT,"multicastGroup":"$GROUP","multicastInterface":"::%${GUEST_INTERFACE}"$mtu}],
 "controlPort":$control,"apiSocket":"${P.apiSocket}",
 "metrics":{"host":"::","port":$METRICS},"logLevel":"$LOG"}
EOF
  cat > "$2/agent.json" <<EOF
{"api":"${P.apiSocket}",$agentcontrol,"router":"$NAME","keyFile":"$3/node.key",
 "stateFile":"${P.agentState}","names":[$names],"metrics":{"host":"::","port":$AGENTMETRICS},"logLevel":"$LOG"}
EOF
  {
    echo "LOG=$LOG"
    echo "MTU=$MTU"
    echo "IPV4=$IPV4"
    echo "GW4=$GW4"
    echo "CALKEY=\${CALKEY:+yes}"
    echo "CALNAME=$CALNAME"
    echo "CALTCP=$CALTCP"
    echo "CONTROL=$CONTROL"
    echo "FILES=$FILES"
    echo "DBENCH=$DBENCH"
    echo "IPERF3=$IPERF3"
    echo "TUNNELKEY=\${TUNNELKEY:+yes}"
    echo "TUNNELTO=$TUNNELTO"
  } > "$2/guest.env"
}

# The Table 2 workloads and the host's commands on ttyS2, started once the guest is ready
# (start_workloads; not before, so as not to slow the boot). State between the loops is
# marker files in $W (they run in subshells). The paths are variables so that
# "init --workloads EVENTS DATA WORK COMMANDS" runs this part alone on a host, for tests.
DATA_DIR=${P.dataMount}
FILES_DIR=${P.filesDir}
W=${P.workDir}
COMMANDS=${P.commandPort}
LOG_DIR=${P.logDir}
CONSOLE=/dev/console
DROP_CACHES=/proc/sys/vm/drop_caches
CR=$(printf '\\r')
TAB=$(printf '\\t')

# skipped WORKLOAD REASON
skipped() {
  event guest.workload-skipped ",\\"workload\\":\\"$1\\",\\"reason\\":\\"$2\\""
}

# N rotating 1 MiB files, each write fsynced (dd conv=fsync) before its sha1 is logged, one
# a second. Between writes it pauses while $W/files.pause exists (a verify reads a settled
# disk), and ends once $W/files.stop does.
files_writer() {
  mkdir -p $FILES_DIR
  touch $W/files.running
  seq=0
  while [ ! -e $W/files.stop ]; do
    if [ -e $W/files.pause ]; then
      touch $W/files.paused
      usleep 50000
      continue
    fi
    f=f$(printf '%02d' $((seq % FILES)))
    if dd if=/dev/urandom of=$FILES_DIR/$f bs=1048576 count=1 conv=fsync status=none 2> $CONSOLE; then
      sum=$(sha1sum $FILES_DIR/$f)
      event guest.file-wrote ",\\"file\\":\\"$f\\",\\"sha1\\":\\"\${sum%% *}\\",\\"seq\\":$seq"
    else
      event guest.file-failed ",\\"file\\":\\"$f\\",\\"seq\\":$seq"
    fi
    seq=$((seq + 1))
    sleep 1
  done
  rm -f $W/files.running
}

# dbench for a day with its loadfile from the image; each line it prints is an event (a
# JSON string: \\ and " escaped, tabs made spaces, CR dropped). Restarted when it exits,
# until $W/dbench.stop. (dbench 4.0 prints "failed to create barrier semaphore" when semget
# gives it id 0, as on a fresh kernel, and runs on: not an error.)
dbench_loop() {
  mkdir -p $DATA_DIR/dbench
  touch $W/dbench.running
  while [ ! -e $W/dbench.stop ]; do
    dbench -D $DATA_DIR/dbench -c ${P.dbenchLoadfile} -t 86400 "$DBENCH" 2>&1 | while IFS= read -r line; do
      line=\${line%$CR}
      [ -z "$line" ] && continue
      line=\${line//\\\\/\\\\\\\\}
      line=\${line//\\"/\\\\\\"}
      line=\${line//$TAB/ }
      event guest.dbench ",\\"line\\":\\"$line\\""
    done
    event guest.exited ",\\"daemon\\":\\"dbench\\",\\"code\\":$?"
    [ -e $W/dbench.stop ] || sleep 1
  done
  rm -f $W/dbench.running
}

# iperf3's server on all addresses, restarted when it exits; listening once the kernel
# lists its socket (iperf3's own "Server listening" may sit in its stdout buffer).
iperf3_loop() {
  hex=$(printf '%04X' "$IPERF3")
  while true; do
    iperf3 -s -p "$IPERF3" --forceflush >> $LOG_DIR/iperf3.log 2> $CONSOLE &
    pid=$!
    until grep -q ":$hex [0-9A-F]*:0000 0A" /proc/net/tcp6 /proc/net/tcp 2>/dev/null || ! kill -0 $pid 2>/dev/null; do usleep 100000; done
    kill -0 $pid 2>/dev/null && event guest.iperf3-listening ",\\"port\\":$IPERF3"
    wait $pid
    event guest.exited ",\\"daemon\\":\\"iperf3\\",\\"code\\":$?"
    sleep 1
  done
}

# verify ID: the files as the disk has them (caches dropped), with the writer paused
# between two writes, as one event: sha1s is an object file name -> sha1.
verify() {
  settled=true
  if [ -e $W/files.running ]; then
    rm -f $W/files.paused
    touch $W/files.pause
    i=0
    while [ ! -e $W/files.paused ] && [ -e $W/files.running ]; do
      i=$((i + 1))
      [ $i -gt 1200 ] && settled=false && break
      usleep 50000
    done
  fi
  sync
  echo 3 > $DROP_CACHES
  n=0
  sums=
  for f in $FILES_DIR/f*; do
    [ -f "$f" ] || continue
    sum=$(sha1sum "$f")
    sums="$sums\${sums:+,}\\"\${f##*/}\\":\\"\${sum%% *}\\""
    n=$((n + 1))
  done
  rm -f $W/files.pause
  event guest.files-verified ",\\"id\\":$1,\\"files\\":$n,\\"sha1s\\":{$sums},\\"settled\\":$settled"
}

# finish ID: the writer and dbench stopped, the disk synced and unmounted (again: ok).
finish() {
  ok=true
  if [ ! -e $W/data.unmounted ]; then
    touch $W/files.stop $W/dbench.stop
    i=0
    while { [ -e $W/files.running ] || [ -e $W/dbench.running ]; } && [ $i -lt 300 ]; do
      killall dbench 2>/dev/null
      usleep 100000
      i=$((i + 1))
    done
    killall -KILL dbench 2>/dev/null
    sync
    if umount $DATA_DIR 2> $CONSOLE; then touch $W/data.unmounted; else ok=false; fi
  fi
  event guest.data-unmounted ",\\"id\\":$1,\\"ok\\":$ok"
}

# The host's commands, a line each ("verify ID", "finish ID"; ID 1-999999999, echoed in
# the answer); anything else (a line cut short before this port was open) is ignored.
commands() {
  stty -F $COMMANDS raw -echo 2> $CONSOLE
  while true; do
    while IFS=" $CR" read -r command id _; do
      case "$id" in '' | *[!0-9]* | 0*) continue ;; esac
      [ \${#id} -gt 9 ] && continue
      case "$command" in
        verify) verify "$id" < /dev/null ;;
        finish) finish "$id" < /dev/null ;;
      esac
    done < $COMMANDS
    usleep 100000
  done
}

start_workloads() {
  mkdir -p $W
  if [ -n "$FILES" ]; then
    if [ -n "$DATA" ]; then files_writer & else skipped files "no $DATA_DIR"; fi
  fi
  if [ -n "$DBENCH" ]; then
    if [ -z "$DATA" ]; then skipped dbench "no $DATA_DIR"
    elif [ ! -x /usr/bin/dbench ]; then skipped dbench "not in the image"
    else dbench_loop &
    fi
  fi
  if [ -n "$IPERF3" ]; then
    if [ -x /usr/bin/iperf3 ]; then iperf3_loop & else skipped iperf3 "not in the image"; fi
  fi
  commands &
}

if [ "$1" = "--workloads" ]; then
  # For tests: the workloads' part on a host, with ready-made config in the environment.
  EVENTS=$2 DATA_DIR=$3 FILES_DIR=$3/xmig-files W=$4 COMMANDS=$5 LOG_DIR=$4 CONSOLE=$4/console.log DROP_CACHES=$4/drop_caches DATA=yes
  start_workloads
  wait
  exit 0
fi

if [ "$1" = "--configure" ]; then
  configure "$2" "$3" "$4"
  exit $?
fi

/bin/busybox mkdir -p /bin /proc /sys /dev /tmp /run
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t tmpfs -o mode=755 tmpfs /run
stty -F $EVENTS raw -echo 2>/dev/null
event guest.init

if ! configure /proc/cmdline ${P.configDir} /var/lib/xmig; then
  event guest.failed ',"reason":"bad kernel command line"'
  exec sleep 2147483647
fi
. ${P.configDir}/guest.env
export XMIG_LOG_LEVEL=$LOG
event guest.configured

# Before eth0 exists (it inherits "default"): its link-local address is valid at once.
echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad
echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad
while read -r module; do
  insmod "$module" || event guest.module-failed ",\\"module\\":\\"$module\\""
done < ${P.modules}
event guest.modules ",\\"count\\":$(wc -l < ${P.modules})"

ip link set lo up
i=0
while [ ! -e /sys/class/net/${GUEST_INTERFACE} ] && [ $i -lt 100 ]; do usleep 50000; i=$((i + 1)); done
echo 0 > /proc/sys/net/ipv6/conf/${GUEST_INTERFACE}/accept_dad
[ -n "$MTU" ] && ip link set ${GUEST_INTERFACE} mtu "$MTU"
ip link set ${GUEST_INTERFACE} up
[ -n "$IPV4" ] && ip addr add "$IPV4" dev ${GUEST_INTERFACE}
[ -n "$GW4" ] && ip route add default via "$GW4"
mac=$(cat /sys/class/net/${GUEST_INTERFACE}/address 2>/dev/null)
# The link-local address comes once the link has its carrier: wait for it (5 s at most).
i=0
ll=
while [ -z "$ll" ] && [ $i -lt 100 ]; do
  ll=$(ip -6 addr show dev ${GUEST_INTERFACE} scope link 2>/dev/null | grep -v tentative | sed -n 's/.*inet6 \\([0-9a-f:]*\\)\\/64.*/\\1/p')
  [ -z "$ll" ] && usleep 50000
  i=$((i + 1))
done
event guest.network ",\\"mac\\":\\"$mac\\",\\"linkLocal\\":\\"$ll\\",\\"ipv4\\":\\"$IPV4\\""

DATA=
if [ -b ${P.dataDevice} ]; then
  mkdir -p ${P.dataMount}
  if mount -t ext4 ${P.dataDevice} ${P.dataMount}; then
    DATA=yes
    event guest.data ",\\"device\\":\\"${P.dataDevice}\\",\\"mount\\":\\"${P.dataMount}\\""
  else
    event guest.data-failed ",\\"device\\":\\"${P.dataDevice}\\""
  fi
fi

# The clock, as chrony or timesyncd keep a VM's: QEMU's RTC follows the host's clock (on
# whichever host the VM runs), while the guest's own stands still while the VM is stopped —
# a migration's downtime — and can fall behind a starved TCG vCPU. A clock tens of seconds
# behind signs HID-move notices that routers refuse as stale. Stepped to the RTC once they
# are 2 s apart (the RTC counts whole seconds), checked every second.
(
  while true; do
    read -r rtc 2>/dev/null < /sys/class/rtc/rtc0/since_epoch || rtc=
    now=$(date +%s)
    if [ -n "$rtc" ] && { [ $((rtc - now)) -ge 2 ] || [ $((now - rtc)) -ge 2 ]; }; then
      hwclock -s -u && event guest.clock-stepped ",\\"byS\\":$((rtc - now))"
    fi
    sleep 1
  done
) &

mkdir -p ${P.logDir} /run/xmig
set -o pipefail
# run NAME COMMAND...: the daemon, restarted a second after it exits.
run() {
  name=$1
  shift
  (
    while true; do
      "$@" 2> /dev/console | tee -a ${P.logDir}/$name.log > $EVENTS
      event guest.exited ",\\"daemon\\":\\"$name\\",\\"code\\":$?"
      sleep 1
    done
  ) &
}

# logged NAME EVENT: has daemon NAME logged EVENT yet?
logged() {
  grep -q "\\"event\\":\\"$2\\"" ${P.logDir}/$1.log 2>/dev/null
}

field() {
  grep "\\"event\\":\\"$2\\"" ${P.logDir}/$1.log 2>/dev/null | head -n 1 | sed -n "s/.*\\"$3\\":\\"\\([^\\"]*\\)\\".*/\\1/p"
}

run node ${NODE} node --config ${P.configDir}/node.json
until [ -S ${P.apiSocket} ] && logged node node.ready; do usleep 100000; done
event guest.node-ready
if [ -n "$CONTROL" ]; then
  nc -ll -p "$CONTROL" -e nc 127.0.0.1 ${GUEST_CONTROL_LOOPBACK_PORT} 2> /dev/console &
  event guest.control ",\\"port\\":$CONTROL"
fi

run agent ${NODE} agent --config ${P.configDir}/agent.json
if [ -n "$CALKEY" ]; then
  set -- --key /var/lib/xmig/goldbach.key --owner-key /var/lib/xmig/node.key
  [ -n "$CALNAME" ] && set -- "$@" --name "$CALNAME"
  [ -n "$CALTCP" ] && set -- "$@" --tcp "[::]:$CALTCP"
  run cal ${NODE} cal serve --api ${P.apiSocket} "$@"
fi
if [ -n "$TUNNELKEY" ]; then
  run tunnel ${NODE} tunnel serve --api ${P.apiSocket} --key ${P.tunnelKey} --to "127.0.0.1:$TUNNELTO"
fi
until logged agent agent.started; do usleep 100000; done
event guest.agent-ready
if [ -n "$CALKEY" ]; then
  ready=goldbach.listening
  [ -n "$CALNAME" ] && ready=goldbach.registered
  until logged cal $ready && { [ -z "$CALTCP" ] || logged cal goldbach.tcp-listening; }; do usleep 100000; done
  event guest.cal-ready
fi
if [ -n "$TUNNELKEY" ]; then
  until logged tunnel tunnel.listening; do usleep 100000; done
  event guest.tunnel-ready ",\\"dag\\":\\"$(field tunnel tunnel.listening dag)\\""
fi

hid=$(field node node.ready hid)
ad=$(field node gateway.adopted ad)
dag=$(field cal goldbach.listening dag)
[ -z "$dag" ] && [ -n "$ad" ] && dag="RE $ad $hid"
total=$(sed -n 's/^MemTotal: *\\([0-9]*\\).*/\\1/p' /proc/meminfo)
available=$(sed -n 's/^MemAvailable: *\\([0-9]*\\).*/\\1/p' /proc/meminfo)
event guest.ready ",\\"hid\\":\\"$hid\\",\\"ad\\":\\"$ad\\",\\"dag\\":\\"$dag\\",\\"memUsedKb\\":$((total - available)),\\"memTotalKb\\":$total"
echo "${GUEST_READY_PREFIX} hid=$hid dag=$dag mem=$(((total - available) / 1024))MB"

start_workloads

while true; do
  wait
  sleep 60
done
`;
