/*
 * err.c — names and messages of the ID_ERR_MAP codes, and the helpers that
 * fill a caller's id_err_t.  No global state.
 */
#include "common/err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const err_names[] = {
#define ID_ERR_NAME_(name, msg) "E" #name,
    ID_ERR_MAP(ID_ERR_NAME_)
#undef ID_ERR_NAME_
};

static const char *const err_msgs[] = {
#define ID_ERR_MSG_(name, msg) msg,
    ID_ERR_MAP(ID_ERR_MSG_)
#undef ID_ERR_MSG_
};

const char *id_err_name(int code)
{
	if (code == 0)
		return "OK";
	if (code > 0 || -code >= ID_ERR_COUNT_)
		return "UNKNOWN";
	return err_names[-code];
}

const char *id_err_str(int code)
{
	if (code > 0 || -code >= ID_ERR_COUNT_)
		return "unknown error";
	return err_msgs[-code];
}

int id_err_set(id_err_t *err, int code, const char *fmt, ...)
{
	if (err == NULL)
		return code;
	err->code = code;
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
	va_end(ap);
	return code;
}

int id_err_wrap(id_err_t *err, const char *fmt, ...)
{
	if (err == NULL)
		return ID_EINVALID;
	char prefix[ID_ERR_MSG_MAX / 2];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(prefix, sizeof(prefix), fmt, ap);
	va_end(ap);
	char old[ID_ERR_MSG_MAX];
	memcpy(old, err->msg, sizeof(old));
	const char *rest = old[0] ? old : id_err_str(err->code);
	/* Explicit lengths: the result is cut at the buffer end on purpose. */
	size_t pl = strnlen(prefix, sizeof(prefix));
	size_t n = pl < sizeof(err->msg) - 1 ? pl : sizeof(err->msg) - 1;
	memcpy(err->msg, prefix, n);
	if (n + 2 < sizeof(err->msg)) {
		memcpy(err->msg + n, ": ", 2);
		n += 2;
	}
	size_t rl = strlen(rest);
	if (rl > sizeof(err->msg) - 1 - n)
		rl = sizeof(err->msg) - 1 - n;
	memcpy(err->msg + n, rest, rl);
	err->msg[n + rl] = '\0';
	return err->code;
}

void id_err_clear(id_err_t *err)
{
	if (err == NULL)
		return;
	err->code = 0;
	err->msg[0] = '\0';
}
