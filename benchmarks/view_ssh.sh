#!/usr/bin/env bash
# `dreamtext view` over a real SSH tunnel, as a cluster user opens it, on one Linux machine: two
# network namespaces stand for the compute node and the user's laptop, joined by a veth pair, and
# an OpenSSH server (its own port, config file and keys, not the system's) runs in the node's.
#
#   sudo benchmarks/view_ssh.sh up              # namespaces, keys, sshd (needs root, iproute2,
#                                               # openssh-server and openssh-client)
#   sudo benchmarks/view_ssh.sh node CMD...     # CMD on the "node": its own hostname, `node`
#   sudo benchmarks/view_ssh.sh laptop CMD...   # CMD on the "laptop": `ssh node` reaches the
#                                               # node's sshd, and the name `node` resolves
#   sudo benchmarks/view_ssh.sh down            # stop sshd, remove namespaces and state
#
# Then, as the README says (`dreamtext view` prints the ssh line itself):
#   view_ssh.sh node dreamtext view WORKSPACE &                 # on the node
#   view_ssh.sh laptop ssh -N -L 8000:127.0.0.1:8000 node &     # on the laptop
#   view_ssh.sh laptop curl -s http://127.0.0.1:8000/api/runs.json
# `link down` / `link up` take the veth pair down and up again: the network between the two
# drops without either end knowing (a tunnel that hangs, not one that closes).
#
# `check` does all of it and drives Chromium (Playwright) on the laptop through the tunnel:
#   source /work/venv/bin/activate; export PYTHONPATH=$PWD OMP_NUM_THREADS=1 HF_HUB_OFFLINE=1
#   benchmarks/view_ssh.sh up && benchmarks/view_ssh.sh check; benchmarks/view_ssh.sh down
# It trains a finished run (`dreamtext text "a red cube" --model builtin:shapes`, ~1 min on two
# cores) and starts one that keeps training, starts `dreamtext view` on the node, then on the
# laptop the ssh line the viewer printed (with -N), and checks the gallery, a run page (3D mesh,
# turntable, downloads against the files), the live run, the tunnel killed and started again,
# the network under it down and up, the viewer stopped and started, and `--host 0.0.0.0` opened
# by the node's name. One line per check; screenshots in $WORK/shots (WORK: $STATE/work).
#
# Override the names with NODE_NS, LAPTOP_NS, STATE (a folder for keys and configs), SSH_PORT.
set -euo pipefail

NODE_NS=${NODE_NS:-node}
LAPTOP_NS=${LAPTOP_NS:-laptop}
STATE=${STATE:-/tmp/dreamtext-view-ssh}
SSH_PORT=${SSH_PORT:-2222}
NODE_IP=10.77.0.1
LAPTOP_IP=10.77.0.2
VETH_NODE=dtv-node
VETH_LAPTOP=dtv-laptop

die() { echo "view_ssh.sh: $*" >&2; exit 2; }

