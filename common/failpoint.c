/*
 * failpoint.c — see failpoint.h.  Reads the environment on each call so
 * tests can set it per process; no global state.
 */
#include "common/failpoint.h"

#include <signal.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"

void id_failpoint_crash(const char *name)
{
	const char *list = getenv("IDSTREAM_FAILPOINTS");
	if (list == NULL || *list == '\0')
		return;
	size_t n = strlen(name);
	for (const char *p = list; (p = strstr(p, name)) != NULL; p += n) {
		bool starts = p == list || p[-1] == ',';
		bool ends = p[n] == '\0' || p[n] == ',';
		if (starts && ends) {
			id_log_warn("failpoint", "crashing at failpoint %s", name);
			raise(SIGKILL);
		}
	}
}
