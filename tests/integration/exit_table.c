/* Prints proto/exitcode's table as every --help ends with it: test_family.sh's reference. */
#include <stdio.h>

#include "proto/exitcode.h"

int main(void)
{
	ks_exit_print_table(stdout);
	return fflush(stdout) == 0 ? 0 : 1;
}
