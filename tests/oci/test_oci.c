/*
 * The pure parts of keysvc-oci: the 30/60-day lifecycle and its edges, the
 * backoff delays with jitter, the state file (missing, broken, round
 * trip), the renewCertificate body and the answers (Rover API shape,
 * certificatePem, refusals) and OCI error texts; the --rps-fqdn host
 * name rules; the state command runner's deadline (SIGTERM, grace,
 * SIGKILL) and output handling.
 */
#include <errno.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/wait.h>

#include <cmocka.h>
#include <jansson.h>

#include "clients/renew/oci/oci.h"
#include "clients/renew/oci/ocirun.h"

#define T0 1767225600   /* 2026-01-01T00:00:00Z */

static void test_lifecycle(void **state)
{
	struct oci_status st;
	const long long R = OCI_DEFAULT_RENEW_AFTER_S, L = OCI_DEFAULT_LIFETIME_S;
	time_t na = T0 + 60 * OCI_DAY;

	(void)state;
	assert_int_equal(oci_lifecycle(T0, na, T0 + OCI_DAY, R, L, &st), 0);
	assert_int_equal(st.phase, OCI_PHASE_CURRENT);
	assert_int_equal(st.age_s, OCI_DAY);
	assert_int_equal(st.renew_at, T0 + 30 * OCI_DAY);
	assert_int_equal(st.expires_at, na);
	/* The renewal point itself is due; one second before is not. */
	assert_int_equal(oci_lifecycle(T0, na, T0 + 30 * OCI_DAY - 1, R, L, &st), 0);
	assert_int_equal(st.phase, OCI_PHASE_CURRENT);
	assert_int_equal(oci_lifecycle(T0, na, T0 + 30 * OCI_DAY, R, L, &st), 0);
	assert_int_equal(st.phase, OCI_PHASE_RENEWAL_DUE);
	assert_int_equal(oci_lifecycle(T0, na, na - 1, R, L, &st), 0);
	assert_int_equal(st.phase, OCI_PHASE_RENEWAL_DUE);
	assert_int_equal(oci_lifecycle(T0, na, na, R, L, &st), 0);
	assert_int_equal(st.phase, OCI_PHASE_EXPIRED);
	assert_string_equal(oci_phase_name(st.phase), "expired-rebootstrap-required");
	/* A longer certificate still expires at the 60-day lifetime... */
	assert_int_equal(oci_lifecycle(T0, T0 + 365 * OCI_DAY, T0 + 61 * OCI_DAY, R, L, &st), 0);
	assert_int_equal(st.expires_at, T0 + 60 * OCI_DAY);
	assert_int_equal(st.phase, OCI_PHASE_EXPIRED);
	/* ...and a shorter one at its notAfter, with the renewal point no later. */
	assert_int_equal(oci_lifecycle(T0, T0 + 20 * OCI_DAY, T0 + 10 * OCI_DAY, R, L, &st), 0);
	assert_int_equal(st.expires_at, T0 + 20 * OCI_DAY);
	assert_int_equal(st.renew_at, T0 + 20 * OCI_DAY);
	assert_int_equal(st.phase, OCI_PHASE_CURRENT);
	/* Configurable points. */
	assert_int_equal(oci_lifecycle(T0, T0 + 90 * OCI_DAY, T0 + 45 * OCI_DAY, 60 * OCI_DAY, 90 * OCI_DAY, &st), 0);
	assert_int_equal(st.phase, OCI_PHASE_CURRENT);
	assert_string_equal(oci_phase_name(OCI_PHASE_RENEWAL_DUE), "renewal-due");
	assert_string_equal(oci_phase_name(OCI_PHASE_CURRENT), "current");
	/*
	 * Not yet valid: a negative age. The phase is keysvc-oci's to set, with
	 * keysvc status's rule (ks_cert_not_yet_valid); the test oci-renew checks
	 * that both tools agree on such a certificate.
	 */
	assert_int_equal(oci_lifecycle(T0, na, T0 - 10, R, L, &st), 0);
	assert_int_equal(st.age_s, -10);
	assert_string_equal(oci_phase_name(OCI_PHASE_NOT_YET_VALID), "not-yet-valid");
	/* Refusals. */
	assert_int_equal(oci_lifecycle(T0, na, T0, 0, L, &st), -EINVAL);
	assert_int_equal(oci_lifecycle(T0, na, T0, L + 1, L, &st), -EINVAL);
	assert_int_equal(oci_lifecycle(na, T0, T0, R, L, &st), -EINVAL);
}

