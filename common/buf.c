/*
 * buf.c — growable byte buffer (see buf.h).  Growth doubles the capacity.
 */
#include "common/buf.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/err.h"

void id_buf_init(id_buf_t *b)
{
	b->data = NULL;
	b->len = 0;
	b->cap = 0;
}

void id_buf_fini(id_buf_t *b)
{
	if (b == NULL)
		return;
	free(b->data);
	id_buf_init(b);
}

void id_buf_reset(id_buf_t *b)
{
	b->len = 0;
}

int id_buf_grow(id_buf_t *b, size_t extra)
{
	if (b->len + extra <= b->cap)
		return 0;
	size_t ncap = b->cap ? b->cap : 64;
	while (ncap < b->len + extra)
		ncap *= 2;
	unsigned char *n = realloc(b->data, ncap);
	if (n == NULL)
		return ID_ENOMEM;
	b->data = n;
	b->cap = ncap;
	return 0;
}

int id_buf_append_str(id_buf_t *b, const char *s)
{
	return id_buf_append(b, s, strlen(s));
}

int id_buf_append_be32(id_buf_t *b, uint32_t v)
{
	unsigned char p[4] = {(unsigned char)(v >> 24), (unsigned char)(v >> 16),
	                      (unsigned char)(v >> 8), (unsigned char)v};
	return id_buf_append(b, p, 4);
}

int id_buf_append_be64(id_buf_t *b, uint64_t v)
{
	unsigned char p[8];
	for (int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (56 - 8 * i));
	return id_buf_append(b, p, 8);
}

int id_buf_printf(id_buf_t *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return ID_EINVALID;
	if (id_buf_reserve(b, (size_t)n + 1) != 0)
		return ID_ENOMEM;
	va_start(ap, fmt);
	vsnprintf((char *)b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
	return 0;
}
