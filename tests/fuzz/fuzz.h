/*
 * What every libFuzzer target here shares: the entry point libFuzzer (or
 * replay.c) calls, and CHECK(), which turns a broken invariant into an
 * abort the fuzzer reports with the input that caused it.
 */
#ifndef KEYSVC_TESTS_FUZZ_H
#define KEYSVC_TESTS_FUZZ_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                              \
	do {                                                                     \
		if (!(cond)) {                                                   \
			fprintf(stderr, "%s:%d: invariant broken: %s\n", __FILE__, \
				__LINE__, #cond);                                \
			abort();                                                 \
		}                                                                \
	} while (0)

#endif