static void test_backoff_delay(void **state)
{
	(void)state;
	assert_int_equal(oci_backoff_delay(0, 3600, 86400, 0.5), 0);
	/* Equal jitter: between half and all of the step. */
	assert_int_equal(oci_backoff_delay(1, 3600, 86400, 0.0), 1800);
	assert_int_equal(oci_backoff_delay(1, 3600, 86400, 1.0), 3600);
	assert_int_equal(oci_backoff_delay(2, 3600, 86400, 1.0), 7200);
	assert_int_equal(oci_backoff_delay(3, 3600, 86400, 0.0), 7200);
	assert_int_equal(oci_backoff_delay(6, 3600, 86400, 1.0), 86400);
	assert_int_equal(oci_backoff_delay(1000, 3600, 86400, 1.0), 86400);
	assert_int_equal(oci_backoff_delay(1000, 3600, 86400, 0.0), 43200);
	/* Out-of-range jitter is clamped. */
	assert_int_equal(oci_backoff_delay(1, 100, 1000, -3), 50);
	assert_int_equal(oci_backoff_delay(1, 100, 1000, 7), 100);
	/* A maximum below the base is the base. */
	assert_int_equal(oci_backoff_delay(3, 100, 10, 1.0), 100);
}

static void test_state_file(void **state)
{
	char dir[] = "/tmp/keysvc-oci-state.XXXXXX", path[512];
	struct oci_backoff b, c;
	FILE *f;

	(void)state;
	assert_non_null(mkdtemp(dir));
	snprintf(path, sizeof(path), "%s/state", dir);
	/* Missing: clean. */
	assert_int_equal(oci_backoff_load(path, &b), 0);
	assert_int_equal(b.failures, 0);
	memset(&b, 0, sizeof(b));
	b.failures = 3;
	b.next_attempt = T0;
	snprintf(b.last_error, sizeof(b.last_error), "exit 3: \"refused\"\n");
	assert_int_equal(oci_backoff_save(path, &b), 0);
	assert_int_equal(access(path, R_OK), 0);
	assert_int_equal(oci_backoff_load(path, &c), 0);
	assert_int_equal(c.failures, 3);
	assert_int_equal(c.next_attempt, T0);
	assert_string_equal(c.last_error, b.last_error);
	/* Broken files are refused and give a clean state. */
	static const char *const broken[] = {
		"not json", "[]", "{\"failures\": -1, \"next_attempt\": 0}", "{\"failures\": 1}",
		"{\"failures\": 1, \"next_attempt\": \"soon\"}", "{\"failures\": 1, \"failures\": 2, \"next_attempt\": 0}",
	};
	for (size_t i = 0; i < sizeof(broken) / sizeof(broken[0]); i++) {
		assert_non_null(f = fopen(path, "w"));
		fputs(broken[i], f);
		fclose(f);
		c.failures = 9;
		assert_int_equal(oci_backoff_load(path, &c), -EBADMSG);
		assert_int_equal(c.failures, 0);
	}
	unlink(path);
	/* Saving into a missing directory fails and leaves nothing. */
	snprintf(path, sizeof(path), "%s/none/state", dir);
	assert_true(oci_backoff_save(path, &b) < 0);
	rmdir(dir);
}

