"""Runs on a proxy host (python3 -, argv: interval seconds, then ADDRESS:PORT/PATH per dialog
server): every `interval` seconds, GET each dialog server's health path from the proxy, as
nginx's upstreams reach them, and print one line "@probe <epoch> <healthy> <total> <down...>".
Stops when stdin closes (the runner's SSH channel goes away)."""

import http.client
import sys
import threading
import time


def healthy(target):
    address, _, rest = target.partition(":")
    port, _, path = rest.partition("/")
    conn = http.client.HTTPConnection(address, int(port), timeout=0.8)
    try:
        conn.request("GET", "/" + path)
        return 200 <= conn.getresponse().status < 400
    except (OSError, http.client.HTTPException):
        return False
    finally:
        conn.close()


def main(argv):
    interval, targets = float(argv[0]), argv[1:]
    stop = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()
    while not stop.is_set():
        started = time.time()
        down = [t for t in targets if not healthy(t)]
        sys.stdout.write("@probe %.3f %d %d %s\n" % (started, len(targets) - len(down),
                                                     len(targets), " ".join(down)))
        sys.stdout.flush()
        stop.wait(max(0.0, interval - (time.time() - started)))


if __name__ == "__main__":
    main(sys.argv[1:])
