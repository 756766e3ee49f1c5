#!/usr/bin/env python3
"""Python's ssl module with a keysvc key reference file as its key file.

  pyssl.py client PORT CA CERT KEYFILE VERSION   GET / from 127.0.0.1:PORT,
                                                 presenting CERT with KEYFILE
  pyssl.py server PORTFILE CERT KEYFILE COUNT    serve COUNT HTTPS requests on
                                                 127.0.0.1 (port written to PORTFILE)

VERSION is 1.2 or 1.3. The key file goes to load_cert_chain() as an admin
would write it: OpenSSL's decoders (the keysvc provider, from OPENSSL_CONF)
turn it into the token's key.
"""
import os
import socket
import ssl
import sys

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


def client(port, ca, cert, keyfile, version):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.load_cert_chain(cert, keyfile=keyfile)
    ctx.minimum_version = ctx.maximum_version = VERSIONS[version]
    with socket.create_connection(("127.0.0.1", int(port)), timeout=30) as raw:
        with ctx.wrap_socket(raw, server_hostname="localhost") as s:
            s.sendall(b"GET / HTTP/1.0\r\n\r\n")
            body = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                body += chunk
            print("protocol", s.version())
            sys.stdout.write(body.decode("utf-8", "replace"))


def server(portfile, cert, keyfile, count):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, keyfile=keyfile)
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(4)
        ls.settimeout(60)
        with open(portfile + ".tmp", "w") as f:
            f.write(str(ls.getsockname()[1]))
        os.rename(portfile + ".tmp", portfile)
        for _ in range(int(count)):
            conn, _ = ls.accept()
            try:
                with ctx.wrap_socket(conn, server_side=True) as s:
                    s.recv(65536)
                    msg = "served by python over %s\n" % s.version()
                    s.sendall(("HTTP/1.0 200 OK\r\nContent-Length: %d\r\n\r\n%s"
                               % (len(msg), msg)).encode())
            except (ssl.SSLError, OSError) as e:
                print("handshake failed:", e, file=sys.stderr, flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "client":
        client(*sys.argv[2:7])
    elif sys.argv[1] == "server":
        server(*sys.argv[2:6])
    else:
        sys.exit("usage: pyssl.py client|server ...")