static void test_renew_body(void **state)
{
	json_error_t jerr;
	json_t *root;
	char *body = NULL, *big;
	const char *csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";

	(void)state;
	assert_int_equal(oci_renew_body(csr, T0 + 60 * OCI_DAY, &body), 0);
	assert_string_equal(body, "{\"csr\":\"-----BEGIN CERTIFICATE REQUEST-----\\nMIIB\\n-----END CERTIFICATE "
			    "REQUEST-----\\n\",\"timeCertValidityEnd\":\"2026-03-02T00:00:00Z\"}");
	root = json_loads(body, 0, &jerr);
	assert_non_null(root);
	assert_string_equal(json_string_value(json_object_get(root, "csr")), csr);
	json_decref(root);
	free(body);
	big = malloc(OCI_CSR_MAX + 2);
	memset(big, 'A', OCI_CSR_MAX + 1);
	big[OCI_CSR_MAX + 1] = '\0';
	assert_int_equal(oci_renew_body(big, T0, &body), -EMSGSIZE);
	assert_null(body);
	big[OCI_CSR_MAX] = '\0';
	assert_int_equal(oci_renew_body(big, T0, &body), 0);
	free(body);
	free(big);
}

static void test_answers(void **state)
{
	struct oci_renew_answer a;
	char err[256];
	static const char rover[] = "{\"roverNodeId\": \"ocid1.rovernode.x\", \"certificateDetails\": "
				    "{\"certificateId\": \"ocid1.certificate.y\", \"certificateName\": \"n\"}}";
	static const char bundle[] = "{\"certificateId\": \"c\", \"certificatePem\": \"PEM\", \"certChainPem\": \"CHAIN\"}";
	static const char *const bad[] = {
		"", "not json", "[]", "{}", "{\"roverNodeId\": \"x\"}",
		"{\"certificateDetails\": \"x\"}",
		"{\"certificateDetails\": {\"certificateId\": 5}}",
		"{\"certificateDetails\": {\"certificateId\": \"\"}}",
		"{\"certificatePem\": [\"x\"]}",
		"{\"certificatePem\": \"a\", \"certificatePem\": \"b\"}",
		"{\"certificatePem\": \"a\", \"certChainPem\": 1}",
	};

	(void)state;
	assert_int_equal(oci_renew_answer_parse(rover, sizeof(rover) - 1, &a, err, sizeof(err)), 0);
	assert_string_equal(a.certificate_id, "ocid1.certificate.y");
	assert_null(a.certificate_pem);
	oci_renew_answer_free(&a);
	assert_int_equal(oci_renew_answer_parse(bundle, sizeof(bundle) - 1, &a, err, sizeof(err)), 0);
	assert_null(a.certificate_id);
	assert_string_equal(a.certificate_pem, "PEM");
	assert_string_equal(a.chain_pem, "CHAIN");
	oci_renew_answer_free(&a);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(oci_renew_answer_parse(bad[i], strlen(bad[i]), &a, err, sizeof(err)), -EBADMSG);
		assert_null(a.certificate_id);
		assert_null(a.certificate_pem);
		assert_true(err[0] != '\0');
	}
	oci_renew_answer_free(NULL);
}

static void test_error_text(void **state)
{
	char buf[128];
	static const char e[] = "{\"code\": \"NotAuthenticated\", \"message\": \"The required information to complete "
				"authentication was not provided.\"}";

	(void)state;
	oci_error_text(e, sizeof(e) - 1, buf, sizeof(buf));
	assert_string_equal(buf, "NotAuthenticated: The required information to complete authentication was not "
			    "provided.");
	oci_error_text("<html>\n<body>", 13, buf, sizeof(buf));
	assert_string_equal(buf, "\"<html>\"");
	oci_error_text("bad\x01thing", 9, buf, sizeof(buf));
	assert_string_equal(buf, "\"bad?thing\"");
	oci_error_text(NULL, 0, buf, sizeof(buf));
	assert_string_equal(buf, "(empty body)");
	oci_error_text(e, sizeof(e) - 1, buf, 10);
	assert_int_equal(strlen(buf), 9);
}

/* A minimal real zip: one stored file "a" holding "b". */
static const unsigned char tiny_zip[] = {
	'P', 'K', 3, 4, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xed, 0xbe, 0x4f, 0x8c, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0,
	'a', 'b',
	'P', 'K', 1, 2, 20, 3, 10, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xed, 0xbe, 0x4f, 0x8c, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0,
	0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x80, 1, 0, 0, 0, 0, 'a',
	'P', 'K', 5, 6, 0, 0, 0, 0, 1, 0, 1, 0, 47, 0, 0, 0, 32, 0, 0, 0, 0, 0,
};

