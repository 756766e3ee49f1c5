/*
 * Replays fuzz inputs through a target's LLVMFuzzerTestOneInput without
 * libFuzzer, so the seed corpus and every regression input run in the
 * normal test suite with any compiler (gcc included) and under valgrind or
 * the sanitizers.
 *
 *   fuzz_NAME_replay PATH...
 *
 * Each PATH is a file or a directory whose regular files are replayed in
 * name order (files starting with '.' and README files are skipped). The
 * target aborts on any broken invariant; this driver fails if a PATH is
 * missing or if nothing at all was replayed, so a wrong path cannot pass.
 */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tests/fuzz/fuzz.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	uint8_t *data = NULL;
	long size;

	if (f == NULL || fseek(f, 0, SEEK_END) != 0 || (size = ftell(f)) < 0 ||
	    fseek(f, 0, SEEK_SET) != 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		if (f != NULL)
			fclose(f);
		return -1;
	}
	/* One spare byte so an empty file still gets a valid pointer. */
	if ((data = malloc((size_t)size + 1)) == NULL ||
	    fread(data, 1, (size_t)size, f) != (size_t)size) {
		fprintf(stderr, "replay: %s: cannot read\n", path);
		free(data);
		fclose(f);
		return -1;
	}
	fclose(f);
	fprintf(stderr, "replay: %s (%ld bytes)\n", path, size);
	LLVMFuzzerTestOneInput(data, (size_t)size);
	free(data);
	return 0;
}

static int skip_name(const char *name)
{
	return name[0] == '.' || strncmp(name, "README", 6) == 0;
}

static int by_name(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Replays @path (file or directory); adds the number of inputs to *@count. */
static int replay_path(const char *path, size_t *count)
{
	struct stat st;
	struct dirent *de;
	char **names = NULL, full[4096];
	size_t n = 0, cap = 0;
	DIR *d;
	int r = 0;

	if (stat(path, &st) != 0) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		if (replay_file(path) != 0)
			return -1;
		(*count)++;
		return 0;
	}
	if ((d = opendir(path)) == NULL) {
		fprintf(stderr, "replay: %s: %s\n", path, strerror(errno));
		return -1;
	}
	while ((de = readdir(d)) != NULL) {
		if (skip_name(de->d_name))
			continue;
		if (n == cap) {
			char **grown = realloc(names, (cap = cap ? cap * 2 : 64) * sizeof(*names));

			if (grown == NULL)
				abort();
			names = grown;
		}
		if ((names[n++] = strdup(de->d_name)) == NULL)
			abort();
	}
	closedir(d);
	if (n > 1)
		qsort(names, n, sizeof(*names), by_name);
	for (size_t i = 0; i < n; i++) {
		snprintf(full, sizeof(full), "%s/%s", path, names[i]);
		if (stat(full, &st) == 0 && S_ISREG(st.st_mode)) {
			if (replay_file(full) != 0)
				r = -1;
			else
				(*count)++;
		}
		free(names[i]);
	}
	free(names);
	return r;
}

int main(int argc, char **argv)
{
	size_t count = 0;
	int r = 0;

	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE-OR-DIR...\n", argv[0]);
		return 2;
	}
	if (LLVMFuzzerInitialize != NULL)
		LLVMFuzzerInitialize(&argc, &argv);
	for (int i = 1; i < argc; i++)
		if (replay_path(argv[i], &count) != 0)
			r = 1;
	if (count == 0) {
		fprintf(stderr, "replay: no inputs found\n");
		return 1;
	}
	/* The targets abort on a broken invariant, so reaching here means all held. */
	printf("replay: %zu inputs, all invariants held\n", count);
	return r;
}
