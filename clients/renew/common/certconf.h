/*
 * The certificate configuration (default KS_CONF_DEFAULT, --config FILE):
 * certificates keysvc should watch besides those in the inventory, the
 * status thresholds, CRLs, the endpoints where each certificate should be
 * served, and the reload hook a renewal client runs after installing.
 *
 *   {
 *     "inventory": "/var/lib/keysvc-inventory",
 *     "thresholds": {"critical_days": 10, "warning_days": 30, "notice_days": 90},
 *     "verify": {"connect_timeout_ms": 3000, "handshake_timeout_ms": 5000},
 *     "certificates": [
 *       {"cert": "/etc/nginx/tls/web.pem", "key": "web", "client": "other",
 *        "ca_file": "/etc/keysvc/ca.pem", "crl": "/var/lib/keysvc/crl.pem",
 *        "endpoints": [{"host": "127.0.0.1", "port": 443, "sni": "web.example.org"}],
 *        "reload": ["/usr/bin/systemctl", "reload", "nginx"], "reload_timeout": 30,
 *        "verify_after_reload": true, "verify_wait": 10}
 *     ]
 *   }
 *
 * Every field is optional except "cert" in a certificate. Parsing is
 * strict: unknown fields, duplicate keys, wrong types, values out of range,
 * relative paths and duplicate certificates are refused with a reason that
 * names the place (-EBADMSG). Paths must be absolute: the file is read by
 * services whose working directory nobody chose.
 */
#ifndef KEYSVC_CLIENTS_CERTCONF_H
#define KEYSVC_CLIENTS_CERTCONF_H

#include <stddef.h>

#define KS_CONF_DEFAULT "/etc/keysvc/certs.json"
#define KS_CONF_ERR_MAX 512
#define KS_CONF_FILE_MAX ((size_t)256 * 1024)   /* = KS_CI_PEM_MAX, the cap of ks_ci_read_file() */
#define KS_CONF_MAX_CERTS 1000
#define KS_CONF_MAX_ENDPOINTS 64       /* per certificate */
#define KS_CONF_MAX_ARGV 64            /* reload command words */
#define KS_CONF_HOST_MAX 253
#define KS_CONF_DAYS_MAX 3650

/* Defaults: the seed's 10/30/90 days, and timeouts that keep a dead endpoint from holding up a run. */
#define KS_CONF_CRITICAL_DAYS 10
#define KS_CONF_WARNING_DAYS 30
#define KS_CONF_NOTICE_DAYS 90
#define KS_CONF_CONNECT_TIMEOUT_MS 3000
#define KS_CONF_HANDSHAKE_TIMEOUT_MS 5000
#define KS_CONF_RELOAD_TIMEOUT_S 30
#define KS_CONF_VERIFY_WAIT_S 10

struct ks_conf_thresholds {
	int critical_days;          /* orange: less than this many days left */
	int warning_days;           /* yellow */
	int notice_days;            /* blue */
};

struct ks_conf_endpoint {
	char *host;                 /* name or IP literal, as given */
	int port;                   /* 1..65535 */
	char *sni;                  /* server name sent; NULL: none */
};

struct ks_conf_cert {
	char *cert;                 /* absolute */
	char *key, *client, *ca_file, *crl;   /* NULL when not given */
	struct ks_conf_endpoint *endpoints;
	size_t n_endpoints;
	char **reload;              /* NULL-terminated argv, NULL when no hook */
	int reload_timeout_s;       /* 1..3600 */
	int verify_after_reload;    /* default: 1 when there are endpoints */
	int verify_wait_s;          /* 0..600: how long to retry until the endpoints serve the new certificate */
};

struct ks_conf {
	char *inventory;            /* NULL: not given */
	struct ks_conf_thresholds thresholds;
	int connect_timeout_ms, handshake_timeout_ms;   /* 100..60000 */
	struct ks_conf_cert *certs;
	size_t n_certs;
};

/* The defaults: no certificates, the default thresholds and timeouts. */
void ks_conf_init(struct ks_conf *c);

/* Parse @len bytes of JSON into @c (initialised here). 0 or -EBADMSG / -ENOMEM with @err (KS_CONF_ERR_MAX). */
int ks_conf_parse(const char *json, size_t len, struct ks_conf *c, char *err);

/*
 * Load @path. With @must_exist 0 a missing file is an empty configuration
 * (the default path is optional; one given on the command line is not).
 * The file must be a regular file owned by root or the effective uid and
 * not writable by group or others (-EPERM): its reload commands are run.
 */
int ks_conf_load(const char *path, int must_exist, struct ks_conf *c, char *err);

void ks_conf_free(struct ks_conf *c);

/* The entry for @cert_abs, or NULL. */
const struct ks_conf_cert *ks_conf_find(const struct ks_conf *c, const char *cert_abs);

#endif
