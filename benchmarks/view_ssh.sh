#!/usr/bin/env bash
# `dreamtext view` over a real SSH tunnel, as a cluster user opens it, on one Linux machine: three
# network namespaces stand for the compute node, the cluster's login node and the user's laptop,
# joined by veth pairs (laptop - login - node: the laptop reaches the login node only, the login
# node reaches the node), and an OpenSSH server (its own port, config file and keys, not the
# system's) runs in the login node's and in the node's.
#
#   sudo benchmarks/view_ssh.sh up              # namespaces, keys, two sshd (needs root,
#                                               # iproute2, openssh-server and openssh-client)
#   sudo benchmarks/view_ssh.sh node CMD...     # CMD on the "node": its own hostname, `node`
#   sudo benchmarks/view_ssh.sh login CMD...    # CMD on the "login" node: `node` resolves,
#                                               # `ssh node` reaches the node's sshd
#   sudo benchmarks/view_ssh.sh laptop CMD...   # CMD on the "laptop": `ssh login` reaches the
#                                               # login node; `node` does not resolve there
#   sudo benchmarks/view_ssh.sh down            # stop both sshd, remove namespaces and state
#
# The laptop's ssh reads $STATE/ssh_config (names, port, key, known hosts, as a user's
# ~/.ssh/config would); with VIEW_SSH_CONFIG=$STATE/ssh_config_jump it reads the same with
# `ProxyJump login` for the node. Then, as the README says (`dreamtext view` prints the lines):
#   view_ssh.sh node dreamtext view WORKSPACE &                             # on the node
#   view_ssh.sh laptop ssh -N -J login -L 8000:127.0.0.1:8000 node &        # on the laptop
#   view_ssh.sh laptop curl -s 'http://127.0.0.1:8000/api/runs.json?token=...'  # its token
# `link down` / `link up` take the veth pair between login node and node down and up again: the
# network under a tunnel drops without either end knowing (a tunnel that hangs, not one that
# closes).
#
# `check` does all of it and drives Chromium (Playwright) on the laptop through the tunnels:
#   source /work/venv/bin/activate; export PYTHONPATH=$PWD OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
#   benchmarks/view_ssh.sh up && benchmarks/view_ssh.sh check; benchmarks/view_ssh.sh down
# It trains a finished run (`dreamtext text "a red cube" --model builtin:shapes`, ~1 min on two
# cores) and starts one that keeps training, starts `dreamtext view` on the node (and a second
# with `--host 0.0.0.0`), then on the laptop the ssh line the viewer printed (with -N) through a
# ProxyJump in the laptop's ssh config, and checks the gallery, a run page (3D mesh, turntable,
# downloads against the files), the live run, the tunnel killed and started again, the network
# under it down and up, the viewer stopped and started, and `--host 0.0.0.0` opened by the node's
# name from the login node. Then the other ways through the login node: the printed line alone
# (no ProxyJump: it cannot work), the printed `-J` line, the printed `ssh -L P:node:P login` to
# the `--host 0.0.0.0` viewer, and two tunnels chained (laptop -> login -> node), each with the
# gallery, the GLB drawn and downloaded, the turntable and the live run. One line per check;
# screenshots in $WORK/shots (WORK: $STATE/work).
#
# Override the names with NODE_NS, LOGIN_NS, LAPTOP_NS, STATE (a folder for keys and configs),
# SSH_PORT. The hosts are called node, login and laptop whatever their namespaces' names.
set -euo pipefail

NODE_NS=${NODE_NS:-node}
LOGIN_NS=${LOGIN_NS:-login}
LAPTOP_NS=${LAPTOP_NS:-laptop}
STATE=${STATE:-/tmp/dreamtext-view-ssh}
SSH_PORT=${SSH_PORT:-2222}
NODE_IP=10.77.0.1           # the cluster's network: node and login node
LOGIN_INSIDE_IP=10.77.0.3
LOGIN_OUTSIDE_IP=10.77.1.1  # the outside: login node and laptop
LAPTOP_IP=10.77.1.2
VETH_NODE=dtv-node
VETH_LOGIN_NODE=dtv-login-n
VETH_LOGIN_LAPTOP=dtv-login-l
VETH_LAPTOP=dtv-laptop

die() { echo "view_ssh.sh: $*" >&2; exit 2; }

