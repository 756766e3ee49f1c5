/*
 * Oracle's published OCI request-signing test values ("Request Signatures",
 * Test Values; also in the OCI SDKs' signer tests), copied verbatim from
 * /work/shared/fixtures/oci-request-signing-test-values.txt. The key is the
 * 1024-bit RSA test key of draft-cavage-http-signatures: offline tests only.
 * "Thu, 05 Jan 2014" has the wrong weekday on purpose: it is signed as given.
 */
#ifndef KEYSVC_TESTS_OCI_VECTORS_H
#define KEYSVC_TESTS_OCI_VECTORS_H

#define TV_PRIVATE_KEY \
	"-----BEGIN RSA PRIVATE KEY-----\n" \
	"MIICXgIBAAKBgQDCFENGw33yGihy92pDjZQhl0C36rPJj+CvfSC8+q28hxA161QF\n" \
	"NUd13wuCTUcq0Qd2qsBe/2hFyc2DCJJg0h1L78+6Z4UMR7EOcpfdUE9Hf3m/hs+F\n" \
	"UR45uBJeDK1HSFHD8bHKD6kv8FPGfJTotc+2xjJwoYi+1hqp1fIekaxsyQIDAQAB\n" \
	"AoGBAJR8ZkCUvx5kzv+utdl7T5MnordT1TvoXXJGXK7ZZ+UuvMNUCdN2QPc4sBiA\n" \
	"QWvLw1cSKt5DsKZ8UETpYPy8pPYnnDEz2dDYiaew9+xEpubyeW2oH4Zx71wqBtOK\n" \
	"kqwrXa/pzdpiucRRjk6vE6YY7EBBs/g7uanVpGibOVAEsqH1AkEA7DkjVH28WDUg\n" \
	"f1nqvfn2Kj6CT7nIcE3jGJsZZ7zlZmBmHFDONMLUrXR/Zm3pR5m0tCmBqa5RK95u\n" \
	"412jt1dPIwJBANJT3v8pnkth48bQo/fKel6uEYyboRtA5/uHuHkZ6FQF7OUkGogc\n" \
	"mSJluOdc5t6hI1VsLn0QZEjQZMEOWr+wKSMCQQCC4kXJEsHAve77oP6HtG/IiEn7\n" \
	"kpyUXRNvFsDE0czpJJBvL/aRFUJxuRK91jhjC68sA7NsKMGg5OXb5I5Jj36xAkEA\n" \
	"gIT7aFOYBFwGgQAQkWNKLvySgKbAZRTeLBacpHMuQdl1DfdntvAyqpAZ0lY0RKmW\n" \
	"G6aFKaqQfOXKCyWoUiVknQJAXrlgySFci/2ueKlIE1QqIiLSZ8V8OlpFLRnb1pzI\n" \
	"7U1yQXnTAEFYM560yJlzUpOb1V4cScGd365tiSMvxLOvTA==\n" \
	"-----END RSA PRIVATE KEY-----\n"

#define TV_PUBLIC_KEY \
	"-----BEGIN PUBLIC KEY-----\n" \
	"MIGfMA0GCSqGSIb3DQEBAQUAA4GNADCBiQKBgQDCFENGw33yGihy92pDjZQhl0C3\n" \
	"6rPJj+CvfSC8+q28hxA161QFNUd13wuCTUcq0Qd2qsBe/2hFyc2DCJJg0h1L78+6\n" \
	"Z4UMR7EOcpfdUE9Hf3m/hs+FUR45uBJeDK1HSFHD8bHKD6kv8FPGfJTotc+2xjJw\n" \
	"oYi+1hqp1fIekaxsyQIDAQAB\n" \
	"-----END PUBLIC KEY-----\n"

