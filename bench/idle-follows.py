# Open N idle live log follows (SSE) of one running job and measure the coordinator's CPU over a
# window, and its open descriptors. Usage: python3 bench/idle-follows.py PATH_TO_MUSTER FOLLOWS SECONDS
import os, re, socket, subprocess, sys, time, json, urllib.request, tempfile
binary, count, window = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
token = "bench-admin-token-0123456789"
data = tempfile.mkdtemp()
proc = subprocess.Popen([binary, "server", "--listen", "127.0.0.1:0", "--data-dir", data],
    env=dict(os.environ, MUSTER_ADMIN_TOKEN=token, MUSTER_LOG="warn"), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
line = proc.stdout.readline().decode()
url = re.search(r"listening on (http://\S+)", line).group(1)
host, port = url[7:].split(":")
def call(method, path, body, tok=token):
    req = urllib.request.Request(url + path, data=json.dumps(body).encode() if body is not None else None, method=method,
        headers={"Authorization": "Bearer " + tok, "Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req).read() or b"null")
job = call("POST", "/api/v1/jobs", {"kind": "followed"})
runner = call("POST", "/api/v1/runners", {"name": "r"})
claimed = call("POST", "/api/v1/runner/claim", {"kinds": ["followed"]}, runner["token"])
socks = []
for _ in range(count):
    s = socket.create_connection((host, int(port)))
    s.sendall(f"GET /api/v1/jobs/{job['id']}/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\nAccept: text/event-stream\r\n\r\n".encode())
    socks.append(s)
time.sleep(3)
def cpu():
    fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
fds = len(os.listdir(f"/proc/{proc.pid}/fd"))
start = cpu(); time.sleep(window); used = cpu() - start
fds_after = len(os.listdir(f"/proc/{proc.pid}/fd"))
print(f"{count} idle follows: {100*used/window:.1f}% of a core over {window:.0f}s; open fds {fds} -> {fds_after}")
proc.terminate(); proc.wait()