has_netns() { ip netns list | awk '{print $1}' | grep -qx "$1"; }

# An sshd of this setup's own in namespace $1 with hostname $2, listening on $3.
start_sshd() {
    local ns=$1 name=$2 address=$3
    ssh-keygen -q -t ed25519 -N '' -f "$STATE/${name}_host_key" -C "view_ssh $name host"
    cat >"$STATE/sshd_${name}_config" <<EOF
Port $SSH_PORT
ListenAddress $address
HostKey $STATE/${name}_host_key
PidFile $STATE/sshd_$name.pid
AuthorizedKeysFile $STATE/authorized_keys
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
UsePAM no
StrictModes no
AllowTcpForwarding local
X11Forwarding no
PrintMotd no
LogLevel VERBOSE
EOF
    printf '[%s]:%s %s\n' "$name" "$SSH_PORT" "$(cut -d' ' -f1,2 "$STATE/${name}_host_key.pub")" \
        >>"$STATE/known_hosts"
    ip netns exec "$ns" unshare --uts sh -c 'hostname "$0" && exec "$@"' "$name" \
        /usr/sbin/sshd -f "$STATE/sshd_${name}_config" -E "$STATE/sshd_$name.log"
    for _ in $(seq 50); do [ -s "$STATE/sshd_$name.pid" ] && break; sleep 0.1; done
}

# The client config, as a user's ~/.ssh/config would have it; $1: a line more for the node.
ssh_config() {
    local host
    for host in login node; do
        cat <<EOF
Host $host
    HostName $host
    Port $SSH_PORT
    User root
    IdentityFile $STATE/user_key
    IdentitiesOnly yes
    UserKnownHostsFile $STATE/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
    ConnectTimeout 10
EOF
    done
    [ -z "${1:-}" ] || printf '    %s\n' "$1"
}

up() {
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
    command -v ip >/dev/null || die "no ip: apt-get install iproute2"
    [ -x /usr/sbin/sshd ] || die "no sshd: apt-get install openssh-server"
    command -v ssh >/dev/null || die "no ssh: apt-get install openssh-client"
    for ns in "$NODE_NS" "$LOGIN_NS" "$LAPTOP_NS"; do
        has_netns "$ns" && die "namespace $ns exists: run '$0 down' first"
    done
    mkdir -p "$STATE"
    chmod 700 "$STATE"

    for ns in "$NODE_NS" "$LOGIN_NS" "$LAPTOP_NS"; do
        ip netns add "$ns"
        ip -n "$ns" link set lo up
    done
    ip link add "$VETH_NODE" type veth peer name "$VETH_LOGIN_NODE"
    ip link add "$VETH_LAPTOP" type veth peer name "$VETH_LOGIN_LAPTOP"
    ip link set "$VETH_NODE" netns "$NODE_NS"
    ip link set "$VETH_LOGIN_NODE" netns "$LOGIN_NS"
    ip link set "$VETH_LOGIN_LAPTOP" netns "$LOGIN_NS"
    ip link set "$VETH_LAPTOP" netns "$LAPTOP_NS"
    ip -n "$NODE_NS" addr add "$NODE_IP/24" dev "$VETH_NODE"
    ip -n "$LOGIN_NS" addr add "$LOGIN_INSIDE_IP/24" dev "$VETH_LOGIN_NODE"
    ip -n "$LOGIN_NS" addr add "$LOGIN_OUTSIDE_IP/24" dev "$VETH_LOGIN_LAPTOP"
    ip -n "$LAPTOP_NS" addr add "$LAPTOP_IP/24" dev "$VETH_LAPTOP"
    ip -n "$NODE_NS" link set "$VETH_NODE" up
    ip -n "$LOGIN_NS" link set "$VETH_LOGIN_NODE" up
    ip -n "$LOGIN_NS" link set "$VETH_LOGIN_LAPTOP" up
    ip -n "$LAPTOP_NS" link set "$VETH_LAPTOP" up
    # The login node is no router (a new namespace has net.ipv4.ip_forward 0) and the laptop has
    # no route to 10.77.0.0/24: only ssh through the login node reaches the node.

    # `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts: the laptop knows the
    # login node by name, the login node knows the node, as the cluster's DNS would.
    mkdir -p "/etc/netns/$LAPTOP_NS" "/etc/netns/$LOGIN_NS"
    printf '127.0.0.1 localhost\n::1 localhost\n%s login\n' "$LOGIN_OUTSIDE_IP" \
        >"/etc/netns/$LAPTOP_NS/hosts"
    printf '127.0.0.1 localhost\n::1 localhost\n%s login\n%s node\n' "$LOGIN_INSIDE_IP" \
        "$NODE_IP" >"/etc/netns/$LOGIN_NS/hosts"

    # One user key for both hosts, as a cluster's shared home gives one authorized_keys.
    ssh-keygen -q -t ed25519 -N '' -f "$STATE/user_key" -C "view_ssh user"
    cp "$STATE/user_key.pub" "$STATE/authorized_keys"
    : >"$STATE/known_hosts"
    mkdir -p /run/sshd
    start_sshd "$NODE_NS" node "$NODE_IP"
    start_sshd "$LOGIN_NS" login "$LOGIN_OUTSIDE_IP"
    ssh_config >"$STATE/ssh_config"
    ssh_config "ProxyJump login" >"$STATE/ssh_config_jump"
    ssh_wrapper
    PATH="$STATE/bin:$PATH" ip netns exec "$LAPTOP_NS" ssh login true \
        || die "ssh from $LAPTOP_NS to $LOGIN_NS failed: see $STATE/sshd_login.log"
    PATH="$STATE/bin:$PATH" ip netns exec "$LOGIN_NS" ssh node true \
        || die "ssh from $LOGIN_NS to $NODE_NS failed: see $STATE/sshd_node.log"
    echo "up: $LAPTOP_NS ($LAPTOP_IP) - $LOGIN_NS ($LOGIN_OUTSIDE_IP, $LOGIN_INSIDE_IP) -" \
        "$NODE_NS ($NODE_IP), an sshd on port $SSH_PORT in $LOGIN_NS and $NODE_NS; state in $STATE"
}