static void test_zip(void **state)
{
	unsigned char buf[sizeof(tiny_zip)];
	char err[256];
	unsigned char *big;

	(void)state;
	assert_int_equal(oci_zip_check(tiny_zip, sizeof(tiny_zip), err, sizeof(err)), 0);
	/* Cut short, no end record. */
	assert_int_equal(oci_zip_check(tiny_zip, sizeof(tiny_zip) - 1, err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "truncated"));
	/* Not a zip. */
	assert_int_equal(oci_zip_check((const unsigned char *)"hello world, this is not a zip archive at all!!!!!!!!!",
				       54, err, sizeof(err)), -EBADMSG);
	/* A central directory pointing outside the file. */
	memcpy(buf, tiny_zip, sizeof(buf));
	buf[sizeof(buf) - 6] = 0xff;
	assert_int_equal(oci_zip_check(buf, sizeof(buf), err, sizeof(err)), -EBADMSG);
	assert_non_null(strstr(err, "damaged"));
	big = calloc(1, OCI_TOKEN_ZIP_MAX + 1);
	assert_non_null(big);
	assert_int_equal(oci_zip_check(big, OCI_TOKEN_ZIP_MAX + 1, err, sizeof(err)), -EMSGSIZE);
	free(big);
}

static void test_multipart(void **state)
{
	static const char want[] =
		"--BOUND\r\nContent-Disposition: form-data; name=\"file\"; filename=\"exportedToken.zip\"\r\n"
		"Content-Type: application/zip\r\n\r\nZIPDATA\r\n"
		"--BOUND\r\nContent-Disposition: form-data; name=\"infrastructure_id\"\r\n"
		"Content-Type: text/plain\r\n\r\nocid1.infra\r\n--BOUND--\r\n";
	unsigned char *out = NULL;
	size_t len = 0;

	(void)state;
	assert_int_equal(oci_multipart("BOUND", "exportedToken.zip", (const unsigned char *)"ZIPDATA", 7, "ocid1.infra",
				       &out, &len), 0);
	assert_int_equal(len, sizeof(want) - 1);
	assert_memory_equal(out, want, len);
	free(out);
	/* Refusals: a boundary in the data, bad boundaries, header injection. */
	assert_int_equal(oci_multipart("ZIP", "t.zip", (const unsigned char *)"ZIPDATA", 7, "i", &out, &len), -EINVAL);
	assert_int_equal(oci_multipart("", "t.zip", (const unsigned char *)"x", 1, "i", &out, &len), -EINVAL);
	assert_int_equal(oci_multipart("a b", "t.zip", (const unsigned char *)"x", 1, "i", &out, &len), -EINVAL);
	assert_int_equal(oci_multipart("B", "t\".zip", (const unsigned char *)"x", 1, "i", &out, &len), -EINVAL);
	assert_int_equal(oci_multipart("B", "t.zip", (const unsigned char *)"x", 1, "i\r\nX: y", &out, &len), -EINVAL);
	assert_null(out);
}

static void test_rfc3339(void **state)
{
	char buf[32];

	(void)state;
	oci_rfc3339(T0, buf, sizeof(buf));
	assert_string_equal(buf, "2026-01-01T00:00:00Z");
}