#define TV_KEY_ID \
	"ocid1.tenancy.oc1..aaaaaaaaba3pv6wkcr4jqae5f15p2b2m2yt2j6rx32uzr4h25vqstifsfdsq/" \
	"ocid1.user.oc1..aaaaaaaat5nvwcna5j6aqzjcaty5eqbb6qt2jvpkanghtgdaqedqw3rynjq/" \
	"20:3b:97:13:55:1c:5b:0d:d3:37:d8:50:4e:c5:3a:34"

#define TV_DATE "Thu, 05 Jan 2014 21:31:40 GMT"

#define TV_GET_URL \
	"https://iaas.us-phoenix-1.oraclecloud.com/20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1" \
	"&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa" \
	"&displayName=TeamXInstances" \
	"&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q"

#define TV_GET_SIGNING_STRING \
	"date: Thu, 05 Jan 2014 21:31:40 GMT\n" \
	"(request-target): get /20160918/instances?availabilityDomain=Pjwf%3A%20PHX-AD-1" \
	"&compartmentId=ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa" \
	"&displayName=TeamXInstances" \
	"&volumeId=ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\n" \
	"host: iaas.us-phoenix-1.oraclecloud.com"

#define TV_GET_SIGNATURE \
	"GBas7grhyrhSKHP6AVIj/h5/Vp8bd/peM79H9Wv8kjoaCivujVXlpbKLjMPeDUhxkFIWtTtLBj3sUzaFj34XE6YZAHc9r2DmE4pMwOAy" \
	"/kiITcZxa1oHPOeRheC0jP2dqbTll8fmTZVwKZOKHYPtrLJIJQHJjNvxFWeHQjMaR7M="

#define TV_GET_AUTHORIZATION \
	"Signature version=\"1\",headers=\"date (request-target) host\",keyId=\"" TV_KEY_ID "\"," \
	"algorithm=\"rsa-sha256\",signature=\"" TV_GET_SIGNATURE "\""

#define TV_POST_URL "https://iaas.us-phoenix-1.oraclecloud.com/20160918/volumeAttachments"

#define TV_POST_BODY \
	"{\n" \
	"    \"compartmentId\": \"ocid1.compartment.oc1..aaaaaaaam3we6vgnherjq5q2idnccdflvjsnog7mlr6rtdb25gilchfeyjxa\",\n" \
	"    \"instanceId\": \"ocid1.instance.oc1.phx.abuw4ljrlsfiqw6vzzxb43vyypt4pkodawglp3wqxjqofakrwvou52gb6s5a\",\n" \
	"    \"volumeId\": \"ocid1.volume.oc1.phx.abyhqljrgvttnlx73nmrwfaux7kcvzfs3s66izvxf2h4lgvyndsdsnoiwr5q\"\n" \
	"}"

#define TV_POST_SHA256 "V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0="

#define TV_POST_SIGNING_STRING \
	"date: Thu, 05 Jan 2014 21:31:40 GMT\n" \
	"(request-target): post /20160918/volumeAttachments\n" \
	"host: iaas.us-phoenix-1.oraclecloud.com\n" \
	"content-length: 316\n" \
	"content-type: application/json\n" \
	"x-content-sha256: V9Z20UJTvkvpJ50flBzKE32+6m2zJjweHpDMX/U4Uy0="

#define TV_POST_SIGNATURE \
	"Mje8vIDPlwIHmD/cTDwRxE7HaAvBg16JnVcsuqaNRim23fFPgQfLoOOxae6WqKb1uPjYEl0qIdazWaBy/Ml8DRhqlocMwoSXv0fbukP8J5N" \
	"80LCmzT/FFBvIvTB91XuXI3hYfP9Zt1l7S6ieVadHUfqBedWH0itrtPJBgKmrWso="

#define TV_POST_AUTHORIZATION \
	"Signature version=\"1\",headers=\"date (request-target) host content-length content-type x-content-sha256\"," \
	"keyId=\"" TV_KEY_ID "\",algorithm=\"rsa-sha256\",signature=\"" TV_POST_SIGNATURE "\""

#endif