down() {
    local pidfile
    for pidfile in "$STATE"/sshd_*.pid; do
        if [ -s "$pidfile" ]; then kill "$(cat "$pidfile")" 2>/dev/null || true; fi
    done
    # Whatever still runs in the namespaces (a view server, a tunnel) was started by this script.
    for ns in "$LAPTOP_NS" "$LOGIN_NS" "$NODE_NS"; do
        if has_netns "$ns"; then
            for pid in $(ip netns pids "$ns"); do kill "$pid" 2>/dev/null || true; done
            ip netns del "$ns"
        fi
    done
    rm -rf "/etc/netns/$LAPTOP_NS" "/etc/netns/$LOGIN_NS" "$STATE"
    echo "down"
}

# On the node: its own hostname (a UTS namespace), so that `dreamtext view` prints "ssh ... node".
on_node() { exec ip netns exec "$NODE_NS" unshare --uts sh -c 'hostname node && exec "$@"' sh "$@"; }

# `ssh` reads this setup's client config (keys, known hosts, port; VIEW_SSH_CONFIG picks the
# one with the ProxyJump), as a user's ~/.ssh/config would. ssh runs a ProxyJump as `ssh -W`
# found on PATH: this same wrapper.
ssh_wrapper() {
    mkdir -p "$STATE/bin"
    printf '#!/bin/sh\nexec /usr/bin/ssh -F "${VIEW_SSH_CONFIG:-%s/ssh_config}" "$@"\n' "$STATE" \
        >"$STATE/bin/ssh"
    chmod +x "$STATE/bin/ssh"
}
on_laptop() { ssh_wrapper; PATH="$STATE/bin:$PATH" exec ip netns exec "$LAPTOP_NS" "$@"; }
on_login() {
    ssh_wrapper
    PATH="$STATE/bin:$PATH" exec ip netns exec "$LOGIN_NS" unshare --uts \
        sh -c 'hostname login && exec "$@"' sh "$@"
}