static void test_rps_url(void **state)
{
	static const char *const bad[] = {
		"", "rps", "rps.", ".rps.example.org", "rps..example.org", "rps.example.org.", "rps.-x.org",
		"rps.x-.org", "rps.ex_ample.org", "rps.ex ample.org", "rps.example.org/x", "rps.example.org:443",
		"user@rps.example.org", "rps.ex\xc3\xa4mple.org",
		/* The old form, the part after "rps.": it would now name another host. */
		"example.org", "node.example.org", "rpsx.example.org",
	};
	char url[300], err[256], name[300];

	(void)state;
	/* The host name is used as given: no "rps." put in front of it. */
	assert_int_equal(oci_rps_url("rps.example.org", url, sizeof(url), err, sizeof(err)), 0);
	assert_string_equal(url, "https://rps.example.org");
	assert_int_equal(oci_rps_url("RPS.Node-1.example.org", url, sizeof(url), err, sizeof(err)), 0);
	assert_string_equal(url, "https://RPS.Node-1.example.org");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(oci_rps_url(bad[i], url, sizeof(url), err, sizeof(err)), -EINVAL);
		assert_true(err[0] != '\0');
	}
	assert_int_equal(oci_rps_url("example.org", url, sizeof(url), err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "did you mean rps.example.org?"));

	/* Label and name lengths at their limits. */
	snprintf(name, sizeof(name), "rps.%.63s.org", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_int_equal(oci_dns_name_check(name, err, sizeof(err)), 0);
	snprintf(name, sizeof(name), "rps.%.64s.org", "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa");
	assert_int_equal(oci_dns_name_check(name, err, sizeof(err)), -EINVAL);
	/* 253 bytes: "rps." + 24 labels of 9 and their dots (240) + 9 = 253. */
	strcpy(name, "rps.");
	for (int i = 0; i < 24; i++)
		strcat(name, "abcdefghi.");
	strcat(name, "abcdefghi");
	assert_int_equal(strlen(name), 253);
	assert_int_equal(oci_dns_name_check(name, err, sizeof(err)), 0);
	strcat(name, "x");
	assert_int_equal(oci_dns_name_check(name, err, sizeof(err)), -EINVAL);
}

static long long mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void test_run(void **state)
{
	char out[16];
	long long t0;
	int st;

	(void)state;
	/* The first line, cut to the buffer; the exit status. */
	assert_int_equal(oci_run_first_line("printf 'Connected\\r\\nmore\\n'; exit 3", 5000, out, sizeof(out), &st), 0);
	assert_string_equal(out, "Connected");
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 3);
	assert_int_equal(oci_run_first_line("echo 0123456789abcdefghij", 5000, out, sizeof(out), &st), 0);
	assert_string_equal(out, "0123456789abcde");
	/* Much more output than a pipe holds is read and dropped, not left to block the command. */
	assert_int_equal(oci_run_first_line("echo Ready; head -c 2000000 /dev/zero", 5000, out, sizeof(out), &st), 0);
	assert_string_equal(out, "Ready");
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	/* A command that never exits is killed at the deadline: SIGTERM first... */
	t0 = mono_ms();
	assert_int_equal(oci_run_first_line("echo Connecting; exec sleep 100", 300, out, sizeof(out), &st), -ETIME);
	assert_true(mono_ms() - t0 < 3000);
	assert_string_equal(out, "Connecting");
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGTERM);
	/* ...then SIGKILL after the grace when it ignores that. */
	t0 = mono_ms();
	assert_int_equal(oci_run_first_line("trap '' TERM; while :; do sleep 1; done", 200, out, sizeof(out), &st),
			 -ETIME);
	assert_true(mono_ms() - t0 >= 200 + OCI_RUN_GRACE_MS - 50 && mono_ms() - t0 < 200 + OCI_RUN_GRACE_MS + 3000);
	assert_true(WIFSIGNALED(st) && WTERMSIG(st) == SIGKILL);
	/* Closing stdout does not end the wait: the command itself must exit. */
	assert_int_equal(oci_run_first_line("exec >&-; exec sleep 100", 200, out, sizeof(out), &st), -ETIME);
	assert_string_equal(out, "");
	/* A deadline of 0 is already over. */
	assert_int_equal(oci_run_first_line("sleep 100", 0, out, sizeof(out), &st), -ETIME);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lifecycle),
		cmocka_unit_test(test_backoff_delay),
		cmocka_unit_test(test_state_file),
		cmocka_unit_test(test_renew_body),
		cmocka_unit_test(test_answers),
		cmocka_unit_test(test_error_text),
		cmocka_unit_test(test_zip),
		cmocka_unit_test(test_multipart),
		cmocka_unit_test(test_rfc3339),
		cmocka_unit_test(test_rps_url),
		cmocka_unit_test(test_run),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
