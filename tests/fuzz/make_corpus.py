#!/usr/bin/env python3
"""Writes the seed corpus in corpus/ (checked in; rerun after editing).

   python3 tests/fuzz/make_corpus.py

corpus/frame:    byte streams a peer sends (4-byte big-endian length + body).
corpus/dispatch: records separated by NUL; each starts with the peer
                 ('A' admin, 'M' member, 'S' stranger), see fuzz_dispatch.c.
corpus/json:     single JSON documents for the schema layer.
corpus/csr:      a subject line, then TAG:value lines, see fuzz_csr.c.
corpus/sigform:  a byte of purpose bits, then a signature input, see fuzz_sigform.c.
"""
import base64
import hashlib
import json
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def frame(body):
    return struct.pack(">I", len(body)) + body


def req(peer, obj):
    return peer.encode() + json.dumps(obj, separators=(",", ":")).encode()


def raw(peer, text):
    return peer.encode() + text


def msgs(*records):
    return b"\0".join(records)


def write(kind, name, data):
    d = os.path.join(CORPUS, kind)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def b64(data):
    return base64.b64encode(data).decode()


def frames():
    hello = b'{"id":1,"op":"hello"}'
    write("frame", "one", frame(hello))
    write("frame", "two", frame(hello) + frame(b'{"id":2,"op":"key.list"}'))
    write("frame", "zero-length", frame(hello) + b"\0\0\0\0")
    write("frame", "over-cap", struct.pack(">I", 65537) + b"x" * 16)
    write("frame", "max-length", struct.pack(">I", 0xFFFFFFFF))
    write("frame", "exactly-cap", frame(b"{" + b" " * 65534 + b"}"))
    write("frame", "cut-header", b"\0\0")
    write("frame", "cut-body", struct.pack(">I", 100) + b'{"id":1')
    write("frame", "one-byte", frame(b"x"))
    write("frame", "empty", b"")