# The whole walk (see the top of this file).
check() {
    [ -s "$STATE/sshd_node.pid" ] || die "not up: run '$0 up' first"
    command -v dreamtext >/dev/null || die "no dreamtext on PATH: activate its environment"
    ssh_wrapper
    local port=${PORT:-8000} line
    work=${WORK:-$STATE/work}  # global: the EXIT trap reads it after check returns
    mkdir -p "$work/shots"
    local in_node=(ip netns exec "$NODE_NS" unshare --uts sh -c 'hostname node && cd "$0" && exec "$@"' "$work")
    if [ ! -f "$work/workspace/a_red_cube/mesh/mesh.glb" ]; then
        echo "training a_red_cube (the finished run)..."
        "${in_node[@]}" dreamtext text "a red cube" --model builtin:shapes >"$work/cube.log" 2>&1
    fi
    rm -rf "$work/workspace/a_blue_sphere"
    "${in_node[@]}" dreamtext text "a blue sphere" --model builtin:shapes --iters 100000 \
        >"$work/sphere.log" 2>&1 &
    echo $! >"$work/sphere.pid"
    # What this walk started, whatever the walk's end: each by the id it was started with.
    trap 'for f in "$work"/*.pid; do kill "$(cat "$f")" 2>/dev/null || true; done' EXIT
    for _ in $(seq 120); do [ -f "$work/workspace/a_blue_sphere/log.jsonl" ] && break; sleep 0.5; done
    "${in_node[@]}" dreamtext view --port "$port" >"$work/view.log" 2>&1 &
    echo $! >"$work/view.pid"
    for _ in $(seq 60); do grep -q "from another machine" "$work/view.log" && break; sleep 0.5; done
    cat "$work/view.log"
    # The ssh line exactly as the viewer printed it, with -N (no shell: it runs in the background).
    line=$(sed -n 's/.*from another machine: \(ssh .*\), then open.*/\1/p' "$work/view.log")
    [ -n "$line" ] || die "the viewer printed no ssh line: see $work/view.log"
    echo "ssh -N ${line#ssh }" >"$work/tunnel.cmd"
    echo "laptop: $(cat "$work/tunnel.cmd")"
    # Through the login node by the ProxyJump in the laptop's ssh config: the line as printed.
    # shellcheck disable=SC2046  # the printed line, split into words as a shell would
    VIEW_SSH_CONFIG=$STATE/ssh_config_jump PATH="$STATE/bin:$PATH" \
        ip netns exec "$LAPTOP_NS" $(cat "$work/tunnel.cmd") \
        >>"$work/tunnel.log" 2>&1 &
    echo $! >"$work/tunnel.pid"
    "${in_node[@]}" dreamtext view --host 0.0.0.0 --port $((port + 1)) >"$work/view_all.log" 2>&1 &
    echo $! >"$work/view_all.pid"
    sleep 3
    cat "$work/view_all.log"
    PATH="$STATE/bin:$PATH" WORK="$work" PORT="$port" VIEW_SSH="$0" STATE="$STATE" \
        VIEW_SSH_CONFIG=$STATE/ssh_config_jump ip netns exec "$LAPTOP_NS" python - <<'PY'
# Runs on the laptop: Chromium through the tunnel. One line per check: ok/FAIL, what was seen.
import contextlib
import os
import re
import signal
import subprocess
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

WORK, PORT, SCRIPT = Path(os.environ["WORK"]), int(os.environ["PORT"]), os.environ["VIEW_SSH"]
# The laptop's ssh config without the ProxyJump: the other ways through the login node.
PLAIN = {**os.environ, "VIEW_SSH_CONFIG": os.environ["STATE"] + "/ssh_config"}
BASE, SHOTS = f"http://127.0.0.1:{PORT}/", WORK / "shots"
CUBE = WORK / "workspace" / "a_red_cube"
ARGS = ["--no-sandbox", "--disable-gpu", "--use-angle=swiftshader", "--enable-unsafe-swiftshader"]
ARGS += ["--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARGS += ["--disable-quic", "--no-first-run"]
FACTS = "() => [...document.querySelectorAll('.facts')].map(e => e.textContent).join(' | ')"
OFFLINE = "() => { const o = document.querySelector('.offline'); return !!o && !o.hidden }"
results = []


def report(ok, what, seen):
    results.append(ok)
    print(f"{'ok  ' if ok else 'FAIL'} {what}: {seen}", flush=True)


def until(page, predicate, seconds):
    """Seconds until predicate() held (polled every 0.25 s), or None."""
    start = time.monotonic()
    while time.monotonic() - start < seconds:
        if predicate():
            return time.monotonic() - start
        page.wait_for_timeout(250)
    return None


def restart(name, argv, env=None):
    log = open(WORK / f"{name}.log", "a")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    (WORK / f"{name}.pid").write_text(str(proc.pid))


def stop(name, sig=signal.SIGTERM):
    pid = int((WORK / f"{name}.pid").read_text())
    os.kill(pid, sig)
    with contextlib.suppress(ChildProcessError):  # a child of this script: reaped, port freed
        os.waitpid(pid, 0)


def token(log):
    """The ``?token=...`` of the last address the viewer printed in WORK/log, as the user copies
    it ('' from a viewer without tokens): a viewer started again prints the same one (kept in
    $XDG_STATE_HOME/dreamtext/view-token) unless it was started with --new-token."""
    found = re.findall(r"runs at http://\S+?(\?token=[0-9a-f]+)", (WORK / log).read_text())
    return found[-1] if found else ""


def step(page):
    text = page.evaluate(FACTS)
    return int(text.split("step ")[1].split(" ")[0].replace(",", "")) if "step " in text else -1


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.on("pageerror", lambda e: print("page error:", e, flush=True))

    page.goto(BASE + token("view.log"))  # the printed address; its cookie serves the rest
    page.wait_for_selector('.card[data-run="a_blue_sphere"]')
    cards = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.run + ':' + c.dataset.state)")
    report(sorted(cards) == ["a_blue_sphere:running", "a_red_cube:finished"], "gallery", cards)
    card = page.locator('.card[data-run="a_blue_sphere"] .facts')
    first = card.inner_text()
    took = until(page, lambda: card.inner_text() != first, 30)
    report(took is not None, "gallery card follows the live run", f"{first!r} -> {card.inner_text()!r}")
    page.screenshot(path=str(SHOTS / "gallery.png"), full_page=True)

    page.goto(BASE + "run/a_red_cube/")
    page.wait_for_selector("#mesh-canvas[data-state=drawn]", timeout=60_000)
    lit = page.evaluate("""() => { const c = document.createElement('canvas');
        const s = document.getElementById('mesh-canvas'); c.width = s.width; c.height = s.height;
        const g = c.getContext('2d'); g.drawImage(s, 0, 0);
        const d = g.getImageData(0, 0, c.width, c.height).data; let red = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] > 150 && d[i + 1] < 90) red++;
        return red / (c.width * c.height) }""")
    report(lit > 0.05, "3D mesh (GLB) drawn", f"{lit:.0%} of the canvas red")
    video = "() => { const v = document.querySelector('video'); return v && [v.readyState, v.currentTime, v.currentSrc.split('/').pop()] }"
    v0 = page.evaluate(video)
    page.wait_for_timeout(1500)
    v1 = page.evaluate(video)
    report(bool(v1) and v1[0] >= 2 and v1[1] != v0[1], "turntable video plays", f"{v0} -> {v1}")
    page.screenshot(path=str(SHOTS / "run_cube.png"), full_page=True)
    for label, name in (("GLB", "mesh.glb"), ("PLY", "mesh.ply")):
        with page.expect_download() as d:
            page.locator(".downloads a", has_text=label).first.click()
        got = Path(d.value.path()).read_bytes()
        same = got == (CUBE / "mesh" / name).read_bytes()
        report(same, f"{label} download", f"{d.value.suggested_filename}, {len(got)} bytes, same as the node's file: {same}")
    with page.expect_download() as d:
        page.locator(".downloads a.zip").click()
    import zipfile
    names = zipfile.ZipFile(d.value.path()).namelist()
    report("a_red_cube/mesh.glb" in names, "zip download", f"{d.value.suggested_filename}: {names}")

    page.goto(BASE + "run/a_blue_sphere/")
    page.wait_for_selector(".chart")
    s0 = step(page)
    chart = "() => document.querySelector('.chart[data-key=loss]').dataset.points"
    c0 = page.evaluate(chart)
    page.wait_for_timeout(8000)
    s1, c1 = step(page), page.evaluate(chart)
    report(s1 > s0 and c1 != c0, "live run page: step and curves advance", f"step {s0} -> {s1}, loss points {c0} -> {c1}")
    page.screenshot(path=str(SHOTS / "run_live.png"), full_page=True)

    tunnel = ["ssh"] + (WORK / "tunnel.cmd").read_text().split()[1:]
    stop("tunnel")
    shown = until(page, lambda: page.evaluate(OFFLINE), 30)
    note = page.inner_text(".offline") if shown is not None else ""
    report(shown is not None, "tunnel killed: the page says so", f"after {shown:.1f} s: {note}" if note else "never")
    page.wait_for_timeout(30_000)
    page.screenshot(path=str(SHOTS / "tunnel_killed.png"))
    restart("tunnel", tunnel)
    back = until(page, lambda: not page.evaluate(OFFLINE), 30)
    s2 = step(page)
    page.wait_for_timeout(2500)
    report(back is not None and step(page) > s1, "tunnel started again after 30 s: the page follows again", f"after {back:.1f} s, step {s2} -> {step(page)}" if back is not None else "never")

    subprocess.run([SCRIPT, "link", "down"], check=True)
    shown = until(page, lambda: page.evaluate(OFFLINE), 40)
    report(shown is not None, "network under the tunnel down (ssh hangs): the page says so", f"after {shown:.1f} s" if shown is not None else "never")
    page.wait_for_timeout(20_000)
    subprocess.run([SCRIPT, "link", "up"], check=True)
    back = until(page, lambda: not page.evaluate(OFFLINE), 40)
    report(back is not None, "network back, same ssh: the page follows again", f"after {back:.1f} s" if back is not None else "never")

    stop("view")
    shown = until(page, lambda: page.evaluate(OFFLINE), 30)
    report(shown is not None, "viewer stopped: the page says so", f"after {shown:.1f} s" if shown is not None else "never")
    page.screenshot(path=str(SHOTS / "viewer_stopped.png"))
    try:
        page.goto(BASE + "run/a_blue_sphere/")
        reload = "loaded"
    except Exception as error:  # ssh takes the connection, finds nothing on the node's port
        reload = str(error).splitlines()[0]
    report("ERR_" in reload, "reload with the viewer stopped: the browser's error page", reload)
    node = [SCRIPT, "node", "sh", "-c", f'cd "{WORK}" && exec dreamtext view --port {PORT}']
    restart("view", node)
    time.sleep(3)
    page.goto(BASE + token("view.log"))  # the address it printed (the same token as before)
    page.goto(BASE + "run/a_blue_sphere/")
    page.wait_for_selector(".chart")
    report(not page.evaluate(OFFLINE), "viewer started again, page reloaded", page.evaluate(FACTS))

    # --host 0.0.0.0 by the node's name: from the login node, where the name resolves.
    fetch = f"import urllib.request as u; print(u.urlopen('http://node:{PORT + 1}/api/runs.json{token('view_all.log')}').read().decode())"
    got = subprocess.run([SCRIPT, "login", "python", "-c", fetch], capture_output=True, text=True)
    runs = re.findall(r'"(a_[a-z_]+)"', got.stdout)
    report(sorted(set(runs)) == ["a_blue_sphere", "a_red_cube"], f"--host 0.0.0.0 opened as http://node:{PORT + 1}/ from the login node", sorted(set(runs)) or got.stderr.strip()[-200:])
    stop("tunnel")

    # The other ways through the login node; the laptop's ssh config has no ProxyJump now.
    def printed(log, start):
        """The ssh command of the line in the viewer's output that starts with start, as a list."""
        for text in (WORK / log).read_text().splitlines():
            if text.strip().startswith(start):
                return text.split(start, 1)[1].split(", then open")[0].split()

    def reach(base, what, ssh_log, log="view.log"):
        """The gallery (opened with the token that the viewer's output ``log`` printed), the
        cube's GLB drawn and downloaded, its turntable, the live run."""
        try:
            page.goto(base + token(log))
            page.wait_for_selector('.card[data-run="a_blue_sphere"]', timeout=30_000)
        except Exception as error:
            tail = (WORK / ssh_log).read_text().strip().splitlines()[-1:]
            report(False, f"{what}: gallery", f"{str(error).splitlines()[0]}; ssh: {tail}")
            return
        cards = page.eval_on_selector_all(".card", "cs => cs.map(c => c.dataset.run + ':' + c.dataset.state)")
        report(sorted(cards) == ["a_blue_sphere:running", "a_red_cube:finished"], f"{what}: gallery", cards)
        page.goto(base + "run/a_red_cube/")
        page.wait_for_selector("#mesh-canvas[data-state=drawn]", timeout=60_000)
        v0 = page.evaluate(video)
        page.wait_for_timeout(1500)
        v1 = page.evaluate(video)
        with page.expect_download() as d:
            page.locator(".downloads a", has_text="GLB").first.click()
        same = Path(d.value.path()).read_bytes() == (CUBE / "mesh" / "mesh.glb").read_bytes()
        played = bool(v1) and v1[0] >= 2 and v1[1] != v0[1]
        report(same and played, f"{what}: GLB drawn, downloaded, turntable plays", f"GLB same as the node's: {same}, video {v0} -> {v1}")
        page.goto(base + "run/a_blue_sphere/")
        page.wait_for_selector(".chart")
        s0 = step(page)
        page.wait_for_timeout(5000)
        report(step(page) > s0, f"{what}: live run", f"step {s0} -> {step(page)}")

    first = printed("view.log", "from another machine:")
    alone = subprocess.run(first[:1] + ["-o", "BatchMode=yes"] + first[1:] + ["true"], capture_output=True, text=True, env=PLAIN)
    report(alone.returncode == 255 and "Could not resolve hostname node" in alone.stderr, "the printed line alone (no ProxyJump, no -J): fails on the laptop", f"exit {alone.returncode}: {alone.stderr.strip()}")
    import socket
    try:
        socket.create_connection(("10.77.0.1", PORT + 1), timeout=3).close()
        direct = "connected"
    except OSError as error:
        direct = str(error)
    report(direct != "connected", "the laptop cannot reach the node by address", f"http://10.77.0.1:{PORT + 1}/: {direct}")

    jump = printed("view.log", "through a login node:")
    jump = [w.replace("LOGIN_NODE", "login") for w in jump]
    report(jump[:3] == ["ssh", "-J", "login"] and jump[3:] == first[1:], "the printed -J line is the first with -J", " ".join(jump))
    restart("tunnel_j", ["ssh", "-N"] + jump[1:], PLAIN)
    time.sleep(3)
    reach(BASE, "ssh -J login (printed line)", "tunnel_j.log")
    page.screenshot(path=str(SHOTS / "run_live_jump.png"), full_page=True)
    stop("tunnel_j")

    via = [w.replace("LOGIN_NODE", "login") for w in printed("view_all.log", "through a login node:")]
    report(via[-1] == "login" and f"{PORT + 1}:node:{PORT + 1}" in via, "--host 0.0.0.0: the printed login-node line", " ".join(via))
    restart("tunnel_all", ["ssh", "-N"] + via[1:], PLAIN)
    time.sleep(3)
    reach(f"http://127.0.0.1:{PORT + 1}/", f"ssh -L {PORT + 1}:node:{PORT + 1} login, --host 0.0.0.0", "tunnel_all.log", "view_all.log")
    stop("tunnel_all")

    # Two tunnels, one on the login node to the node, one from the laptop to the login node.
    hop = PORT + 2
    restart("tunnel_login", [SCRIPT, "login", "ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{hop}:127.0.0.1:{PORT}", "node"], PLAIN)
    restart("tunnel_laptop", ["ssh", "-N", "-o", "ExitOnForwardFailure=yes", "-L", f"{hop}:127.0.0.1:{hop}", "login"], PLAIN)
    time.sleep(3)
    reach(f"http://127.0.0.1:{hop}/", f"two tunnels chained (laptop -> login:{hop} -> node:{PORT})", "tunnel_laptop.log")
    stop("tunnel_laptop")
    stop("tunnel_login")
    browser.close()
print(f"{sum(results)} of {len(results)} checks ok", flush=True)
raise SystemExit(0 if all(results) else 1)
PY
}

case "${1:-}" in
    up) up ;;
    check) check ;;
    down) down ;;
    node) shift; on_node "$@" ;;
    login) shift; on_login "$@" ;;
    laptop) shift; on_laptop "$@" ;;
    link)
        case "${2:-}" in
            down | up) ip -n "$NODE_NS" link set "$VETH_NODE" "$2" ;;
            *) die "link down|up" ;;
        esac
        ;;
    *) die "usage: $0 up|check|down|node CMD...|login CMD...|laptop CMD...|link down|up" ;;
esac
