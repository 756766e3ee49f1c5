#!/usr/bin/env python3
"""A TLS server on 127.0.0.1 for the `keysvc verify` tests.

    tls_server.py PORTFILE CERT KEY [SNILOG]   serve CERT; the file is read again for
                                               every connection, so replacing it is a reload
    tls_server.py PORTFILE --hang              accept TCP, never answer the ClientHello

The port (chosen by the kernel: no race with other tests) is written to
PORTFILE once listening. Each server name a client sends is appended to
SNILOG. Runs until killed.
"""
import os
import socket
import ssl
import sys


def main():
    portfile = sys.argv[1]
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    tmp = portfile + ".tmp"
    with open(tmp, "w") as f:
        f.write("%d\n" % sock.getsockname()[1])
    os.rename(tmp, portfile)
    if sys.argv[2] == "--hang":
        held = []
        while True:
            conn, _ = sock.accept()
            held.append(conn)      # keep it open, say nothing
    cert, key = sys.argv[2], sys.argv[3]
    snilog = sys.argv[4] if len(sys.argv) > 4 else None
    while True:
        conn, _ = sock.accept()
        conn.settimeout(5)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        if snilog:
            def record(_sock, name, _ctx):
                with open(snilog, "a") as f:
                    f.write("%s\n" % name)
            ctx.sni_callback = record
        try:
            tls = ctx.wrap_socket(conn, server_side=True)
            tls.close()
        except (OSError, ssl.SSLError):
            conn.close()


if __name__ == "__main__":
    main()