def dispatch():
    A, M, S = "A", "M", "S"
    hello = {"id": 1, "op": "hello", "versions": [1]}
    write("dispatch", "hello", msgs(req(A, hello), req(M, {"id": "m", "op": "hello"}),
                                    req(S, {"id": 2, "op": "hello"}),
                                    req(A, {"id": 3, "op": "hello", "versions": [2, 3]})))
    write("dispatch", "key.generate",
          msgs(req(A, {"id": 1, "op": "key.generate", "key": "new-ec", "type": "ec-p256"}),
               req(A, {"id": 2, "op": "key.generate", "key": "new-384", "type": "ec-p384"}),
               req(A, {"id": 3, "op": "key.generate", "key": "new-rsa", "type": "rsa-2048"}),
               req(A, {"id": 4, "op": "key.generate", "key": "fz-ec", "type": "ec-p256"}),
               req(A, {"id": 5, "op": "key.generate", "key": "x", "type": "dsa"}),
               req(M, {"id": 6, "op": "key.generate", "key": "m", "type": "ec-p256"}),
               req(S, {"id": 7, "op": "key.generate", "key": "s", "type": "ec-p256"})))
    # Key purposes (issue 21): generated with some, then uses inside and outside them.
    tls13 = b" " * 64 + b"TLS 1.3, server CertificateVerify\x00" + bytes(range(32))
    sigstr = (b"date: Thu, 05 Jan 2014 21:31:40 GMT\n(request-target): get /x\n"
              b"host: example.com")
    write("dispatch", "purposes",
          msgs(req(A, {"id": 1, "op": "key.generate", "key": "p-tls", "type": "ec-p256",
                       "purposes": ["tls"]}),
               req(A, {"id": 2, "op": "key.generate", "key": "p-oci", "type": "rsa-2048",
                       "purposes": ["csr", "http-signature"]}),
               req(A, {"id": 3, "op": "key.generate", "key": "p-x", "type": "ec-p256",
                       "purposes": ["frob"]}),
               req(A, {"id": 4, "op": "key.generate", "key": "p-x", "type": "ec-p256",
                       "purposes": []}),
               req(A, {"id": 5, "op": "key.generate", "key": "p-x", "type": "ec-p256",
                       "purposes": ["sign", "sign"]}),
               req(A, {"id": 6, "op": "sign", "key": "p-tls", "alg": "ecdsa-sha256",
                       "data": b64(tls13)}),
               req(A, {"id": 7, "op": "sign", "key": "p-tls", "alg": "ecdsa-sha256",
                       "digest": b64(bytes(32))}),
               req(A, {"id": 8, "op": "sign", "key": "p-oci", "alg": "rsa-pkcs1-sha256",
                       "data": b64(sigstr)}),
               req(A, {"id": 9, "op": "csr.create", "key": "p-tls", "subject": "CN=x"}),
               req(A, {"id": 10, "op": "key.public", "key": "p-oci"})))
    write("dispatch", "key.list", msgs(req(A, {"id": 1, "op": "key.list"}),
                                       req(M, {"id": 2, "op": "key.list"}),
                                       req(S, {"id": 3, "op": "key.list"})))
    write("dispatch", "key.public",
          msgs(req(A, {"id": 1, "op": "key.public", "key": "fz-rsa"}),
               req(M, {"id": 2, "op": "key.public", "key": "fz-ec"}),
               req(M, {"id": 3, "op": "key.public", "key": "fz-rsa"}),
               req(A, {"id": 4, "op": "key.public", "key": "missing"}),
               req(S, {"id": 5, "op": "key.public", "key": "fz-ec"})))
    write("dispatch", "key.delete",
          msgs(req(A, {"id": 1, "op": "key.generate", "key": "gone", "type": "ec-p256"}),
               req(A, {"id": 2, "op": "key.delete", "key": "gone"}),
               req(A, {"id": 3, "op": "key.delete", "key": "gone"}),
               req(A, {"id": 4, "op": "key.public", "key": "gone"}),
               req(A, {"id": 5, "op": "key.delete", "key": "fz-ec"}),
               req(A, {"id": 6, "op": "cert.get", "key": "fz-ec"}),
               req(S, {"id": 7, "op": "key.delete", "key": "fz-rsa"})))
    full_csr = {"id": 1, "op": "csr.create", "key": "fz-ec",
                "subject": "CN=host.example,OU=Ops+OU=Sec,O=Example\\, Inc.,L=Blacksburg,ST=Virginia,C=US",
                "san": {"dns": ["host.example", "*.example"], "ip": ["192.0.2.1", "2001:db8::1"],
                        "uri": ["spiffe://example/host"], "email": ["ops@example"]},
                "key_usage": ["digitalSignature", "keyAgreement"],
                "ext_key_usage": ["serverAuth", "clientAuth", "1.3.6.1.5.5.7.3.9"],
                "attributes": [{"oid": "1.3.6.1.4.1.34380.1.3.2", "value": "true", "type": "printable"},
                               {"oid": "1.2.840.113549.1.9.7", "value": "challenge"},
                               {"oid": "1.3.6.1.4.1.34380.1.1.1", "value": "x", "type": "ia5"}],
                "digest": "sha384"}
    rsa_csr = {"id": 2, "op": "csr.create", "key": "fz-rsa", "subject": "CN=rsa,DC=example,DC=com,UID=7",
               "key_usage": ["digitalSignature", "keyEncipherment", "contentCommitment"],
               "ext_key_usage": ["codeSigning", "emailProtection", "timeStamping", "OCSPSigning"],
               "digest": "sha512"}
    write("dispatch", "csr.create",
          msgs(req(A, full_csr), req(A, rsa_csr),
               req(A, {"id": 3, "op": "csr.create", "key": "fz-ec", "subject": "CN=x", "digest": "sha512"}),
               req(A, {"id": 4, "op": "csr.create", "key": "fz-ec", "subject": "CN=#0403616263,STREET=a\\+b"}),
               req(A, {"id": 5, "op": "csr.create", "key": "fz-ec", "subject": "not a dn"}),
               req(A, {"id": 6, "op": "csr.create", "key": "fz-ec", "subject": "CN=x",
                       "san": {"ip": ["999.1.1.1"], "dns": ["bad..name"]}}),
               req(A, {"id": 7, "op": "csr.create", "key": "fz-ec", "subject": "CN=x",
                       "key_usage": ["cRLSign", "keyCertSign", "dataEncipherment", "bogus"]}),
               req(M, {"id": 8, "op": "csr.create", "key": "fz-ec", "subject": "CN=x"})))
    data = b"data to sign"
    recs = []
    n = 1
    for alg, key in [("rsa-pkcs1-sha256", "fz-rsa"), ("rsa-pkcs1-sha384", "fz-rsa"),
                     ("rsa-pkcs1-sha512", "fz-rsa"), ("rsa-pss-sha256", "fz-rsa"),
                     ("rsa-pss-sha384", "fz-rsa"), ("rsa-pss-sha512", "fz-rsa"),
                     ("ecdsa-sha256", "fz-ec"), ("ecdsa-sha384", "fz-ec")]:
        h = hashlib.new(alg.rsplit("-", 1)[1], data).digest()
        recs.append(req(A, {"id": n, "op": "sign", "key": key, "alg": alg, "data": b64(data)}))
        recs.append(req(A, {"id": n + 1, "op": "sign", "key": key, "alg": alg, "digest": b64(h)}))
        n += 2
        if len(recs) == 8:
            write("dispatch", "sign-%d" % (n // 8), msgs(*recs))
            recs = []
    write("dispatch", "sign-errors",
          msgs(req(A, {"id": 1, "op": "sign", "key": "fz-ec", "alg": "rsa-pss-sha256", "data": "AA=="}),
               req(A, {"id": 2, "op": "sign", "key": "fz-ec", "alg": "ecdsa-sha256", "digest": "AA=="}),
               req(A, {"id": 3, "op": "sign", "key": "fz-ec", "alg": "ecdsa-sha256", "data": "!!"}),
               req(A, {"id": 4, "op": "sign", "key": "fz-ec", "alg": "ecdsa-sha256",
                       "data": "AA==", "digest": "AA=="}),
               req(A, {"id": 5, "op": "sign", "key": "fz-ec", "alg": "md5"}),
               req(M, {"id": 6, "op": "sign", "key": "fz-ec", "alg": "ecdsa-sha256", "data": ""}),
               req(M, {"id": 7, "op": "sign", "key": "fz-rsa", "alg": "rsa-pss-sha256", "data": "AA=="}),
               req(S, {"id": 8, "op": "sign", "key": "fz-ec", "alg": "ecdsa-sha256", "data": "AA=="})))
    write("dispatch", "cert",
          msgs(raw(A, b'{"id":1,"op":"cert.put","key":"fz-ec","cert":"@CERT_EC@"}'),
               raw(A, b'{"id":2,"op":"cert.put","key":"fz-rsa","cert":"@CERT_RSA@"}'),
               raw(A, b'{"id":3,"op":"cert.put","key":"fz-ec","cert":"@CERT_RSA@"}'),
               raw(A, b'{"id":4,"op":"cert.put","key":"fz-ec","cert":"@CERT_EC@@CERT_EC@"}'),
               raw(A, b'{"id":5,"op":"cert.put","key":"fz-ec","cert":"-----BEGIN CERTIFICATE-----\\nAAAA\\n-----END CERTIFICATE-----\\n"}'),
               req(A, {"id": 6, "op": "cert.get", "key": "fz-ec"}),
               req(A, {"id": 7, "op": "cert.get", "key": "fz-rsa"}),
               req(M, {"id": 8, "op": "cert.get", "key": "fz-ec"}),
               raw(S, b'{"id":9,"op":"cert.put","key":"fz-ec","cert":"@CERT_EC@"}')))
    write("dispatch", "malformed",
          msgs(raw(A, b"not json"), raw(A, b"[1,2]"), raw(A, b'{"op":"hello"}'),
               raw(A, b'{"id":-1,"op":"hello"}'), raw(A, b'{"id":1.5,"op":"hello"}'),
               raw(A, b'{"id":"","op":"hello"}'), raw(A, b'{"id":1,"id":2,"op":"hello"}'),
               raw(A, b'{"id":3,"op":"frobnicate"}'), raw(A, b'{"id":3,"op":7}'),
               raw(A, b'{"id":3,"op":"hello","extra":true}'),
               raw(A, b'{"id":3,"op":"key.public","key":"../etc"}'),
               raw(A, b'{"id":"\xff","op":"hello"}'), raw(A, b'{"id":1,"op":"hel\\u0000lo"}'),
               raw(A, b'{"id":1,"op":"hello","versions":' + b"[" * 40 + b"]" * 40 + b"}"),
               raw(A, b'{"id":9007199254740992,"op":"hello"}'), raw(A, b"")))


def json_docs():
    write("json", "every-type", json.dumps(
        {"str": "short", "uint": 9007199254740991, "bool": True, "strv": ["a", "b"],
         "object": {"str": "x", "any": None}, "array": [1, "two", {"three": 3}], "any": 1.5,
         "skip": [[]]}).encode())
    write("json", "wrong-types", b'{"str":1,"uint":-1,"bool":"no","strv":[1],"object":[],"array":{}}')
    write("json", "unknown", b'{"unknown":1,"str":"' + b"x" * 17 + b'"}')
    write("json", "escapes", b'{"str":"\\u00e9\\ud83d\\ude00\\n","uint":0}')
    write("json", "deep", b'{"any":' + b"[" * 31 + b"]" * 31 + b"}")
    write("json", "too-deep", b'{"any":' + b"[" * 33 + b"]" * 33 + b"}")
    write("json", "strings-hide-brackets", b'{"str":"[[[[{{{{\\"","any":[]}')
    write("json", "real", b'{"any":[1e300,-0.0,0.1,123456789012345678]}')


def csrs():
    write("csr", "full", "\n".join([
        "CN=host.example,OU=Ops+OU=Sec,O=Example\\, Inc.,L=Blacksburg,ST=Virginia,C=US",
        "dns:host.example", "dns:*.example", "ip:192.0.2.1", "ip:2001:db8::1",
        "uri:spiffe://example/host", "email:ops@example", "eku:serverAuth", "eku:1.3.6.1.5.5.7.3.9",
        "ku:digitalSignature", "ku:keyAgreement",
        "attr:1.3.6.1.4.1.34380.1.3.2=true;printable", "attr:1.2.840.113549.1.9.7=challenge",
        "attr:1.3.6.1.4.1.34380.1.1.1=x;ia5", "digest:sha384"]).encode())
    write("csr", "escapes", "CN=a\\+b\\,c\\\"d\\\\e\\<f\\>g\\;h\\=i,O=\\ lead\\#,UID=7,DC=example,DC=com".encode())
    write("csr", "hex-utf8", "CN=caf\\C3\\A9,emailAddress=a@example,SERIALNUMBER=42,STREET=Main".encode())
    write("csr", "oid-type", "2.5.4.3=by oid,1.2.3.4=unknown".encode())
    write("csr", "utf8", "CN=\u00e9\u6f22\U0001F600,C=DE".encode())
    write("csr", "bad", "CN=#0403616263\ndns:bad..name\nip:999.1.1.1\neku:nonsense\nattr:x=y;bogus".encode())
    write("csr", "empty-value", "CN=,O=x".encode())


def sigforms():
    ALL, TLS, HTTP = 0x0f, 0x02, 0x04

    def hs(t, body):
        return bytes([t]) + struct.pack(">I", len(body))[1:] + body

    randoms = bytes(range(64))
    write("sigform", "tls13-server", bytes([TLS]) + b" " * 64 + b"TLS 1.3, server CertificateVerify\0" +
          hashlib.sha256(b"x").digest())
    write("sigform", "tls13-client-384", bytes([TLS]) + b" " * 64 + b"TLS 1.3, client CertificateVerify\0" +
          hashlib.sha384(b"x").digest())
    write("sigform", "tls13-wrong-context", bytes([TLS]) + b" " * 64 + b"TLS 1.3, server Finished\0" +
          hashlib.sha256(b"x").digest())
    write("sigform", "tls12-ske-p256", bytes([TLS]) + randoms + b"\x03\x00\x17\x41\x04" + b"\x11" * 64)
    write("sigform", "tls12-ske-x25519", bytes([TLS]) + randoms + b"\x03\x00\x1d\x20" + b"\x22" * 32)
    write("sigform", "tls12-ske-dhe", bytes([TLS]) + randoms + b"\x01\x00" + b"\xff" * 256 +
          b"\x00\x01\x02\x01\x00" + b"\x33" * 256)
    ch = b"\x03\x03" + bytes(32) + b"\x00\x00\x02\xc0\x2f\x01\x00"
    write("sigform", "tls12-transcript", bytes([TLS]) + hs(1, ch) + hs(2, b"\x03\x03" + bytes(38)) +
          hs(11, b"\x00\x00\x00") + hs(12, b"\x03\x00\x17") + hs(13, b"\x01\x01") + hs(14, b"") +
          hs(11, b"\x00\x00\x00") + hs(16, b"\x20" + bytes(32)))
    write("sigform", "oci-get", bytes([HTTP]) + b"date: Thu, 05 Jan 2014 21:31:40 GMT\n"
          b"(request-target): get /20160918/instances?a=b\nhost: iaas.us-phoenix-1.oraclecloud.com")
    write("sigform", "oci-post", bytes([HTTP | TLS]) + b"date: Thu, 05 Jan 2014 21:31:40 GMT\n"
          b"(request-target): post /20160918/volumeAttachments\nhost: iaas.example\n"
          b"content-length: 316\ncontent-type: application/json\n"
          b"x-content-sha256: V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0=")
    write("sigform", "der", bytes([ALL]) + b"\x30\x81\x82\x02\x01\x00" + bytes(130))
    write("sigform", "list", b"csr,tls,http-signature,sign")
    write("sigform", "list-bad", b"tls,,csr,tls")


if __name__ == "__main__":
    for kind in ("frame", "dispatch", "json", "csr", "sigform"):
        shutil.rmtree(os.path.join(CORPUS, kind), ignore_errors=True)
    frames()
    dispatch()
    json_docs()
    csrs()
    sigforms()
