/*
 * buf.h — growable byte buffer used for encoded records and keys.
 * Ownership: the buffer owns data; id_buf_fini() frees it.
 */
#ifndef IDSTREAM_BUF_H
#define IDSTREAM_BUF_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "common/err.h"

typedef struct id_buf {
	unsigned char *data;
	size_t len;
	size_t cap;
} id_buf_t;

#define ID_BUF_INIT                                                                      \
	{                                                                                \
		NULL, 0, 0                                                               \
	}

void id_buf_init(id_buf_t *b);
void id_buf_fini(id_buf_t *b);
void id_buf_reset(id_buf_t *b); /* len = 0, keeps memory */
/* Grows b to hold extra more bytes; id_buf_reserve() when it must.  0 or
 * ID_ENOMEM. */
int id_buf_grow(id_buf_t *b, size_t extra);

/* The calls below run for every string of every record: inline, so the
 * common case (room enough) costs a compare. */
static inline int id_buf_reserve(id_buf_t *b, size_t extra)
{
	return b->cap - b->len >= extra ? 0 : id_buf_grow(b, extra);
}

static inline int id_buf_append(id_buf_t *b, const void *p, size_t n)
{
	if (n == 0)
		return 0;
	if (id_buf_reserve(b, n) != 0)
		return ID_ENOMEM;
	memcpy(b->data + b->len, p, n);
	b->len += n;
	return 0;
}

static inline int id_buf_append_u8(id_buf_t *b, uint8_t v)
{
	if (id_buf_reserve(b, 1) != 0)
		return ID_ENOMEM;
	b->data[b->len++] = v;
	return 0;
}

int id_buf_append_str(id_buf_t *b, const char *s);
int id_buf_append_be32(id_buf_t *b, uint32_t v);
int id_buf_append_be64(id_buf_t *b, uint64_t v);
int id_buf_printf(id_buf_t *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
