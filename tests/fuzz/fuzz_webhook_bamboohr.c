/*
 * fuzz_webhook_bamboohr.c — libFuzzer target: the bamboohr webhook signature check and
 * parser on arbitrary bytes (see fuzz_webhook.h).  Built and run by `make fuzz`.
 */
#include "tests/fuzz/fuzz_webhook.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	return fuzz_webhook_one(WEBHOOK_BAMBOOHR, data, size);
}