up() {
    [ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
    command -v ip >/dev/null || die "no ip: apt-get install iproute2"
    [ -x /usr/sbin/sshd ] || die "no sshd: apt-get install openssh-server"
    command -v ssh >/dev/null || die "no ssh: apt-get install openssh-client"
    ip netns list | grep -qw "$NODE_NS" && die "namespace $NODE_NS exists: run '$0 down' first"
    mkdir -p "$STATE"
    chmod 700 "$STATE"

    ip netns add "$NODE_NS"
    ip netns add "$LAPTOP_NS"
    ip link add "$VETH_NODE" type veth peer name "$VETH_LAPTOP"
    ip link set "$VETH_NODE" netns "$NODE_NS"
    ip link set "$VETH_LAPTOP" netns "$LAPTOP_NS"
    ip -n "$NODE_NS" addr add "$NODE_IP/24" dev "$VETH_NODE"
    ip -n "$LAPTOP_NS" addr add "$LAPTOP_IP/24" dev "$VETH_LAPTOP"
    for ns in "$NODE_NS" "$LAPTOP_NS"; do ip -n "$ns" link set lo up; done
    ip -n "$NODE_NS" link set "$VETH_NODE" up
    ip -n "$LAPTOP_NS" link set "$VETH_LAPTOP" up

    # `ip netns exec` bind-mounts /etc/netns/<ns>/hosts over /etc/hosts: the laptop knows the
    # node by name, as a user's ~/.ssh/config or DNS would.
    mkdir -p "/etc/netns/$LAPTOP_NS"
    printf '127.0.0.1 localhost\n::1 localhost\n%s node\n' "$NODE_IP" >"/etc/netns/$LAPTOP_NS/hosts"

    ssh-keygen -q -t ed25519 -N '' -f "$STATE/host_key" -C "view_ssh host"
    ssh-keygen -q -t ed25519 -N '' -f "$STATE/user_key" -C "view_ssh user"
    cp "$STATE/user_key.pub" "$STATE/authorized_keys"
    mkdir -p /run/sshd
    cat >"$STATE/sshd_config" <<EOF
Port $SSH_PORT
ListenAddress $NODE_IP
HostKey $STATE/host_key
PidFile $STATE/sshd.pid
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
    printf '[%s]:%s %s\n' node "$SSH_PORT" "$(cut -d' ' -f1,2 "$STATE/host_key.pub")" \
        >"$STATE/known_hosts"
    cat >"$STATE/ssh_config" <<EOF
Host node
    HostName node
    Port $SSH_PORT
    User root
    IdentityFile $STATE/user_key
    IdentitiesOnly yes
    UserKnownHostsFile $STATE/known_hosts
    StrictHostKeyChecking yes
    BatchMode yes
EOF
    ip netns exec "$NODE_NS" unshare --uts sh -c 'hostname node && exec "$@"' sh /usr/sbin/sshd -f "$STATE/sshd_config" -E "$STATE/sshd.log"
    for _ in $(seq 50); do [ -s "$STATE/sshd.pid" ] && break; sleep 0.1; done
    ip netns exec "$LAPTOP_NS" ssh -F "$STATE/ssh_config" node true \
        || die "ssh from $LAPTOP_NS to $NODE_NS failed: see $STATE/sshd.log"
    echo "up: $NODE_NS ($NODE_IP, sshd on port $SSH_PORT) and $LAPTOP_NS ($LAPTOP_IP); state in $STATE"
}

down() {
    if [ -s "$STATE/sshd.pid" ]; then kill "$(cat "$STATE/sshd.pid")" 2>/dev/null || true; fi
    # Whatever still runs in the namespaces (a view server, a tunnel) was started by this script.
    for ns in "$LAPTOP_NS" "$NODE_NS"; do
        if ip netns list | grep -qw "$ns"; then
            for pid in $(ip netns pids "$ns"); do kill "$pid" 2>/dev/null || true; done
            ip netns del "$ns"
        fi
    done
    rm -rf "/etc/netns/$LAPTOP_NS" "$STATE"
    echo "down"
}

# On the node: its own hostname (a UTS namespace), so that `dreamtext view` prints "ssh ... node".
on_node() { exec ip netns exec "$NODE_NS" unshare --uts sh -c 'hostname node && exec "$@"' sh "$@"; }

# On the laptop, `ssh` reads this setup's client config (keys, known host, port): a user's
# ~/.ssh/config would name the node so.
ssh_wrapper() {
    mkdir -p "$STATE/bin"
    printf '#!/bin/sh\nexec /usr/bin/ssh -F %s/ssh_config "$@"\n' "$STATE" >"$STATE/bin/ssh"
    chmod +x "$STATE/bin/ssh"
}
on_laptop() { ssh_wrapper; PATH="$STATE/bin:$PATH" exec ip netns exec "$LAPTOP_NS" "$@"; }

# The whole walk (see the top of this file).
check() {
    [ -s "$STATE/sshd.pid" ] || die "not up: run '$0 up' first"
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
    # shellcheck disable=SC2046  # the printed line, split into words as a shell would
    PATH="$STATE/bin:$PATH" ip netns exec "$LAPTOP_NS" $(cat "$work/tunnel.cmd") \
        >>"$work/tunnel.log" 2>&1 &
    echo $! >"$work/tunnel.pid"
    "${in_node[@]}" dreamtext view --host 0.0.0.0 --port $((port + 1)) >"$work/view_all.log" 2>&1 &
    echo $! >"$work/view_all.pid"
    sleep 3
    cat "$work/view_all.log"
    PATH="$STATE/bin:$PATH" WORK="$work" PORT="$port" VIEW_SSH="$0" \
        ip netns exec "$LAPTOP_NS" python - <<'PY'
# Runs on the laptop: Chromium through the tunnel. One line per check: ok/FAIL, what was seen.
import os
import signal
import subprocess
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

WORK, PORT, SCRIPT = Path(os.environ["WORK"]), int(os.environ["PORT"]), os.environ["VIEW_SSH"]
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


def restart(name, argv):
    proc = subprocess.Popen(argv, stdout=open(WORK / f"{name}.log", "a"), stderr=subprocess.STDOUT)
    (WORK / f"{name}.pid").write_text(str(proc.pid))


def stop(name, sig=signal.SIGTERM):
    os.kill(int((WORK / f"{name}.pid").read_text()), sig)


def step(page):
    text = page.evaluate(FACTS)
    return int(text.split("step ")[1].split(" ")[0].replace(",", "")) if "step " in text else -1


with sync_playwright() as p:
    browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)
    page = context.new_page()
    page.on("pageerror", lambda e: print("page error:", e, flush=True))

    page.goto(BASE)
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
    page.goto(BASE + "run/a_blue_sphere/")
    page.wait_for_selector(".chart")
    report(not page.evaluate(OFFLINE), "viewer started again, page reloaded", page.evaluate(FACTS))

    page.goto(f"http://node:{PORT + 1}/")
    page.wait_for_selector(".card")
    report(page.locator(".card").count() == 2, f"--host 0.0.0.0 opened as http://node:{PORT + 1}/", f"{page.locator('.card').count()} cards")
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
    laptop) shift; on_laptop "$@" ;;
    link)
        case "${2:-}" in
            down | up) ip -n "$NODE_NS" link set "$VETH_NODE" "$2" ;;
            *) die "link down|up" ;;
        esac
        ;;
    *) die "usage: $0 up|check|down|node CMD...|laptop CMD...|link down|up" ;;
esac
