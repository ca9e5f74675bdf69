/*
 * fuzz_webhook.h — the body of every webhook fuzz target (one target per
 * source, so each gets its own corpus and coverage): whatever the bytes, the
 * signature check, the parser and the enrichment of a thin event must
 * return cleanly — no crash, no leak, no undefined behaviour — and a parse
 * either yields events with every required field set or nothing.
 *
 * Input layout: the bytes up to the first '\n' are the signature header
 * value (for webhook_verify), everything is also the body (for
 * webhook_parse and, when a thin event came out, webhook_event_enrich).
 */
#ifndef IDSTREAM_FUZZ_WEBHOOK_H
#define IDSTREAM_FUZZ_WEBHOOK_H

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ingest/webhook.h"

static int fuzz_webhook_one(webhook_source_t src, const uint8_t *data, size_t size)
{
	static const char *const keys[] = {"fuzz-key", "other"};
	const webhook_keys_t k = {keys, 2};
	const uint8_t *nl = memchr(data, '\n', size);
	size_t hl = nl != NULL ? (size_t)(nl - data) : size;
	char *hdr = malloc(hl + 1);
	if (hdr == NULL)
		return 0;
	memcpy(hdr, data, hl);
	hdr[hl] = '\0';

	webhook_headers_t h = {hdr, hdr, hdr};
	webhook_refusal_t why;
	id_err_t err = {0};
	(void)webhook_verify(src, &h, data, size, &k, 1700000000, 300, &why, &err);

	int64_t ms;
	(void)webhook_time_parse(hdr, &ms);

	webhook_delivery_t d;
	webhook_delivery_init(&d);
	if (webhook_parse(src, data, size, hdr, 1700000000000LL, &d, &why, &err) == 0) {
		for (size_t i = 0; i < d.nevents; i++) {
			const employee_event_t *ev = &d.events[i].ev;
			if (ev->event_id == NULL || ev->employee_id == NULL ||
			    ev->source == NULL || ev->source_event_id == NULL ||
			    ev->employee_id[0] == '\0' || ev->type >= EV_TYPE_COUNT)
				abort();
			if (d.events[i].thin)
				(void)webhook_event_enrich(src, &d.events[i], data, size,
				                           &err);
		}
		if (d.nevents > 0 && d.delivery_id == NULL)
			abort();
	} else if (d.nevents != 0) {
		abort(); /* a refused body must leave nothing behind */
	}
	webhook_delivery_fini(&d);
	free(hdr);
	return 0;
}

#endif
