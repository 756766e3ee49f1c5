# TLS handshakes and forgeries with purpose-bound keys through the provider
# (issue 21), shared by the token suites (test_provider_purposes.sh on
# SoftHSM, tests/tpm2/test_tpm2.sh on tpm2-pkcs11). Sourced. Everything on
# 127.0.0.1 and under $work.
#
# Needs: $work (scratch directory), $ca (set by pt_ca), $audit (keysvcd's
# audit log), $prov (the openssl options loading the keysvc provider),
# OPENSSL_MODULES; sets $server_pid while an s_server runs (the caller's
# cleanup kills it).
#
#   pt_ca DIR                    a file CA (DIR/ca.pem, ca.key) and a file
#                                key with its certificate (DIR/file.key,
#                                file.pem) for the other end; DIR/ext, the
#                                extensions of the certificates it issues;
#                                sets $ca
#   pt_cert KEY PUB OUT          a certificate for the token key KEY whose
#                                public key is PUB: a tls-only key makes no
#                                CSR, so the CA certifies the public key as
#                                it is (-force_pubkey), as a CA that already
#                                knows the key would
#   pt_handshake SIDE KEY VERSION SIGALGS
#                                one TLS connection in which keysvc:KEY
#                                (certificate $work/KEY.pem) signs as the
#                                server or as the client, with only SIGALGS
#                                allowed; succeeds when both ends finished and
#                                keysvcd audited one more signature of KEY
#                                under the purpose tls
#   pt_refused KEY TEXT COMMAND...
#                                COMMAND fails, its output ($work/refusal,
#                                written by pt_forge) says TEXT, and keysvcd
#                                audited one more denied signature of KEY
#   pt_forge COMMAND...          runs COMMAND into $work/refusal

pt_ca() {
	ca=$1
	mkdir -p "$ca"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/ca.key" \
		-out "$ca/ca.pem" -subj "/CN=keysvc purposes test CA" -days 2 \
		-addext basicConstraints=critical,CA:true -addext keyUsage=critical,keyCertSign \
		>/dev/null 2>&1 || return 1
	printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n' >"$ca/ext"
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$ca/file.key" \
		-out "$ca/file.csr" -subj "/CN=localhost" >/dev/null 2>&1 || return 1
	openssl x509 -req -in "$ca/file.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" -CAcreateserial \
		-days 2 -extfile "$ca/ext" -out "$ca/file.pem" >/dev/null 2>&1
}

pt_cert() {
	local key=$1 pub=$2 out=$3
	openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
		-out "$work/$key.dummy.csr" -subj "/O=keysvc test/CN=$key" >/dev/null 2>&1 || return 1
	openssl x509 -req -in "$work/$key.dummy.csr" -CA "$ca/ca.pem" -CAkey "$ca/ca.key" \
		-CAcreateserial -force_pubkey "$pub" -days 1 -extfile "$ca/ext" -out "$out"
}

pt_n_signed() { # pt_n_signed KEY: sign outcomes "ok" under the purpose tls in the audit log
	grep '"op":"sign"' "$audit" | grep "\"key\":\"$1\"" | grep '"purpose":"tls"' | grep -c '"outcome":"ok"'
}

pt_n_denied() { # pt_n_denied KEY: sign outcomes "denied" for KEY in the audit log
	grep '"op":"sign"' "$audit" | grep "\"key\":\"$1\"" | grep -c '"outcome":"denied"'
}

pt_handshake() {
	local side=$1 key=$2 version=$3 sigalgs=$4 log=$work/s_server.log before st=0
	local srv cli
	if [ "$side" = server ]; then
		srv=("${prov[@]}" -cert "$work/$key.pem" -key "keysvc:$key")
		cli=(-sigalgs "$sigalgs")
	else
		srv=(-cert "$ca/file.pem" -key "$ca/file.key" -Verify 1 -verify_return_error
		     -client_sigalgs "$sigalgs")
		cli=("${prov[@]}" -cert "$work/$key.pem" -key "keysvc:$key" -client_sigalgs "$sigalgs")
	fi
	# The server's one accept (-naccept 1) can be taken by a connection of
	# another program (on a loaded machine: a test polling a port it just
	# lost, which the kernel gave our server); then our client finds the
	# port closed, nothing was signed for it, and the connection is tried
	# again with a new server, three times at most.
	local attempt
	for attempt in 1 2 3; do
		st=0
		before=$(pt_n_signed "$key")
		if ks_tls_server_start "$log" openssl s_server -naccept 1 -CAfile "$ca/ca.pem" "${srv[@]}" "-$version"; then
			echo "hello" | timeout 60 openssl s_client -connect "127.0.0.1:$KS_SERVER_PORT" -brief -no_ign_eof \
				-CAfile "$ca/ca.pem" -verify_return_error -verify_ip 127.0.0.1 "${cli[@]}" \
				"-$version" >"$work/s_client.log" 2>&1 || st=$?
		else
			: >"$work/s_client.log"
			st=1
		fi
		if [ "$st" -eq 0 ]; then ks_tls_server_stop; else ks_tls_server_stop now; fi
		cat "$work/s_client.log" "$log"
		[ "$st" -ne 0 ] && grep -q "connect:errno=111" "$work/s_client.log" || break
		echo "# the server's port was closed when the client connected: again"
	done
	[ "$st" -eq 0 ] || return 1
	local want=TLSv1.2
	[ "$version" = tls1_3 ] && want=TLSv1.3
	grep -q "Protocol version: $want" "$work/s_client.log" &&
		grep -q "^hello" "$log" &&
		{ [ "$side" = server ] || grep -q "^subject=O = keysvc test, CN = $key\$" "$log"; } &&
		[ "$(pt_n_signed "$key")" -eq $((before + 1)) ]
}

pt_refused() {
	local key=$1 text=$2 before st=0
	shift 2
	before=$(pt_n_denied "$key")
	"$@" || st=$?
	[ "$st" -ne 0 ] && grep -qF -- "$text" "$work/refusal" 2>/dev/null &&
		[ "$(pt_n_denied "$key")" -eq $((before + 1)) ]
}

pt_forge() { "$@" >"$work/refusal" 2>&1; }
